"""What a training run is asked to do, and where its outputs go.

The run directory follows Vertex AI's base output directory (`baseOutputDirectory`):

    <run-dir>/checkpoints/   CheckpointManager's directory   (AIP_CHECKPOINT_DIR wins)
    <run-dir>/model/         final model: safetensors + JSON  (AIP_MODEL_DIR wins)
    <run-dir>/logs/          TensorBoard event files          (AIP_TENSORBOARD_LOG_DIR wins)
    <run-dir>/metrics/       the metrics stream, JSON lines in chunks
    <run-dir>/goodput/       one ledger file per attempt; <run-dir>/goodput.json sums them

Without `--run-dir`, the run dir is what Vertex AI implies: it sets the three `AIP_*` variables
from the job's base output directory (`<base>/model/`, `<base>/checkpoints/`, `<base>/logs/`),
and their common parent is that base (`run_dir_from_environment`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from vertex_patterns.errors import ConfigError
from vertex_patterns.storage.uri import parse_uri
from vertex_patterns.training.health_config import TrainerHealth

# Exit codes of `vertex-patterns train` (documented in the README).
EXIT_OK = 0
"""The run reached --max-steps and wrote its final model."""
EXIT_ERROR = 1
"""Training failed (an exception in user code, storage errors that outlasted retries)."""
EXIT_BAD_INPUT = 2
"""Bad flags or a run directory that belongs to another run; nothing was written."""
EXIT_UNHEALTHY = 3
"""A health incident rewinding could not fix (divergence, or a loss spike / non-finite loss
after --max-rewinds rewinds): checkpoint saved unless the weights are non-finite, incident
logged. Do not retry as is."""
EXIT_HUNG = 4
"""No step progress for the hang timeout: every thread's stack is in the log. Retry in place."""
EXIT_PREEMPTED = 75
"""Stopped by a preemption notice after committing a checkpoint at the current step: restart
the same command to resume (75 is sysexits' EX_TEMPFAIL, "try again later")."""
EXIT_PREEMPTED_UNSAVED = 76
"""Stopped by a preemption notice without a new checkpoint (a second signal, or the grace
deadline passed): the previous committed checkpoint is intact and a restart resumes from it."""


AIP_DIRECTORIES = ("AIP_MODEL_DIR", "AIP_CHECKPOINT_DIR", "AIP_TENSORBOARD_LOG_DIR")
"""The output directories Vertex AI sets for a custom job with a base output directory."""


def run_dir_from_environment(env: Mapping[str, str] | None = None) -> str:
    """The run directory Vertex AI implies: the common parent of the `AIP_*` directories set.

    Args:
        env: The environment (default `os.environ`).

    Returns:
        `gs://bucket/base` or an absolute local path.

    Raises:
        ConfigError: None of them is set, or they share no parent (another bucket, or
            gs:// mixed with local paths): give `--run-dir`.
    """
    env = os.environ if env is None else env
    given = {var: env[var] for var in AIP_DIRECTORIES if env.get(var)}
    if not given:
        raise ConfigError("--run-dir is required outside Vertex AI (there, "
                          f"{', '.join(AIP_DIRECTORIES)} give the job's base output directory)")
    locations = [parse_uri(uri) for uri in given.values()]
    first = locations[0]
    if any((loc.scheme, loc.bucket) != (first.scheme, first.bucket) for loc in locations):
        raise ConfigError(f"{', '.join(f'{k}={v}' for k, v in given.items())} share no parent "
                          "directory: give --run-dir")
    if first.is_gcs:
        parents = [loc.path.strip("/").split("/")[:-1] for loc in locations]
        common: list[str] = []
        for parts in zip(*parents, strict=False):
            if len(set(parts)) != 1:
                break
            common.append(parts[0])
        return str(parse_uri(f"gs://{first.bucket}/{'/'.join(common)}")).rstrip("/")
    return os.path.commonpath([os.path.dirname(loc.path.rstrip(os.sep)) or loc.path
                               for loc in locations])


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


@dataclass(kw_only=True, frozen=True)
class RunPaths:
    """Where one run reads and writes; see the module docstring."""

    run_dir: str
    """The run's base output directory (local path or gs://)."""
    checkpoints: str
    """Checkpoint directory."""
    model: str
    """Final model directory."""
    logs: str
    """TensorBoard log directory."""
    metrics: str
    """Metrics stream directory."""

    @classmethod
    def resolve(cls, run_dir: str, env: Mapping[str, str] | None = None) -> RunPaths:
        """Paths below `run_dir`, with Vertex AI's `AIP_*` directories winning when set.

        Raises:
            ConfigError: A malformed URI.
        """
        env = os.environ if env is None else env
        base = str(parse_uri(run_dir)).rstrip("/")

        def pick(var: str, default: str) -> str:
            value = env.get(var)
            return str(parse_uri(value)).rstrip("/") if value else default

        return cls(run_dir=base,
                   checkpoints=pick("AIP_CHECKPOINT_DIR", _join(base, "checkpoints")),
                   model=pick("AIP_MODEL_DIR", _join(base, "model")),
                   logs=pick("AIP_TENSORBOARD_LOG_DIR", _join(base, "logs")),
                   metrics=_join(base, "metrics"))


