"""Loss rules, fed one step at a time: the same code runs inside the trainer and over a stream.

    monitor = LossMonitor(HealthConfig())
    for step, loss, grad_norm in ...:
        for finding in monitor.observe(step, loss, grad_norm):
            ...

Rules (all critical):
- `non_finite`: a NaN/inf loss (`nonfinite_loss_count` in a row) or gradient norm
  (`nonfinite_grad_count` in a row).
- `loss_spike`: `spike_min_count` losses in a row above `spike_factor` x the median of the
  last `spike_window` non-spike losses.
- `loss_divergence`: that median stays `divergence_rise` above the lowest median seen for
  `divergence_min_steps` steps. Spikes never enter the window, so one spike cannot look like
  a rise, and a slow drift (no single point far off) is caught here, not as a spike.

Each rule fires once per episode (when its count is reached) and re-arms when the condition
clears. The cost per step is a bisect into a sorted window of `spike_window` floats.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

from vertex_patterns.health.config import HealthConfig
from vertex_patterns.health.findings import Finding, Severity

LOSS_RULES = ("non_finite", "loss_spike", "loss_divergence")


class LossMonitor:
    """Incremental loss rules.

    Args:
        config: The thresholds.
    """

    def __init__(self, config: HealthConfig) -> None:
        self.config = config
        self._window: deque[float] = deque()
        self._sorted: list[float] = []
        self._bad_loss = 0
        self._bad_grad = 0
        self._spikes: list[tuple[int, float]] = []
        self._best_median = math.inf
        self._rising = 0
        self._rise_start: int | None = None

    @property
    def median(self) -> float | None:
        """The median of the reference window (None while it is empty)."""
        values, n = self._sorted, len(self._sorted)
        if n == 0:
            return None
        mid = n // 2
        return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2

    def reset_episode(self) -> None:
        """Forgets counts in progress (after a rewind): the window of good losses is kept."""
        self._bad_loss = self._bad_grad = 0
        self._spikes = []
        self._rising = 0
        self._rise_start = None

    def observe(self, step: int, loss: float, grad_norm: float | None = None) -> list[Finding]:
        """Feeds one step; returns the findings whose count or duration it completed."""
        c = self.config
        found: list[Finding] = []
        if grad_norm is not None and not math.isfinite(grad_norm):
            self._bad_grad += 1
            if self._bad_grad == c.nonfinite_grad_count:
                found.append(Finding("non_finite", Severity.CRITICAL, step,
                                     {"value": "grad_norm", "grad_norm": str(grad_norm),
                                      "count": self._bad_grad}))
        else:
            self._bad_grad = 0
        if not math.isfinite(loss):
            self._bad_loss += 1
            if self._bad_loss == c.nonfinite_loss_count:
                found.append(Finding("non_finite", Severity.CRITICAL, step,
                                     {"value": "loss", "loss": str(loss),
                                      "count": self._bad_loss,
                                      "first_step": step - self._bad_loss + 1}))
            return found
        self._bad_loss = 0
        median = self.median
        if (median is not None and len(self._sorted) >= c.spike_min_history
                and loss > c.spike_factor * median):
            self._spikes.append((step, loss))
            if len(self._spikes) == c.spike_min_count:
                found.append(Finding("loss_spike", Severity.CRITICAL, step, {
                    "first_step": self._spikes[0][0], "count": len(self._spikes),
                    "loss": loss, "max_loss": max(v for _, v in self._spikes),
                    "median": median, "factor": c.spike_factor}))
            return found
        self._spikes = []
        self._add(loss)
        found += self._divergence(step)
        return found

    def _add(self, loss: float) -> None:
        self._window.append(loss)
        bisect.insort(self._sorted, loss)
        if len(self._window) > self.config.spike_window:
            old = self._window.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    def _divergence(self, step: int) -> list[Finding]:
        c = self.config
        median = self.median
        if median is None or len(self._window) < c.spike_window:
            return []
        if median > self._best_median * (1 + c.divergence_rise):
            self._rising += 1
            if self._rise_start is None:
                self._rise_start = step
            if self._rising == c.divergence_min_steps:
                return [Finding("loss_divergence", Severity.CRITICAL, step, {
                    "first_step": self._rise_start, "steps": self._rising,
                    "median": median, "best_median": self._best_median,
                    "rise": c.divergence_rise})]
            return []
        self._best_median = min(self._best_median, median)
        self._rising = 0
        self._rise_start = None
        return []
