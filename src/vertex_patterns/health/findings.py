"""What a health check found: findings with a severity, and the verdict they add up to."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from vertex_patterns.formatting import format_table


class Severity(str, Enum):
    """How bad a finding is; the verdict is the worst unresolved one."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 info, 1 warning, 2 critical."""
        return ("info", "warning", "critical").index(self.value)


class Verdict(str, Enum):
    """The run's health: `healthy` (nothing or info only), `warning`, `critical`."""

    HEALTHY = "healthy"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class Finding:
    """One rule that fired.

    Attributes:
        rule: The rule's name (`non_finite`, `loss_spike`, ...).
        severity: How bad it is.
        step: The training step it refers to (the last step of the evidence), None when the
            rule is not about a step (a stale checkpoint with no steps).
        evidence: What was seen: steps, values, thresholds (JSON-safe).
        action: What was done about it (`none` when only reported).
    """

    rule: str
    severity: Severity
    step: int | None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    action: str = "none"

    def to_dict(self) -> dict[str, Any]:
        """`{"rule", "severity", "step", "evidence", "action"}`."""
        return {"rule": self.rule, "severity": self.severity.value, "step": self.step,
                "evidence": dict(self.evidence), "action": self.action}

    def summary(self) -> str:
        """`loss_spike at step 120: loss=9.1 median=2.3 ...` (one line)."""
        where = "" if self.step is None else f" at step {self.step}"
        facts = " ".join(f"{k}={_short(v)}" for k, v in self.evidence.items())
        return f"{self.rule}{where}: {facts}".rstrip(": ")


def verdict_of(findings: Iterable[Finding]) -> Verdict:
    """The worst severity among `findings` (info counts as healthy)."""
    worst = max((f.severity.rank for f in findings), default=0)
    return (Verdict.HEALTHY, Verdict.WARNING, Verdict.CRITICAL)[worst]


@dataclass(frozen=True)
class HealthReport:
    """The result of checking one run.

    Attributes:
        run_dir: The run directory checked.
        findings: Every finding, in the order the rules produced them.
        steps: Step records read from the metrics stream.
        last_step: The newest step seen (None without any).
        completed: The run wrote its final model.
    """

    run_dir: str
    findings: tuple[Finding, ...]
    steps: int = 0
    last_step: int | None = None
    completed: bool = False

    @property
    def verdict(self) -> Verdict:
        """The worst severity of the findings."""
        return verdict_of(self.findings)

    def to_dict(self) -> dict[str, Any]:
        """`{"verdict", "findings": [{"rule", "severity", "step", "evidence", "action"}]}`."""
        return {"verdict": self.verdict.value,
                "findings": [f.to_dict() for f in self.findings]}

    def to_json(self) -> str:
        """`to_dict()` as indented JSON with a final newline."""
        return json.dumps(self.to_dict(), indent=2, default=str) + "\n"

    def metrics(self) -> dict[str, float]:
        """Counts for `dsl.Metrics`: findings per severity, steps seen, the verdict as 0/1/2."""
        counts = {s.value: 0 for s in Severity}
        for f in self.findings:
            counts[f.severity.value] += 1
        return {"verdict_level": float(("healthy", "warning", "critical").index(
                    self.verdict.value)),
                "critical_findings": float(counts["critical"]),
                "warning_findings": float(counts["warning"]),
                "info_findings": float(counts["info"]),
                "steps_seen": float(self.steps)}

    def to_table(self) -> str:
        """The verdict line and one row per finding."""
        state = "completed" if self.completed else "running or stopped"
        last = "-" if self.last_step is None else str(self.last_step)
        lines = [f"{self.run_dir}: {self.verdict.value} ({len(self.findings)} finding(s); "
                 f"{self.steps} step record(s), last step {last}, {state})"]
        if self.findings:
            rows = [[f.severity.value, f.rule, "-" if f.step is None else str(f.step),
                     f.action, " ".join(f"{k}={_short(v)}" for k, v in f.evidence.items())]
                    for f in self.findings]
            lines += format_table(["severity", "rule", "step", "action", "evidence"], rows,
                                  left={0, 1, 3, 4})
        return "\n".join(lines) + "\n"

    def to_markdown(self) -> str:
        """The report as Markdown (for `dsl.Markdown`)."""
        lines = [f"# Health of `{self.run_dir}`: **{self.verdict.value}**", "",
                 f"{self.steps} step record(s), last step "
                 f"{'-' if self.last_step is None else self.last_step}, "
                 f"{'completed' if self.completed else 'not completed'}.", ""]
        if not self.findings:
            return "\n".join([*lines, "No findings."]) + "\n"
        lines += ["| severity | rule | step | action | evidence |", "|---|---|---|---|---|"]
        for f in self.findings:
            facts = ", ".join(f"{k}={_short(v)}" for k, v in f.evidence.items())
            lines.append(f"| {f.severity.value} | `{f.rule}` | "
                         f"{'-' if f.step is None else f.step} | {f.action} | {facts} |")
        return "\n".join(lines) + "\n"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