@dataclass(kw_only=True, frozen=True)
class TrainConfig:
    """One `vertex-patterns train` invocation."""

    workload: str
    """Built-in workload name (`digits`, `tiny-lm`) or `package.module:function`."""
    run_dir: str
    """Base output directory (see RunPaths)."""
    max_steps: int
    """Train until this many optimizer steps are done, across all attempts."""
    seed: int = 0
    """Seeds the model, the data order and every RNG."""
    checkpoint_every_steps: int | None = None
    """Save every K steps."""
    checkpoint_every_seconds: float | None = None
    """Save when this many seconds have passed since the last save (default 300 when neither
    interval is given)."""
    checkpoint_auto: bool = False
    """`--checkpoint-every-seconds auto`: Young/Daly's interval from the measured save cost."""
    mtbf_hours: float | None = None
    """With `checkpoint_auto`: the mean time between preemptions (None: estimated from the
    run's earlier attempts)."""
    deterministic: bool = False
    """torch deterministic algorithms: a resumed run matches an uninterrupted one bit for bit."""
    replicas: tuple[str, ...] = ()
    """Backup checkpoint directories in other regions (fan-out after each commit)."""
    keep_last: int = 3
    """Checkpoints kept (the newest is always kept)."""
    grace_seconds: float = 30.0
    """Time between the preemption notice and SIGKILL (Spot VMs: 30 s)."""
    grace_margin_seconds: float = 5.0
    """Part of the grace period kept free: the emergency save must finish before
    grace - margin."""
    metadata_url: str | None = None
    """Base URL of the GCE metadata server to poll for `instance/preempted` (None: off).
    The real one is http://metadata.google.internal."""
    metadata_poll_seconds: float = 1.0
    """How often the metadata watcher polls."""
    eval_every_steps: int = 0
    """Held-out evaluation every N steps (0: only at the end)."""
    log_every_steps: int = 10
    """A progress log line every N steps (the metrics stream records every step)."""
    record_samples: bool = False
    """Write each step's sample ids into the metrics stream (for auditing resume)."""
    wandb_project: str | None = None
    """Mirror metrics to this Weights & Biases project (off by default; never fatal)."""
    tensorboard_flush_seconds: float = 30.0
    """Flush (and for gs://, upload) the TensorBoard event files this often: the most a hard
    kill can lose from them."""
    extra: dict[str, str] = field(default_factory=dict)
    """Reserved for workload options."""
    publish_metrics: str | None = None
    """Publish training metrics and goodput to this project's Cloud Monitoring (off by
    default; a no-op without credentials; never fatal)."""
    health: TrainerHealth = field(default_factory=TrainerHealth)
    """Health checking: loss rules, rewind-and-skip, stop (exit 3), hang watchdog (exit 4)."""

    def __post_init__(self) -> None:
        if self.max_steps <= 0:
            raise ConfigError(f"--max-steps must be > 0, got {self.max_steps}")
        if self.checkpoint_every_steps is not None and self.checkpoint_every_steps <= 0:
            raise ConfigError("--checkpoint-every-steps must be > 0, got "
                              f"{self.checkpoint_every_steps}")
        if self.checkpoint_every_seconds is not None and self.checkpoint_every_seconds <= 0:
            raise ConfigError("--checkpoint-every-seconds must be > 0, got "
                              f"{self.checkpoint_every_seconds}")
        if self.checkpoint_every_steps is not None and self.checkpoint_every_seconds is not None:
            raise ConfigError("give --checkpoint-every-steps or --checkpoint-every-seconds, "
                              "not both")
        if self.checkpoint_auto and (self.checkpoint_every_steps is not None
                                     or self.checkpoint_every_seconds is not None):
            raise ConfigError("--checkpoint-every-seconds auto cannot be combined with a fixed "
                              "interval")
        if self.mtbf_hours is not None and not self.mtbf_hours > 0:
            raise ConfigError(f"--mtbf-hours must be > 0, got {self.mtbf_hours}")
        if self.mtbf_hours is not None and not self.checkpoint_auto:
            raise ConfigError("--mtbf-hours is used only with --checkpoint-every-seconds auto")
        if self.keep_last <= 0:
            raise ConfigError(f"--keep-last must be > 0, got {self.keep_last}")
        if self.grace_seconds <= 0:
            raise ConfigError(f"--grace-seconds must be > 0, got {self.grace_seconds}")
        if not 0 <= self.grace_margin_seconds < self.grace_seconds:
            raise ConfigError("--grace-margin-seconds must be >= 0 and below --grace-seconds "
                              f"({self.grace_seconds}), got {self.grace_margin_seconds}")
        if self.metadata_poll_seconds <= 0:
            raise ConfigError("--metadata-poll-seconds must be > 0")
        if self.tensorboard_flush_seconds <= 0:
            raise ConfigError("--tensorboard-flush-seconds must be > 0, got "
                              f"{self.tensorboard_flush_seconds}")
        if self.eval_every_steps < 0 or self.log_every_steps <= 0:
            raise ConfigError("--eval-every-steps must be >= 0 and --log-every-steps > 0")
        parse_uri(self.run_dir)
        for r in self.replicas:
            parse_uri(r)

    @property
    def save_interval_seconds(self) -> float | None:
        """The time-based save interval in effect (None when saving by steps)."""
        if self.checkpoint_every_steps is not None:
            return None
        return self.checkpoint_every_seconds or 300.0
