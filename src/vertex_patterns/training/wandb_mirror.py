"""An optional Weights & Biases mirror of the metrics stream: off by default, never fatal.

    mirror = WandbMirror.maybe(args.wandb, project="tiny-lm", run_name=run_id, config=cfg)
    mirror.log(step, {"loss": loss})
    mirror.finish()

`wandb` is imported only when the mirror is enabled. Any failure (package missing, `init`
refused, `log` failing) logs one warning and turns the mirror off; the run goes on. The API
key comes from W&B's own environment (`WANDB_API_KEY`) and is never read or logged here.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("vertex_patterns.training")


class WandbMirror:
    """Mirrors metric records to W&B while `enabled`; every method is a no-op otherwise.

    Use `WandbMirror.maybe(...)`; the constructor builds a disabled mirror.
    """

    def __init__(self) -> None:
        self._run: Any = None

    @property
    def enabled(self) -> bool:
        """True while records are being sent to W&B."""
        return self._run is not None

    @classmethod
    def maybe(
        cls,
        enabled: bool,
        project: str,
        run_name: str,
        config: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
    ) -> WandbMirror:
        """A mirror that sends to W&B when `enabled` and `wandb` starts; a disabled one else.

        Args:
            enabled: Whether the user asked for the mirror.
            project: The W&B project.
            run_name: The W&B run's display name.
            config: The run configuration to record (must hold no secrets).
            run_id: A stable W&B run id, so every attempt of a preempted run resumes the same
                W&B run; None lets W&B pick one.

        Returns:
            The mirror; never raises.
        """
        mirror = cls()
        if not enabled:
            return mirror
        try:
            wandb = importlib.import_module("wandb")
        except ImportError:
            log.warning("W&B mirror requested but the wandb package is not installed; "
                        "continuing without it (pip install wandb)")
            return mirror
        try:
            mirror._run = wandb.init(
                project=project,
                name=run_name,
                id=run_id,
                resume="allow" if run_id else None,
                config=dict(config or {}),
            )
        except Exception as exc:  # any wandb failure: the mirror is optional
            log.warning("W&B mirror disabled: wandb.init failed: %s", _short(exc))
            mirror._run = None
        return mirror

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        """Sends `values` at `step`; on failure warns once and disables the mirror."""
        if self._run is None:
            return
        try:
            self._run.log(dict(values), step=step)
        except Exception as exc:  # any wandb failure: the mirror is optional
            log.warning("W&B mirror disabled: log failed: %s", _short(exc))
            self._run = None

    def finish(self) -> None:
        """Closes the W&B run; failures are logged, never raised."""
        run, self._run = self._run, None
        if run is None:
            return
        try:
            run.finish()
        except Exception as exc:  # any wandb failure: the mirror is optional
            log.warning("W&B finish failed: %s", _short(exc))


def _short(exc: BaseException) -> str:
    """The exception's type and first line, for a one-line warning."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
