"""The workload plug-in interface: what user code hands the trainer, and how it is found.

A workload factory is a function `build(*, seed: int, device: torch.device) -> Workload`. The
trainer finds it by a built-in name (`digits`, `tiny-lm`) or by a `package.module:function`
reference, calls it once per attempt, and drives the loop itself: it draws sample ids from
`EpochSampler`, turns them into a batch with `get_batch`, and calls `loss_fn`. Because
`get_batch` is a pure function of the ids and the factory is deterministic for a seed, a resumed
attempt that restores the model, optimizer, scheduler and sampler position computes exactly what
an uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from vertex_patterns.errors import ConfigError

BUILTIN_WORKLOADS: dict[str, str] = {
    "digits": "vertex_patterns.training.workloads.digits:build",
    "tiny-lm": "vertex_patterns.training.workloads.tiny_lm:build",
}
"""Built-in workload names and the factory each one resolves to."""

FINGERPRINT_HEX_CHARS = 16


@dataclass(kw_only=True)
class Workload:
    """Everything the trainer needs from user code for one training run."""

    name: str
    """Short name of the workload; part of the fingerprint."""
    model: torch.nn.Module
    """The model, already on the device the factory was given."""
    optimizer: torch.optim.Optimizer
    """Optimizer over `model`'s parameters."""
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    """LR scheduler stepped once per optimizer step, or None for a constant rate."""
    dataset_size: int
    """Training samples have ids `0 .. dataset_size - 1`."""
    batch_size: int
    """Samples per step on each rank."""
    get_batch: Callable[[torch.Tensor], Any]
    """int64 sample ids -> a batch on the model's device. Pure and deterministic."""
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor]
    """(model, batch) -> scalar loss: runs the forward pass, not backward."""
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None
    """model -> held-out metrics, computed without gradients; None when there is no held-out set."""
    config: dict[str, Any]
    """JSON-able hyperparameters and model config; fingerprinted, and saved next to the model."""
    grad_clip: float | None = 1.0
    """Max global gradient norm, or None for no clipping."""
    scaler: torch.amp.GradScaler | None = None
    """Loss scaler for float16 mixed precision (checkpointed with the rest), or None."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("workload name must not be empty")
        if self.dataset_size < 1:
            raise ConfigError(f"workload {self.name!r}: dataset_size must be >= 1, "
                              f"got {self.dataset_size}")
        if self.batch_size < 1:
            raise ConfigError(f"workload {self.name!r}: batch_size must be >= 1, "
                              f"got {self.batch_size}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip)
                                               and self.grad_clip > 0):
            raise ConfigError(f"workload {self.name!r}: grad_clip must be a positive number "
                              f"or None, got {self.grad_clip}")
        canonical_config(self.config, name=self.name)


class WorkloadFactory(Protocol):
    """Builds a workload; the same seed must give the same parameters and data."""

    def __call__(self, *, seed: int, device: torch.device) -> Workload: ...


def canonical_config(config: dict[str, Any], *, name: str = "workload") -> str:
    """The config as canonical JSON: sorted keys, no whitespace, no NaN.

    Args:
        config: A workload's config.
        name: The workload's name, for the error message.

    Returns:
        The canonical JSON text.

    Raises:
        ConfigError: The config is not a dict of JSON-able values.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"workload {name!r}: config must be a dict, got "
                          f"{type(config).__name__}")
    try:
        return json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"workload {name!r}: config must hold only JSON values "
                          f"(numbers, strings, lists, dicts): {exc}") from exc


def workload_fingerprint(workload: Workload) -> str:
    """A short hash of the workload's name and config.

    Two runs with the same fingerprint train the same model on the same data with the same
    hyperparameters, so one may resume from the other's checkpoints; the trainer refuses a run
    dir whose checkpoints carry a different fingerprint.

    Args:
        workload: The workload.

    Returns:
        The first 16 hex digits of sha256(name, canonical JSON config).
    """
    text = workload.name + "\n" + canonical_config(workload.config, name=workload.name)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:FINGERPRINT_HEX_CHARS]


def _usage() -> str:
    names = ", ".join(sorted(BUILTIN_WORKLOADS))
    return f"use a built-in workload ({names}) or a reference 'package.module:function'"


def _is_dotted_name(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def resolve_workload(name_or_ref: str) -> Callable[..., Workload]:
    """Finds a workload factory by built-in name or `package.module:function` reference.

    Args:
        name_or_ref: `digits`, `tiny-lm`, or `package.module:function` (the function may be a
            dotted attribute path, such as `module:Class.build`).

    Returns:
        The factory, called as `factory(seed=..., device=...)`.

    Raises:
        ConfigError: Unknown name, malformed reference, module that fails to import, missing
            attribute, or an attribute that is not callable. The message is one line.
    """
    ref = BUILTIN_WORKLOADS.get(name_or_ref, name_or_ref)
    if ":" not in ref:
        raise ConfigError(f"unknown workload {name_or_ref!r}: {_usage()}")
    module_name, _, attr_path = ref.partition(":")
    if not (_is_dotted_name(module_name) and _is_dotted_name(attr_path)):
        raise ConfigError(f"malformed workload reference {name_or_ref!r}: {_usage()}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(f"cannot import workload module {module_name!r} ({reason}): check "
                          f"that it is installed or on PYTHONPATH, or {_usage()}") from exc
    target: Any = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise ConfigError(f"workload module {module_name!r} has no attribute "
                              f"{attr_path!r}: name a factory function that returns a "
                              "Workload") from exc
    if not callable(target):
        raise ConfigError(f"workload reference {name_or_ref!r} names an object of type "
                          f"{type(target).__name__}, not a function: name a factory "
                          "function that returns a Workload")
    factory: Callable[..., Workload] = target
    return factory
