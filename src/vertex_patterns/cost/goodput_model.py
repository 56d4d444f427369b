"""The goodput model of a run on preemptible capacity: expected wall time and lost time.

A run needs `work_s` seconds of computation. It saves a checkpoint after every `interval_s`
seconds of work, each save blocking for `checkpoint_s`. Preemptions arrive as a Poisson
process of `rate_per_s`; each costs the work since the last checkpoint plus `restart_s`
(replacement VM, program start, restore). Daly's exact model for exponential failures
(J. T. Daly, "A higher order estimate of the optimum checkpoint interval for restart dumps",
FGCS 22, 2006, eq. 5, failures during restart neglected) gives the expected wall time

    T = work_s / interval_s * (1 / rate + restart_s) * (exp(rate * (interval_s + checkpoint_s)) - 1)

and T -> work_s * (1 + checkpoint_s / interval_s) as the rate goes to 0. Young's interval
sqrt(2 * checkpoint_s * MTBF) minimises the first-order expansion of T.
"""

from __future__ import annotations

import math

from vertex_patterns.errors import ConfigError


def young_daly_interval(checkpoint_s: float, mtbf_s: float) -> float:
    """Young/Daly's optimal checkpoint interval, sqrt(2 * C * MTBF), in seconds.

    Args:
        checkpoint_s: Blocking cost C of one checkpoint save, seconds (> 0).
        mtbf_s: Mean time between preemptions, seconds (> 0).

    Raises:
        ConfigError: A non-positive or non-finite argument.
    """
    _positive(checkpoint_s, "checkpoint seconds")
    _positive(mtbf_s, "MTBF")
    return math.sqrt(2.0 * checkpoint_s * mtbf_s)


def expected_wall_s(work_s: float, interval_s: float, checkpoint_s: float, restart_s: float,
                    rate_per_s: float) -> float:
    """Expected wall time of a run (the module docstring's formula), seconds.

    Raises:
        ConfigError: A negative input, or a non-positive interval.
    """
    _positive(interval_s, "checkpoint interval")
    for value, what in ((work_s, "work"), (checkpoint_s, "checkpoint seconds"),
                        (restart_s, "restart seconds"), (rate_per_s, "preemption rate")):
        _non_negative(value, what)
    segment = interval_s + checkpoint_s
    if rate_per_s == 0:
        return work_s * segment / interval_s
    exponent = rate_per_s * segment
    if exponent > 700:  # exp overflows: the run never finishes a segment
        return math.inf
    return work_s / interval_s * (1.0 / rate_per_s + restart_s) * math.expm1(exponent)


def expected_lost_s(work_s: float, interval_s: float, checkpoint_s: float, restart_s: float,
                    rate_per_s: float) -> float:
    """Expected wall time beyond the work itself: checkpoint blocking, redone work, restarts."""
    return expected_wall_s(work_s, interval_s, checkpoint_s, restart_s, rate_per_s) - work_s


def _positive(value: float, what: str) -> None:
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{what} must be a positive number, got {value}")


def _non_negative(value: float, what: str) -> None:
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{what} must be a non-negative number, got {value}")
