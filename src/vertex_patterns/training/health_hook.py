"""Incident response inside the trainer: rewind-and-skip, stop (exit 3), hang (exit 4).

The loop calls `after_step` once per step with the agreed loss (the same on every rank, so
every rank takes the same decision). The loss rules (`health.LossMonitor`) decide:

- **Rewind and skip** on `non_finite` or `loss_spike`, while rewinds are left: wait for
  pending saves, restore the newest committed checkpoint from before the spike's first step,
  move the newer ones aside (they hold state the run abandons; a later save of the same step
  must not be skipped as "already committed"), and carry on from the restored step with the
  data position where it was: the batches since the checkpoint, those that led into the
  spike, are skipped (PaLM restarted ~100 steps before a spike and skipped 200-500 batches,
  by hand). The sampler names their sample ids; the rewind goes to the metrics stream, the
  log and the goodput ledger (`wasted_by_rewind_s`).
- **Stop** on any other critical finding, or one more after `max_rewinds`: save a checkpoint
  unless the weights are non-finite, log an `incident` event (Cloud Logging structured JSON),
  and return exit 3.
- **Hang**: a watchdog thread; no `after_step` for the timeout while the loop runs -> every
  thread's stack goes to the log (`faulthandler`), a `hang` event, and the process exits 4.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from vertex_patterns.health.findings import Finding, Severity
from vertex_patterns.health.loss import LossMonitor
from vertex_patterns.training.config import EXIT_HUNG, EXIT_UNHEALTHY
from vertex_patterns.training.health_config import TrainerHealth

log = logging.getLogger("vertex_patterns.training")

_REWINDABLE = frozenset({"non_finite", "loss_spike"})
_MAX_IDS_RECORDED = 100_000
_LEARN_AFTER_STEPS = 5


@dataclass(frozen=True)
class StepVerdict:
    """What the loop does next: carry on, continue from a rewound step, or exit."""

    exit_code: int | None = None
    """Return this from the loop (3 unhealthy)."""
    rewound: bool = False
    """Continue from `step` at `position`."""
    step: int = 0
    position: Mapping[str, int] | None = None


CARRY_ON = StepVerdict()


class HangWatchdog:
    """Exits the process with 4 when `beat()` is not called for the timeout.

    Args:
        timeout_s: A fixed timeout; None learns max(floor, factor x median step interval)
            once `_LEARN_AFTER_STEPS` beats came in.
        floor_s: The learned timeout's lower bound.
        factor: The learned timeout's multiple of the median interval.
        on_hang: Called (on the watchdog thread) before the exit, with the idle seconds and
            the limit: writes the event. Errors in it are logged, never stop the exit.
    """

    def __init__(self, timeout_s: float | None, floor_s: float, factor: float,
                 on_hang: Any) -> None:
        self.timeout_s, self.floor_s, self.factor = timeout_s, floor_s, factor
        self.on_hang = on_hang
        self._intervals: deque[float] = deque(maxlen=100)
        self._last: float | None = None
        self._owner: int | None = None
        self._armed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="hang-watchdog", daemon=True)
        self._thread.start()

    def limit(self) -> float | None:
        """The timeout now (None while still learning)."""
        if self.timeout_s is not None:
            return self.timeout_s
        if len(self._intervals) < _LEARN_AFTER_STEPS:
            return None
        return max(self.floor_s, self.factor * statistics.median(self._intervals))

    def beat(self) -> None:
        """A step finished (called from the training thread)."""
        now = time.monotonic()
        if self._last is not None:
            self._intervals.append(now - self._last)
        self._last = now
        self._owner = threading.get_ident()
        self._armed = True

    def disarm(self) -> None:
        """No more steps are coming (the run is finishing, preempted or stopping)."""
        self._armed = False

    def close(self) -> None:
        """Stops the watchdog thread."""
        self._armed = False
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            limit, last = self.limit(), self._last
            if not self._armed or limit is None or last is None:
                continue
            idle = time.monotonic() - last
            if idle > limit and self._in_step_loop():
                self._fire(idle, limit)

    def _in_step_loop(self) -> bool:
        # Only a thread still inside the step loop can be hung in it: after the loop returns
        # (or raised) the watchdog must never kill a process that went on to other work.
        frame = sys._current_frames().get(self._owner or -1)
        while frame is not None:
            if frame.f_code.co_name == "run" and "self" in frame.f_locals and \
                    type(frame.f_locals["self"]).__name__ == "_Loop":
                return True
            frame = frame.f_back
        return False

    def _fire(self, idle: float, limit: float) -> None:
        try:
            self.on_hang(idle, limit)
        except Exception:  # the exit below must happen whatever the event writing does
            log.exception("hang: writing the hang event failed")
        try:
            sys.stdout.flush()
            faulthandler.dump_traceback(file=sys.stdout, all_threads=True)
            sys.stdout.flush()
        finally:
            os._exit(EXIT_HUNG)


class HealthHook:
    """The trainer's health checks for one attempt.

    Args:
        loop: The step loop (`training.loop._Loop`): its checkpoint manager, sampler,
            workload, ledger and metrics stream are what a rewind and a stop act on.
        options: The health options.
    """

    def __init__(self, loop: Any, options: TrainerHealth) -> None:
        self.loop = loop
        self.options = options
        self.monitor = LossMonitor(options.rules())
        self.rewinds = 0
        self._done_at: dict[int, float] = {}
        self._last_step = 0
        self.watchdog = HangWatchdog(options.hang_timeout_seconds, options.hang_floor_seconds,
                                     options.hang_factor, self._on_hang)

    @staticmethod
    def maybe(loop: Any) -> HealthHook | DisabledHealth:
        """The hook, or a no-op one with `--no-health`."""
        options: TrainerHealth = loop.config.health
        return HealthHook(loop, options) if options.enabled else DisabledHealth()

    def after_step(self, step: int, loss: float, grad_norm: float,
                   position: Mapping[str, int]) -> StepVerdict:
        """Feeds one finished step; returns what the loop does next."""
        now = time.monotonic()
        self._done_at[step] = now
        if len(self._done_at) > 4096:
            del self._done_at[min(self._done_at)]
        self._last_step = step
        self.watchdog.beat()
        if step >= self.loop.config.max_steps or bool(self.loop.t.notice):
            self.watchdog.disarm()
        critical = [f for f in self.monitor.observe(step, loss, grad_norm)
                    if f.severity == Severity.CRITICAL]
        if not critical:
            return CARRY_ON
        finding = critical[0]
        if finding.rule in _REWINDABLE and self.rewinds < self.options.max_rewinds:
            first = int(finding.evidence.get("first_step", finding.step or step))
            target = self._rewind_target(first)
            if target is not None:
                return self._rewind(step, position, target, finding)
            reason = f"no committed checkpoint before step {first} to rewind to"
        elif finding.rule in _REWINDABLE:
            reason = f"{self.rewinds} rewind(s) used (--max-rewinds {self.options.max_rewinds})"
        else:
            reason = "rewinding cannot fix it"
        return self._stop(step, position, finding, reason)

    def close(self) -> None:
        """Stops the watchdog."""
        self.watchdog.close()

    # -- rewind ------------------------------------------------------------------------------
    def _rewind_target(self, first_step: int) -> int | None:
        ckpt = self.loop.ckpt
        ckpt.wait()  # a save in flight may be the one we need, or one to discard
        older = [s for s in ckpt.all_steps() if s < first_step]
        return max(older) if older else None

    def _rewind(self, step: int, position: Mapping[str, int], target: int,
                finding: Finding) -> StepVerdict:
        loop = self.loop
        started = time.monotonic()
        restored = loop.ckpt.restore(step=target)
        if restored is None:
            return self._stop(step, position, finding, f"checkpoint {target} did not restore")
        loop.t._load(restored.state, loop.workload, loop.fingerprint)
        discarded = loop.ckpt.discard_after(target)
        restore_s = time.monotonic() - started
        # The batches from the checkpoint's data position up to now are skipped: the data
        # position stays where it is while the step count goes back.
        skipped_ids: list[int] = []
        cursor = loop.sampler.position_from_dict(restored.state["data"])
        here = loop.sampler.position_from_dict(position)
        skipped = 0
        while cursor < here:  # positions order as (epoch, batch index)
            if len(skipped_ids) < _MAX_IDS_RECORDED:
                skipped_ids += loop.sampler.global_batch_ids(cursor).tolist()
            cursor = loop.sampler.next_position(cursor)
            skipped += 1
        assert cursor == here, "rewind: the data position is not on the sampler's path"
        done = self._done_at.get(target)
        wasted_s = started - done if done is not None else 0.0
        self.rewinds += 1
        self.monitor.reset_episode()
        if loop.ledger is not None:
            loop.ledger.rewind(restore_s, wasted_s)
        event = {"event": "rewind", "rule": finding.rule, "step": step, "to_step": target,
                 "first_step": finding.evidence.get("first_step", step),
                 "skipped_batches": skipped, "skipped_samples": skipped * (
                     loop.workload.batch_size * loop.cluster.world_size),
                 "restore_s": round(restore_s, 6), "wasted_s": round(wasted_s, 6),
                 "rewinds": self.rewinds, "discarded_checkpoints": discarded,
                 "evidence": dict(finding.evidence)}
        log.warning("health: %s at step %d; rewound to step %d, skipping %d batch(es) "
                    "(rewind %d of %d)", finding.rule, step, target, skipped, self.rewinds,
                    self.options.max_rewinds, extra={"json_fields": event})
        if loop.metrics is not None:
            loop.metrics.write({**event, "skipped_sample_ids": skipped_ids})
        self._done_at = {s: t for s, t in self._done_at.items() if s <= target}
        return StepVerdict(rewound=True, step=target, position=position)

    # -- stop --------------------------------------------------------------------------------
    def _stop(self, step: int, position: Mapping[str, int], finding: Finding,
              reason: str) -> StepVerdict:
        loop = self.loop
        self.watchdog.disarm()
        finite = all(bool(torch.isfinite(p).all()) for p in loop.workload.model.parameters())
        if finite:
            loop._save(step, position, blocking=True)
            loop.ckpt.wait()
            action = f"stopped (exit {EXIT_UNHEALTHY}); checkpoint saved at step {step}"
        else:
            action = f"stopped (exit {EXIT_UNHEALTHY}); weights non-finite, not saved"
        event = {"event": "incident", "rule": finding.rule, "severity": "critical",
                 "step": step, "evidence": dict(finding.evidence), "reason": reason,
                 "action": action, "rewinds": self.rewinds}
        log.critical("health incident: %s at step %d (%s); %s", finding.rule, step, reason,
                     action, extra={"json_fields": event})
        if loop.metrics is not None:
            loop.metrics.write(event)
            loop.metrics.flush()
        if loop.ledger is not None:
            print(loop.ledger.finish("unhealthy").to_table(), flush=True)
        return StepVerdict(exit_code=EXIT_UNHEALTHY)

    # -- hang --------------------------------------------------------------------------------
    def _on_hang(self, idle: float, limit: float) -> None:
        event = {"event": "hang", "rule": "hang", "severity": "critical",
                 "step": self._last_step, "evidence": {"idle_s": round(idle, 1),
                                                       "limit_s": round(limit, 1)},
                 "action": f"stacks dumped, exit {EXIT_HUNG}"}
        log.critical("hang: no step progress for %.0f s after step %d (limit %.0f s); "
                     "dumping every thread's stack and exiting %d", idle, self._last_step,
                     limit, EXIT_HUNG, extra={"json_fields": event})
        metrics = self.loop.metrics
        if metrics is not None:
            # The stream's writer may be what hangs: try, but never wait long for it.
            writer = threading.Thread(target=lambda: (metrics.write(event), metrics.flush()),
                                      daemon=True)
            writer.start()
            writer.join(timeout=5.0)


class DisabledHealth:
    """`--no-health`: every step carries on."""

    rewinds = 0

    def after_step(self, step: int, loss: float, grad_norm: float,
                   position: Mapping[str, int]) -> StepVerdict:
        """Carries on."""
        return CARRY_ON

    def close(self) -> None:
        """Nothing to stop."""
