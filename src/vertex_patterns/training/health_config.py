"""The trainer's health options (`--no-health`, `--max-rewinds`, `--hang-timeout-seconds`, the
loss rules' thresholds), kept apart from the hook so `config.py` can hold them without importing
the loop's machinery."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from vertex_patterns.errors import ConfigError
from vertex_patterns.health.config import HealthConfig


@dataclass(kw_only=True, frozen=True)
class TrainerHealth:
    """Health checking inside the trainer: on by default."""

    enabled: bool = True
    """Off with `--no-health`: no loss rules, no rewinds, no hang watchdog."""
    max_rewinds: int = 3
    """Rewinds allowed per attempt; one more loss incident after that stops the run (exit 3)."""
    hang_timeout_seconds: float | None = None
    """No step progress for this long is a hang: stacks dumped, exit 4. None learns it:
    max(`hang_floor_seconds`, `hang_factor` x the median step time), armed after 5 steps."""
    hang_floor_seconds: float = 600.0
    """The learned hang timeout never goes below this: a checkpoint save or an evaluation
    between two steps may take minutes."""
    hang_factor: float = 50.0
    """The learned hang timeout is at least this many median step times."""
    spike_factor: float = 3.0
    """A loss above this many times the running median is a spike (see `HealthConfig`)."""
    spike_min_count: int = 2
    """Spiking steps in a row before a rewind."""
    divergence_rise: float = 0.5
    """Sustained rise of the median loss over its best that counts as divergence (exit 3)."""
    divergence_min_steps: int = 100
    """... held for this many steps."""

    def __post_init__(self) -> None:
        if self.max_rewinds < 0:
            raise ConfigError(f"--max-rewinds must be >= 0, got {self.max_rewinds}")
        if self.hang_timeout_seconds is not None and self.hang_timeout_seconds <= 0:
            raise ConfigError("--hang-timeout-seconds must be > 0, got "
                              f"{self.hang_timeout_seconds}")
        if self.hang_floor_seconds <= 0 or self.hang_factor <= 0:
            raise ConfigError("hang floor and factor must be > 0")
        self.rules()  # the loss thresholds' own checks

    def rules(self) -> HealthConfig:
        """The loss rules' thresholds.

        Raises:
            ConfigError: An impossible threshold.
        """
        return HealthConfig(spike_factor=self.spike_factor,
                            spike_min_count=self.spike_min_count,
                            divergence_rise=self.divergence_rise,
                            divergence_min_steps=self.divergence_min_steps)


def add_health_arguments(p: argparse.ArgumentParser) -> None:
    """The trainer's health flags."""
    g = p.add_argument_group("health checking")
    g.add_argument("--no-health", action="store_true",
                   help="no loss rules, rewinds or hang watchdog")
    g.add_argument("--max-rewinds", type=int, default=3,
                   help="rewinds after a loss spike or non-finite loss before stopping with "
                        "exit 3 (3)")
    g.add_argument("--hang-timeout-seconds", type=float, metavar="S",
                   help="no step progress for S seconds: dump stacks, exit 4 (default: "
                        "learned from step times, at least 600)")
    g.add_argument("--spike-factor", type=float, default=3.0,
                   help="loss above this many times its running median is a spike (3)")
    g.add_argument("--divergence-min-steps", type=int, default=100,
                   help="steps of sustained rise that count as divergence (100)")


def health_from_args(args: argparse.Namespace) -> TrainerHealth:
    """The TrainerHealth the flags describe (raises ConfigError on bad values)."""
    return TrainerHealth(enabled=not args.no_health, max_rewinds=args.max_rewinds,
                         hang_timeout_seconds=args.hang_timeout_seconds,
                         spike_factor=args.spike_factor,
                         divergence_min_steps=args.divergence_min_steps)
