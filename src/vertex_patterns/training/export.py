"""The final model: `model.safetensors` + `config.json`, where `config.json` means "complete".

    <model-dir>/model.safetensors   the weights (safetensors, loadable by `safetensors.torch`)
    <model-dir>/config.json         workload, step, hyper-parameters, held-out metrics,
                                    versions; present only beside complete weights

The protocol mirrors a checkpoint's manifest: `config.json` is deleted first and written
last, after the weights are durable (fsync'd file and directory on local disk; a finalized
upload on GCS). A kill at any instant leaves either no `config.json`, or one beside complete
weights of the step it names.

The weights stream straight from the model's memory through the checkpoint package's own
safetensors writer, in pieces: no clone of the state and no whole-file bytes object, so the
extra memory is one piece (one upload chunk for `gs://`), not about three copies of the
weights. Only tensors that are not contiguous CPU memory (a GPU model) are copied to host
first.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import BinaryIO

import torch

from vertex_patterns import __version__
from vertex_patterns.checkpoint.serialization import write_safetensors
from vertex_patterns.errors import VertexPatternsError
from vertex_patterns.storage import Storage
from vertex_patterns.storage.local_write import fsync_dir
from vertex_patterns.storage.uri import parse_uri
from vertex_patterns.training.workload import Workload

log = logging.getLogger("vertex_patterns.training")

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class ExportStoppedError(VertexPatternsError):
    """The export was stopped before `config.json` (its deadline passed); the model
    directory holds no `config.json`, so nothing claims the weights are complete."""


def host_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state as contiguous CPU tensors: views of its own memory where it already
    is one (no copy), a host copy otherwise."""
    out = {}
    for key, value in model.state_dict().items():
        t = value.detach()
        if t.device.type != "cpu" or not t.is_contiguous():
            t = t.cpu().contiguous()
        out[key] = t
    return out


def export_model(
    store: Storage,
    model_dir: str,
    workload: Workload,
    step: int,
    results: Mapping[str, float],
    *,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    """Writes the final model: weights first (durable), `config.json` last.

    Args:
        store: The storage facade.
        model_dir: The model directory (`gs://...` or local).
        workload: The trained workload (its model and config).
        step: The step the weights are from.
        results: Held-out metrics, recorded in `config.json`.
        should_stop: Polled between pieces of the weights; True stops the export before
            `config.json` (the emergency path's deadline).

    Raises:
        ExportStoppedError: `should_stop` said so; no `config.json` is left.
        StorageError: A write failed (after the storage layer's retries).
    """
    base = model_dir.rstrip("/")
    weights_uri, config_uri = f"{base}/{WEIGHTS_NAME}", f"{base}/{CONFIG_NAME}"
    weights = parse_uri(weights_uri)
    _delete_durably(store, config_uri)
    stopped = False

    def stop() -> bool:
        nonlocal stopped
        stopped = stopped or (should_stop is not None and should_stop())
        return stopped

    tensors = host_tensors(workload.model)

    def produce(sink: BinaryIO) -> None:
        write_safetensors(sink, tensors, should_stop=stop)

    try:
        if weights.is_gcs:
            store.delete(weights_uri)  # the upload must create the object
            store.write_stream(weights_uri, produce)
        else:
            os.makedirs(os.path.dirname(weights.path), exist_ok=True)
            store.local.write_stream(weights, produce, fsync=True)
    except Exception as exc:
        # The writer signals a stop with an exception whose type differs by backend (the
        # GCS path wraps it): what matters is that `stop()` asked for it.
        if stopped:
            raise ExportStoppedError(f"export of {weights_uri} stopped at the deadline; "
                                     f"{CONFIG_NAME} not written") from exc
        raise
    if stop():
        raise ExportStoppedError(f"export stopped at the deadline before {config_uri}")
    meta = {"workload": workload.name, "step": step, "config": workload.config,
            "eval": dict(results), "library_version": __version__,
            "torch_version": torch.__version__}
    data = json.dumps(meta, indent=2, sort_keys=True).encode()
    config = parse_uri(config_uri)
    if config.is_gcs:
        store.write_bytes(config_uri, data)
    else:
        store.local.write_stream(config, lambda f: f.write(data), fsync=True)


def _delete_durably(store: Storage, uri: str) -> None:
    """Deletes `uri`; on local disk the removal reaches the disk before anything else does."""
    location = parse_uri(uri)
    store.delete(uri)
    if not location.is_gcs and os.path.isdir(os.path.dirname(location.path)):
        fsync_dir(os.path.dirname(location.path))
