"""A seekable, shuffling, rank-aware sampler of training sample ids.

Each epoch is one permutation of `0 .. dataset_size - 1` drawn from a generator seeded by a hash
of (seed, epoch), so any epoch's order is recomputed from two integers without touching earlier
epochs. Global batch `b` of an epoch is `perm[b*B*W : (b+1)*B*W]` and rank `r` takes its
`[r*B : (r+1)*B]` slice; the last incomplete global batch is dropped, so every rank takes the
same number of steps and, across ranks, every id of an epoch is used at most once.

A position is just (epoch, batch index): a resumed run seeks straight to it at the cost of one
permutation, never iterating over batches it has already trained on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from vertex_patterns.errors import ConfigError

_POSITION_KEYS = ("epoch", "batch_index")


@dataclass(frozen=True, order=True)
class SamplerPosition(Mapping[str, int]):
    """The next batch to train on: an epoch and a batch index within it.

    It is also a read-only mapping with the keys `epoch` and `batch_index`, so `dict(position)`
    gives the JSON-able form a checkpoint stores.
    """

    epoch: int = 0
    """Epoch number, from 0."""
    batch_index: int = 0
    """Global batch index within the epoch, from 0."""

    def __post_init__(self) -> None:
        for key in _POSITION_KEYS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"sampler position {key} must be an int >= 0, got {value!r}")

    def __getitem__(self, key: str) -> int:
        if key not in _POSITION_KEYS:
            raise KeyError(key)
        value: int = getattr(self, key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(_POSITION_KEYS)

    def __len__(self) -> int:
        return len(_POSITION_KEYS)

    def to_dict(self) -> dict[str, int]:
        """The position as a JSON-able dict."""
        return {"epoch": self.epoch, "batch_index": self.batch_index}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SamplerPosition:
        """Reads a position written by `to_dict` (or any mapping with the same keys).

        Raises:
            ValueError: A key is missing or not a non-negative int.
        """
        if isinstance(data, SamplerPosition):
            return data
        try:
            return cls(epoch=data["epoch"], batch_index=data["batch_index"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a sampler position: {data!r}") from exc


def epoch_generator_seed(seed: int, epoch: int) -> int:
    """The generator seed of an epoch's permutation: 63 bits of sha256("seed:epoch").

    A hash rather than `seed + epoch`, so nearby seeds do not share shifted epoch orders.
    """
    digest = hashlib.sha256(f"vertex-patterns-sampler:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class EpochSampler:
    """Deterministic shuffled batches of sample ids for one rank, seekable to any position."""

    def __init__(self, dataset_size: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        """Creates the sampler.

        Args:
            dataset_size: Sample ids are `0 .. dataset_size - 1`.
            batch_size: Ids per step on each rank.
            seed: Shuffle seed; the same seed gives the same order on every machine.
            rank: This process's rank.
            world_size: Number of ranks sharing each global batch.

        Raises:
            ConfigError: A size is below 1, the rank is outside the world, or one global batch
                (batch_size * world_size) needs more samples than the dataset has.
        """
        for key, value in (("dataset_size", dataset_size), ("batch_size", batch_size),
                           ("world_size", world_size)):
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, {world_size}), got {rank}")
        if batch_size * world_size > dataset_size:
            raise ConfigError(
                f"one global batch needs batch_size {batch_size} x world_size {world_size} = "
                f"{batch_size * world_size} samples but the dataset has {dataset_size}: "
                "lower the batch size or the number of ranks")
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self._cached_epoch: int | None = None
        self._cached_perm: torch.Tensor | None = None

    @property
    def global_batch_size(self) -> int:
        """Samples per step across all ranks."""
        return self.batch_size * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        """Full global batches per epoch (the incomplete last one is dropped)."""
        return self.dataset_size // self.global_batch_size

    def permutation(self, epoch: int) -> torch.Tensor:
        """The epoch's order of all sample ids (int64, on CPU). The last epoch used is cached."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if self._cached_epoch != epoch or self._cached_perm is None:
            generator = torch.Generator().manual_seed(epoch_generator_seed(self.seed, epoch))
            self._cached_perm = torch.randperm(self.dataset_size, generator=generator,
                                               dtype=torch.int64)
            self._cached_epoch = epoch
        return self._cached_perm

    def start_position(self) -> SamplerPosition:
        """The first batch of epoch 0."""
        return SamplerPosition()

    def position_from_dict(self, data: Mapping[str, Any]) -> SamplerPosition:
        """Reads a stored position and checks that it fits this sampler.

        Raises:
            ValueError: Not a position, or its batch index lies past the end of this sampler's
                epoch (the dataset or the global batch size changed since it was stored).
        """
        position = SamplerPosition.from_dict(data)
        self._check(position)
        return position

    def global_batch_ids(self, position: Mapping[str, int]) -> torch.Tensor:
        """Every rank's ids at `position`, rank 0's slice first (int64, a new tensor)."""
        pos = self._check(position)
        start = pos.batch_index * self.global_batch_size
        return self.permutation(pos.epoch)[start:start + self.global_batch_size].clone()

    def batch_ids(self, position: Mapping[str, int]) -> torch.Tensor:
        """This rank's ids at `position` (int64, `batch_size` of them, a new tensor)."""
        pos = self._check(position)
        start = pos.batch_index * self.global_batch_size + self.rank * self.batch_size
        return self.permutation(pos.epoch)[start:start + self.batch_size].clone()

    def next_position(self, position: Mapping[str, int]) -> SamplerPosition:
        """The position after `position`: the next batch, or the first of the next epoch."""
        pos = self._check(position)
        if pos.batch_index + 1 < self.steps_per_epoch:
            return SamplerPosition(epoch=pos.epoch, batch_index=pos.batch_index + 1)
        return SamplerPosition(epoch=pos.epoch + 1, batch_index=0)

    def position_at_step(self, step: int) -> SamplerPosition:
        """The position of the `step`-th batch (from 0) of a run that started at epoch 0."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, batch_index = divmod(step, self.steps_per_epoch)
        return SamplerPosition(epoch=epoch, batch_index=batch_index)

    def _check(self, position: Mapping[str, int]) -> SamplerPosition:
        pos = SamplerPosition.from_dict(position)
        if pos.batch_index >= self.steps_per_epoch:
            raise ValueError(f"batch_index {pos.batch_index} is past the end of an epoch of "
                             f"{self.steps_per_epoch} batches (dataset_size "
                             f"{self.dataset_size}, global batch {self.global_batch_size})")
        return pos
