"""The training loop: resume, train, checkpoint, stop cleanly on a preemption notice.

One attempt of a run, on one rank:

    resolve workload -> join the process group -> build the workload (seeded)
    -> restore the newest valid checkpoint (any region) -> seek the data to its position
    -> steps, each followed by one all-reduce of (loss, stop?, save due?)
         save due   -> async save (only the host snapshot blocks the loop)
         stop       -> blocking save with a deadline inside the grace period, exit 75
         max steps  -> final checkpoint, held-out evaluation, model export, exit 0

Every rank reaches the same decision at the same step because the flags are all-reduced,
so a SIGTERM that reaches one rank first still gives one consistent checkpoint.

The preemption notice is armed (a signal raises the flag instead of ending the process with
nothing to save) just before the restore. A notice after the last step lets the final
checkpoint and model finish within the grace period (exit 0), or stops them at the deadline
(75 when the final checkpoint committed, 76 when not). After a notice nothing waits for the
background fan-out to replicas, and telemetry (metrics, TensorBoard, the goodput ledger) is
never fatal: its failures are logged and the exit code stays what training decided.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vertex_patterns.checkpoint import CheckpointDeadlineError, CheckpointManager
from vertex_patterns.errors import ConfigError
from vertex_patterns.monitoring.publish import publisher_for
from vertex_patterns.storage import Storage
from vertex_patterns.training.auto_interval import AutoSavePolicy
from vertex_patterns.training.cluster import Cluster, init_cluster
from vertex_patterns.training.config import (
    EXIT_OK,
    EXIT_PREEMPTED,
    EXIT_PREEMPTED_UNSAVED,
    RunPaths,
    TrainConfig,
)
from vertex_patterns.training.export import ExportStoppedError, export_model
from vertex_patterns.training.goodput import GoodputRecorder, process_start_time
from vertex_patterns.training.health_hook import HealthHook
from vertex_patterns.training.metrics import MetricsStream, accelerator_stats, new_attempt_id
from vertex_patterns.training.preemption import MetadataWatcher, PreemptionNotice
from vertex_patterns.training.rng import capture_rng, restore_rng, seed_everything
from vertex_patterns.training.sampler import EpochSampler
from vertex_patterns.training.tensorboard import TensorBoardWriter
from vertex_patterns.training.wandb_mirror import WandbMirror
from vertex_patterns.training.workload import Workload, resolve_workload, workload_fingerprint

log = logging.getLogger("vertex_patterns.training")


class Trainer:
    """One attempt of a training run on this rank.

    Args:
        config: What to train and where.
        notice: The preemption flag (installed on SIGTERM/SIGINT by the CLI).
        storage: Storage facade (defaults follow STORAGE_EMULATOR_HOST).
        process_start: Unix time the process started (for the startup badput).
    """

    def __init__(self, config: TrainConfig, notice: PreemptionNotice, *,
                 storage: Storage | None = None, process_start: float | None = None) -> None:
        self.config = config
        self.notice = notice
        self.store = storage or Storage()
        self.process_start = process_start or process_start_time()
        self.paths = RunPaths.resolve(config.run_dir)
        # Bad input is found before anything is built or written.
        self.factory: Callable[..., Workload] = resolve_workload(config.workload)

    # -- setup ---------------------------------------------------------------------------
    def _build(self, cluster: Cluster) -> Workload:
        if self.config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        seed_everything(self.config.seed)
        workload = self.factory(seed=self.config.seed, device=cluster.device)
        workload.model.to(cluster.device)
        return workload

    def _state(self, step: int, workload: Workload, position: Mapping[str, int],
               fingerprint: str) -> dict[str, Any]:
        return {
            "model": workload.model.state_dict(),
            "optimizer": workload.optimizer.state_dict(),
            "scheduler": None if workload.scheduler is None
            else workload.scheduler.state_dict(),
            "scaler": None if workload.scaler is None else workload.scaler.state_dict(),
            "rng": capture_rng(),
            "data": dict(position),
            "step": step,
            "run": {"workload": workload.name, "fingerprint": fingerprint,
                    "seed": self.config.seed},
        }

    def _load(self, state: Mapping[str, Any], workload: Workload, fingerprint: str) -> None:
        run = state.get("run", {})
        if run.get("fingerprint") != fingerprint or run.get("seed") != self.config.seed:
            raise ConfigError(
                f"{self.paths.checkpoints} holds checkpoints of another run (workload "
                f"{run.get('workload')!r}, seed {run.get('seed')}, config "
                f"{run.get('fingerprint')}); this run is {workload.name!r}, seed "
                f"{self.config.seed}, config {fingerprint}: give a fresh --run-dir")
        workload.model.load_state_dict(state["model"])
        workload.optimizer.load_state_dict(state["optimizer"])
        if workload.scheduler is not None and state.get("scheduler") is not None:
            workload.scheduler.load_state_dict(state["scheduler"])
        if workload.scaler is not None and state.get("scaler") is not None:
            workload.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])

    # -- the run -------------------------------------------------------------------------
    def run(self) -> int:
        """Trains until max steps or a preemption notice; returns the exit code."""
        config = self.config
        cluster = init_cluster()
        leader = cluster.is_leader
        attempt = new_attempt_id()
        # Created now (it writes nothing until the first step or checkpoint) so that program
        # startup ends here, before the workload is built.
        # Flushed every 2 s: after a SIGKILL, steps since the last flush are invisible to the
        # ledger (counted as time between attempts, not wasted progress), so the interval
        # bounds that error; 2 s stays under GCS's one-write-per-second limit per object.
        ledger = GoodputRecorder(config.run_dir, attempt=attempt, storage=self.store,
                                 process_start=self.process_start,
                                 flush_every_s=2.0) if leader else None
        if ledger is not None:
            ledger.startup_done()
        prep_started = time.monotonic()
        log.info("building workload %s (attempt %s)", config.workload, attempt)
        workload = self._build(cluster)
        fingerprint = workload_fingerprint(workload)
        sampler = EpochSampler(workload.dataset_size, workload.batch_size, config.seed,
                               rank=cluster.rank, world_size=cluster.world_size)
        model: nn.Module = workload.model
        if cluster.distributed:
            model = nn.parallel.DistributedDataParallel(
                workload.model, device_ids=[cluster.device.index]
                if cluster.device.type == "cuda" else None)
        prep_s = time.monotonic() - prep_started

        # From here on there is training state: a notice raises the flag (the loop saves),
        # and the watchdog ends the process between the emergency save's deadline and
        # SIGKILL, whatever it is blocked on.
        self.notice.arm(hard_deadline_s=config.grace_seconds - config.grace_margin_seconds / 2)
        watcher = None
        if config.metadata_url:
            watcher = MetadataWatcher(config.metadata_url, self.notice,
                                      poll_seconds=config.metadata_poll_seconds).start()
        with contextlib.ExitStack() as stack:
            if watcher is not None:
                stack.callback(watcher.stop)
            restore_started = time.monotonic()
            ckpt = CheckpointManager(
                self.paths.checkpoints, replicas=config.replicas, keep_last=config.keep_last,
                storage=self.store)
            stack.callback(self._close_checkpoints, ckpt)
            restored = ckpt.restore()
            step, position = 0, sampler.start_position()
            if restored is not None:
                self._load(restored.state, workload, fingerprint)
                step = int(restored.state["step"])
                position = sampler.position_from_dict(restored.state["data"])
                log.info("resumed at step %d from %s", step, restored.uri,
                         extra={"json_fields": {"event": "resume", "step": step,
                                                "checkpoint": restored.uri}})
            else:
                log.info("no checkpoint in %s: starting from step 0", self.paths.checkpoints)
            restore_s = time.monotonic() - restore_started
            if ledger is not None:
                ledger.training_prep(prep_s)
                ledger.restore(restore_s, None if restored is None else step)
                stack.callback(never_fatal, "goodput ledger flush", ledger.flush)
            metrics = tb = mirror = None
            if leader:
                metrics = MetricsStream(self.paths.metrics, attempt=attempt, storage=self.store)
                stack.callback(never_fatal, "metrics stream close", metrics.close)
                tb = open_tensorboard(self.paths.logs, self.store,
                                      config.tensorboard_flush_seconds)
                if tb is not None:
                    stack.callback(never_fatal, "TensorBoard close", tb.close)
                mirror = WandbMirror.maybe(config.wandb_project is not None,
                                           project=config.wandb_project or "", run_name=attempt,
                                           config={"workload": workload.name,
                                                   **workload.config})
                stack.callback(mirror.finish)
            loop = _Loop(self, cluster, workload, model, sampler, ckpt, ledger, metrics, tb,
                         mirror, fingerprint)
            stack.callback(loop.health.close)
            if loop.publisher is not None:
                stack.callback(loop.publisher.close)
            return loop.run(step, position)

    def _close_checkpoints(self, ckpt: CheckpointManager) -> None:
        if self.notice:
            # The emergency path ends within the grace period: a fan-out to another region
            # can take longer. Steps are committed locally; the next attempt resumes it.
            log.info("preempted: leaving the fan-out of committed checkpoints to the next "
                     "attempt")
            return
        ckpt.close()


def never_fatal(what: str, close: Callable[[], object]) -> None:
    """Runs a telemetry step (flush, close, upload); its failure is logged, never raised, so
    it cannot turn a finished run (0) or a preemption (75) into a failure (1)."""
    try:
        close()
    except Exception as exc:  # telemetry only: any failure is logged and training's code kept
        log.warning("%s failed (telemetry; the exit code is unchanged): %s", what, exc)


def open_tensorboard(log_dir: str, store: Storage, flush_every_s: float
                     ) -> TensorBoardWriter | None:
    """The TensorBoard writer, or None (logged) when its directory cannot be used."""
    try:
        return TensorBoardWriter(log_dir, storage=store, flush_every_s=flush_every_s)
    except Exception as exc:  # telemetry only: train without it
        log.warning("TensorBoard disabled: cannot write to %s: %s", log_dir, exc)
        return None


class _Loop:
    """The step loop of one attempt (split out of Trainer to keep each part readable)."""

    def __init__(self, trainer: Trainer, cluster: Cluster, workload: Workload,
                 model: nn.Module, sampler: EpochSampler, ckpt: CheckpointManager,
                 ledger: GoodputRecorder | None, metrics: MetricsStream | None,
                 tb: TensorBoardWriter | None, mirror: WandbMirror | None,
                 fingerprint: str) -> None:
        self.t = trainer
        self.config = trainer.config
        self.cluster = cluster
        self.workload = workload
        self.model = model
        self.sampler = sampler
        self.ckpt = ckpt
        self.ledger = ledger
        self.metrics = metrics
        self.tb = tb
        self.mirror = mirror
        self.fingerprint = fingerprint
        self.params = [p for p in workload.model.parameters() if p.requires_grad]
        self.last_save = time.monotonic()
        self.auto = AutoSavePolicy.for_run(trainer.paths.run_dir, trainer.store,
                                           self.config.mtbf_hours) \
            if self.config.checkpoint_auto else None
        self.health = HealthHook.maybe(self)
        self.publisher = publisher_for(self)

    def _emit(self, step: int, record: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.write({"step": step, **record})
        scalars = {k: float(v) for k, v in record.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.tb is not None:
            self.tb.scalars(step, scalars)
        if self.mirror is not None:
            self.mirror.log(step, scalars)
        if self.publisher is not None:
            self.publisher.record({"step": step, **record})

    def _one_step(self, position: Mapping[str, int]) -> tuple[float, float, torch.Tensor]:
        w = self.workload
        ids = self.sampler.batch_ids(position)
        batch = w.get_batch(ids)
        w.optimizer.zero_grad(set_to_none=True)
        loss = w.loss_fn(self.model, batch)
        clip = w.grad_clip if w.grad_clip is not None else math.inf
        if w.scaler is not None:
            w.scaler.scale(loss).backward()
            w.scaler.unscale_(w.optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
            w.scaler.step(w.optimizer)
            w.scaler.update()
        else:
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
            w.optimizer.step()
        if w.scheduler is not None:
            w.scheduler.step()
        return float(loss.detach()), grad_norm, ids

    def _agree(self, loss: float, stop: bool, save_due: bool) -> tuple[float, bool, bool]:
        """Mean loss over ranks; stop/save if any rank says so (one all-reduce)."""
        if not self.cluster.distributed:
            return loss, stop, save_due
        t = torch.tensor([loss, float(stop), float(save_due)], dtype=torch.float64,
                         device=self.cluster.device)
        dist.all_reduce(t)
        return float(t[0]) / self.cluster.world_size, bool(t[1] > 0), bool(t[2] > 0)

    def _save_due(self, step: int) -> bool:
        if self.auto is not None:
            return self.auto.due(time.monotonic() - self.last_save)
        every = self.config.checkpoint_every_steps
        if every is not None:
            return step % every == 0
        interval = self.config.save_interval_seconds
        return interval is not None and time.monotonic() - self.last_save >= interval

    def _save(self, step: int, position: Mapping[str, int], *, blocking: bool,
              deadline_s: float | None = None, metrics: dict[str, float] | None = None
              ) -> float:
        if self.metrics is not None:
            # Records up to a checkpoint are durable before it commits, so a SIGKILL can lose
            # only steps that the next attempt will redo (and record) anyway. A failed chunk
            # keeps its records for the next flush: telemetry never stops training.
            never_fatal("metrics flush", self.metrics.flush)
        started = time.monotonic()
        self.ckpt.save(step, self.t._state(step, self.workload, position, self.fingerprint),
                       metrics=metrics, blocking=blocking, deadline_s=deadline_s)
        blocked = time.monotonic() - started
        self.last_save = time.monotonic()
        if self.auto is not None and not blocking:
            self.auto.observe(blocked)
        if self.ledger is not None:
            self.ledger.checkpoint(step, blocked)
        self._emit(step, {"event": "checkpoint", "blocking_s": round(blocked, 6),
                          "blocking": blocking})
        return blocked

    def run(self, step: int, position: Mapping[str, int]) -> int:
        config = self.config
        max_steps = config.max_steps
        leader = self.cluster.is_leader
        samples = self.workload.batch_size * self.cluster.world_size
        if step >= max_steps:
            log.info("step %d already reaches --max-steps %d", step, max_steps)
        while step < max_steps:
            started = time.monotonic()
            loss, grad_norm, ids = self._one_step(position)
            position = self.sampler.next_position(position)
            step += 1
            loss, stop, save_due = self._agree(loss, bool(self.t.notice), self._save_due(step))
            seconds = time.monotonic() - started
            if self.ledger is not None:
                self.ledger.step(step, seconds)
            if leader:
                record: dict[str, Any] = {
                    "loss": loss, "lr": self.workload.optimizer.param_groups[0]["lr"],
                    "grad_norm": grad_norm, "step_time_s": round(seconds, 6),
                    "samples_per_s": round(samples / seconds, 3) if seconds > 0 else None,
                    **accelerator_stats()}
                if config.record_samples:
                    record["sample_ids"] = ids.tolist()
                self._emit(step, record)
                if step % config.log_every_steps == 0 or step == max_steps:
                    log.info("step %d/%d loss %.4f", step, max_steps, loss,
                             extra={"json_fields": {"step": step, "loss": loss}})
            verdict = self.health.after_step(step, loss, grad_norm, position)
            if verdict.exit_code is not None or verdict.rewound:
                if verdict.exit_code is not None:
                    return verdict.exit_code
                step, position = verdict.step, verdict.position or position
                continue
            if stop:
                return self._preempted(step, position)
            if step < max_steps and config.eval_every_steps and \
                    step % config.eval_every_steps == 0:
                self._evaluate(step)
            if save_due and step < max_steps:
                self._save(step, position, blocking=False, metrics={"loss": loss})
        return self._finish(step, position)

    def _budget(self) -> float:
        """Seconds left for the emergency save (grace - margin - time since the notice)."""
        config = self.config
        return config.grace_seconds - config.grace_margin_seconds - \
            self.t.notice.seconds_since()

    def _past_deadline(self) -> bool:
        return bool(self.t.notice) and self._budget() <= 0

    def _unsaved(self, exc: BaseException) -> int:
        log.error("emergency checkpoint not committed (%s); the previous one is intact", exc)
        if self.ledger is not None:
            self.ledger.finish("preempted-unsaved")
        return EXIT_PREEMPTED_UNSAVED

    def _preempted(self, step: int, position: Mapping[str, int]) -> int:
        if not self.t.notice:  # the notice reached another rank: its deadline holds here too
            self.t.notice.raise_notice("another rank's notice")
        budget = self._budget()
        log.warning("preemption notice (%s): saving step %d within %.1fs", self.t.notice.reason,
                    step, budget, extra={"json_fields": {"event": "preempted", "step": step}})
        try:
            if budget <= 0:
                raise CheckpointDeadlineError("no time left in the grace period")
            self._save(step, position, blocking=True, deadline_s=budget)
        except CheckpointDeadlineError as exc:
            return self._unsaved(exc)
        self.t.notice.settle(EXIT_PREEMPTED)
        log.warning("checkpoint step %d committed; exiting for the preemption", step)
        if self.ledger is not None:
            summary = self.ledger.finish("preempted")
            print(summary.to_table(), flush=True)
        return EXIT_PREEMPTED

    def _evaluate(self, step: int) -> dict[str, float]:
        if not self.cluster.is_leader or self.workload.evaluate is None:
            return {}
        self.workload.model.eval()
        try:
            with torch.no_grad():
                results = self.workload.evaluate(self.workload.model)
        finally:
            self.workload.model.train()
        log.info("step %d held-out %s", step,
                 ", ".join(f"{k} {v:.4f}" for k, v in results.items()),
                 extra={"json_fields": {"event": "eval", "step": step, **results}})
        self._emit(step, {f"eval_{k}": v for k, v in results.items()})
        return results

    def _finish(self, step: int, position: Mapping[str, int]) -> int:
        """Final checkpoint, evaluation, model export. A notice meanwhile puts them under the
        emergency deadline: the model is finished when it fits (0), else stopped before its
        `config.json` (75: the final checkpoint is committed; 76: it is not)."""
        notice = self.t.notice
        try:
            if self._past_deadline():
                raise CheckpointDeadlineError("no time left in the grace period")
            self._save(step, position, blocking=True,
                       deadline_s=self._budget() if notice else None)
        except CheckpointDeadlineError as exc:
            return self._unsaved(exc)
        notice.fallback(EXIT_PREEMPTED)  # from here a forced exit still has this checkpoint
        results = self._evaluate(step)
        if self.cluster.is_leader:
            log.info("exporting the final model to %s", self.t.paths.model)
            try:
                export_model(self.t.store, self.t.paths.model, self.workload, step, results,
                             should_stop=self._past_deadline)
            except ExportStoppedError as exc:
                log.error("%s; the final checkpoint (step %d) is committed: a restart "
                          "writes the model", exc, step)
                if self.ledger is not None:
                    self.ledger.finish("preempted")
                return EXIT_PREEMPTED
        notice.settle(EXIT_OK)
        if self.ledger is not None:
            summary = self.ledger.finish("completed")
            print(summary.to_table(), flush=True)
        log.info("training complete at step %d; model in %s", step, self.t.paths.model)
        return EXIT_OK
