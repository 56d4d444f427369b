"""Which committed checkpoints to keep: small named policies behind one Protocol.

The manager keeps the union of what every policy keeps, and always keeps the newest committed
checkpoint and any checkpoint not yet present on every replica (orbax's PreservationPolicy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from vertex_patterns.checkpoint.layout import Manifest


class RetentionPolicy(Protocol):
    """Chooses steps to keep among committed checkpoints."""

    def keep(self, manifests: Sequence[Manifest]) -> set[int]:
        """The steps this policy keeps; `manifests` is sorted by step, oldest first."""
        ...


@dataclass(frozen=True)
class KeepLast:
    """Keeps the newest `n` checkpoints."""

    n: int

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"keep_last must be >= 1, got {self.n}")

    def keep(self, manifests: Sequence[Manifest]) -> set[int]:
        return {m.step for m in manifests[-self.n:]}


@dataclass(frozen=True)
class KeepEvery:
    """Keeps every checkpoint whose step is a multiple of `steps`, for good."""

    steps: int

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"keep_every_steps must be >= 1, got {self.steps}")

    def keep(self, manifests: Sequence[Manifest]) -> set[int]:
        return {m.step for m in manifests if m.step % self.steps == 0}


@dataclass(frozen=True)
class KeepBest:
    """Keeps the `n` best checkpoints by a metric (`mode` "min" or "max").

    Checkpoints that did not record the metric are not ranked (other policies decide).
    """

    n: int
    metric: str
    mode: str = "min"

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"keep_best must be >= 1, got {self.n}")
        if self.mode not in ("min", "max"):
            raise ValueError(f"best mode must be 'min' or 'max', got {self.mode!r}")
        if not self.metric:
            raise ValueError("keep_best needs the name of a metric")

    def keep(self, manifests: Sequence[Manifest]) -> set[int]:
        ranked = [m for m in manifests if self.metric in m.metrics]
        sign = 1.0 if self.mode == "min" else -1.0
        ranked.sort(key=lambda m: (sign * m.metrics[self.metric], -m.step))
        return {m.step for m in ranked[: self.n]}


@dataclass(frozen=True)
class KeepAll:
    """Keeps everything (the default when no retention option is given)."""

    def keep(self, manifests: Sequence[Manifest]) -> set[int]:
        return {m.step for m in manifests}


def build_policies(
    *,
    keep_last: int | None = None,
    keep_every_steps: int | None = None,
    keep_best: int | None = None,
    best_metric: str | None = None,
    best_mode: str = "min",
    extra: Sequence[RetentionPolicy] = (),
) -> list[RetentionPolicy]:
    """Policies from the manager's keyword options plus `extra`; KeepAll when none is given."""
    policies: list[RetentionPolicy] = []
    if keep_last is not None:
        policies.append(KeepLast(keep_last))
    if keep_every_steps is not None:
        policies.append(KeepEvery(keep_every_steps))
    if keep_best is not None:
        policies.append(KeepBest(keep_best, best_metric or "", best_mode))
    elif best_metric is not None:
        raise ValueError("best_metric is set but keep_best is not: give keep_best=N")
    # KeepAll only when nothing else is given: alongside a policy it would keep everything.
    return [*policies, *extra] or [KeepAll()]


def steps_to_delete(
    manifests: Sequence[Manifest],
    policies: Sequence[RetentionPolicy],
    *,
    protected: set[int] = frozenset(),  # type: ignore[assignment]
) -> list[int]:
    """Committed steps no policy keeps, minus the newest and the `protected` ones."""
    ordered = sorted(manifests, key=lambda m: m.step)
    if not ordered:
        return []
    keep = set(protected) | {ordered[-1].step}
    for p in policies:
        keep |= p.keep(ordered)
    return [m.step for m in ordered if m.step not in keep]
