"""Thresholds of the health rules, and the recovery-point objectives (RPO) of the DR tiers.

Defaults are chosen so that one noisy point never acts: every rule needs a count of
consecutive points, or a duration, before it fires (see each field).
"""

from __future__ import annotations

from dataclasses import dataclass

from vertex_patterns.errors import ConfigError

RPO_TIERS: dict[str, float] = {
    "research": 24 * 3600.0,
    "production": 3600.0,
    "critical": 15 * 60.0,
}
"""Tier -> the most training time a disaster may lose (seconds), after the DR table: research
24 h, production 1 h, critical 15 min."""


def rpo_seconds(tier: str) -> float:
    """The RPO of `tier`.

    Raises:
        ConfigError: An unknown tier.
    """
    try:
        return RPO_TIERS[tier]
    except KeyError:
        raise ConfigError(f"unknown RPO tier {tier!r}; use one of "
                          f"{', '.join(RPO_TIERS)}") from None


@dataclass(kw_only=True, frozen=True)
class HealthConfig:
    """Rule thresholds. Every count is of consecutive step records."""

    nonfinite_loss_count: int = 1
    """Non-finite losses in a row before `non_finite` fires. One is enough: the optimizer step
    that followed it has already written NaN into the weights, so waiting gains nothing."""
    nonfinite_grad_count: int = 3
    """Non-finite gradient norms in a row before `non_finite` fires. AMP's GradScaler skips a
    step with an overflowing gradient by design while it calibrates, so one is normal."""
    spike_factor: float = 3.0
    """A loss above this many times the running median of the window is a spike. Megatron-LM
    uses 10x the largest loss seen, which misses spikes once the loss has come down; the
    median of recent losses follows training and ignores single outliers."""
    spike_window: int = 64
    """Recent non-spike losses whose median is the reference."""
    spike_min_history: int = 16
    """Losses needed in the window before spikes are judged (early training moves fast)."""
    spike_min_count: int = 2
    """Spiking steps in a row before `loss_spike` fires: a single high loss from one hard
    batch does not act, a spike that persists does (PaLM's spikes lasted many steps)."""
    divergence_rise: float = 0.5
    """`loss_divergence` when the window's median loss is this fraction above the lowest median
    seen so far ..."""
    divergence_min_steps: int = 100
    """... for this many steps in a row: a sustained rise, never a single point."""
    stall_floor_s: float = 300.0
    """`stalled` never fires before this long without a new step (the metrics stream is
    flushed every 10 s, a checkpoint or evaluation may take minutes)."""
    stall_factor: float = 20.0
    """... and not before this many times the run's own median step interval."""
    rpo_s: float = RPO_TIERS["production"]
    """Checkpoint staleness: `checkpoint_stale` is critical past this age, ..."""
    rpo_warning_fraction: float = 0.75
    """... a warning past this fraction of it."""
    utilization_min_pct: float = 50.0
    """`low_utilization` (warning) when accelerator utilisation stays below this ..."""
    utilization_min_steps: int = 50
    """... for this many step records in a row."""
    throughput_fraction: float = 0.7
    """`throughput_regression` (warning) when samples/s stays below this fraction of the run's
    baseline (the median of its first `throughput_window` steps after warm-up) ..."""
    throughput_warmup_steps: int = 10
    """Step records skipped before the baseline (compilation, cold caches)."""
    throughput_window: int = 50
    """Step records in the baseline."""
    throughput_min_steps: int = 50
    """... for this many step records in a row."""
    straggler_factor: float = 1.5
    """`straggler` (warning) when one rank's median step time is this many times the median of
    the other ranks' medians, ..."""
    straggler_min_steps: int = 20
    """... over the last this many records that carry per-rank step times."""

    def __post_init__(self) -> None:
        counts = {"nonfinite_loss_count": self.nonfinite_loss_count,
                  "nonfinite_grad_count": self.nonfinite_grad_count,
                  "spike_window": self.spike_window,
                  "spike_min_history": self.spike_min_history,
                  "spike_min_count": self.spike_min_count,
                  "divergence_min_steps": self.divergence_min_steps,
                  "utilization_min_steps": self.utilization_min_steps,
                  "throughput_window": self.throughput_window,
                  "throughput_min_steps": self.throughput_min_steps,
                  "straggler_min_steps": self.straggler_min_steps}
        for name, value in counts.items():
            if value < 1:
                raise ConfigError(f"health: {name} must be >= 1, got {value}")
        if self.throughput_warmup_steps < 0:
            raise ConfigError("health: throughput_warmup_steps must be >= 0")
        if self.spike_min_history > self.spike_window:
            raise ConfigError(f"health: spike_min_history ({self.spike_min_history}) must not "
                              f"exceed spike_window ({self.spike_window})")
        factors: dict[str, float] = {"spike_factor": self.spike_factor,
                                     "straggler_factor": self.straggler_factor}
        for name, factor in factors.items():
            if not factor > 1:
                raise ConfigError(f"health: {name} must be > 1, got {factor}")
        positive: dict[str, float] = {"divergence_rise": self.divergence_rise,
                                      "stall_floor_s": self.stall_floor_s,
                                      "stall_factor": self.stall_factor, "rpo_s": self.rpo_s}
        for name, amount in positive.items():
            if not amount > 0:
                raise ConfigError(f"health: {name} must be > 0, got {amount}")
        if not 0 < self.rpo_warning_fraction <= 1:
            raise ConfigError("health: rpo_warning_fraction must be in (0, 1]")
        if not 0 <= self.utilization_min_pct <= 100:
            raise ConfigError("health: utilization_min_pct must be in [0, 100]")
        if not 0 < self.throughput_fraction < 1:
            raise ConfigError("health: throughput_fraction must be in (0, 1)")
