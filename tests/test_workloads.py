"""Workload plug-ins, the built-in workloads, and the seekable sampler.

Factories are resolved from real modules (a user module written to a temp dir and put on
sys.path), the built-ins train for real on their bundled data, and the sampler is checked
against plain iteration.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from vertex_patterns.errors import ConfigError
from vertex_patterns.training import (
    EpochSampler,
    SamplerPosition,
    Workload,
    resolve_workload,
    workload_fingerprint,
)
from vertex_patterns.training.workloads import digits, tiny_lm

CPU = torch.device("cpu")
BUILTINS = ["digits", "tiny-lm"]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Trains on one core, so tests share the machine politely; restores the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train(workload: Workload, steps: int, seed: int = 0) -> float:
    """Runs `steps` plain optimizer steps on sampler batches; returns the last training loss."""
    sampler = EpochSampler(workload.dataset_size, workload.batch_size, seed)
    position = sampler.start_position()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        batch = workload.get_batch(sampler.batch_ids(position))
        position = sampler.next_position(position)
        workload.optimizer.zero_grad(set_to_none=True)
        loss = workload.loss_fn(workload.model, batch)
        loss.backward()
        if workload.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(workload.model.parameters(), workload.grad_clip)
        workload.optimizer.step()
        if workload.scheduler is not None:
            workload.scheduler.step()
    return float(loss.detach())


def build(name: str, seed: int = 0, **kwargs: Any) -> Workload:
    return resolve_workload(name)(seed=seed, device=CPU, **kwargs)


# -- resolving factories ------------------------------------------------------------------
USER_MODULE = '''
import torch
from vertex_patterns.training import Workload

def build(*, seed, device):
    model = torch.nn.Linear(2, 1)
    return Workload(
        name="user-linear", model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1), scheduler=None,
        dataset_size=8, batch_size=2,
        get_batch=lambda ids: ids.float().view(-1, 1).repeat(1, 2),
        loss_fn=lambda m, x: m(x).pow(2).mean(), evaluate=None, config={"seed": seed})

class Factories:
    @staticmethod
    def build(*, seed, device):
        return build(seed=seed, device=device)

NOT_CALLABLE = 3
'''


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A user workload package on sys.path, plus one whose own import fails."""
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "workloads.py").write_text(USER_MODULE)
    (package / "broken.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "userpkg.workloads"
    for name in ("userpkg", "userpkg.workloads", "userpkg.broken"):
        sys.modules.pop(name, None)


class TestResolveWorkload:
    """Built-in names and `module:function` references resolve to factories that build."""

    def test_builtin_names(self) -> None:
        assert resolve_workload("digits") is digits.build
        assert resolve_workload("tiny-lm") is tiny_lm.build

    def test_reference_to_a_builtin_module(self) -> None:
        assert resolve_workload("vertex_patterns.training.workloads.digits:build") is \
            digits.build

    def test_user_module_function_and_dotted_attribute(self, user_module: str) -> None:
        for ref in (f"{user_module}:build", f"{user_module}:Factories.build"):
            workload = resolve_workload(ref)(seed=3, device=CPU)
            assert workload.name == "user-linear"
            assert workload.config == {"seed": 3}


class TestResolveWorkloadErrors:
    """Every bad name or reference is a one-line ConfigError that says what to do."""

    @pytest.mark.parametrize(("ref", "expected"), [
        ("no-such-workload", "unknown workload 'no-such-workload'"),
        ("", "unknown workload ''"),
        ("userpkg.workloads:", "malformed workload reference"),
        (":build", "malformed workload reference"),
        ("a:b:c", "malformed workload reference"),
        ("user pkg:build", "malformed workload reference"),
        ("userpkg.no_such_module:build", "cannot import workload module 'userpkg.no_such_module'"),
        ("userpkg.broken:build", "no_such_dependency_xyz"),
        ("userpkg.workloads:missing", "has no attribute 'missing'"),
        ("userpkg.workloads:Factories.missing", "has no attribute 'Factories.missing'"),
        ("userpkg.workloads:NOT_CALLABLE", "names an object of type int, not a function"),
    ])
    def test_message(self, user_module: str, ref: str, expected: str) -> None:
        with pytest.raises(ConfigError) as info:
            resolve_workload(ref)
        message = str(info.value)
        assert expected in message
        assert "\n" not in message
        assert ("digits" in message and "tiny-lm" in message) or "factory function" in message


class TestWorkloadValidation:
    """A workload with an impossible size or a config that is not JSON is refused."""

    def _workload(self, **overrides: Any) -> Workload:
        model = torch.nn.Linear(1, 1)
        fields: dict[str, Any] = dict(
            name="w", model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            scheduler=None, dataset_size=4, batch_size=2, get_batch=lambda ids: ids,
            loss_fn=lambda m, b: m(b.float().view(-1, 1)).sum(), evaluate=None,
            config={"lr": 0.1})
        fields.update(overrides)
        return Workload(**fields)

    @pytest.mark.parametrize(("overrides", "expected"), [
        ({"dataset_size": 0}, "dataset_size must be >= 1"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"grad_clip": 0.0}, "grad_clip must be a positive number"),
        ({"grad_clip": float("nan")}, "grad_clip must be a positive number"),
        ({"config": {"t": torch.zeros(1)}}, "config must hold only JSON values"),
        ({"config": {"lr": float("nan")}}, "config must hold only JSON values"),
        ({"config": [1]}, "config must be a dict"),
        ({"name": ""}, "name must not be empty"),
    ])
    def test_refused(self, overrides: dict[str, Any], expected: str) -> None:
        with pytest.raises(ConfigError, match=expected):
            self._workload(**overrides)

    def test_valid(self) -> None:
        assert self._workload(grad_clip=None).grad_clip is None


class TestFingerprint:
    """The fingerprint changes with the name or any config value, not with key order."""

    def test_fingerprint(self) -> None:
        model = torch.nn.Linear(1, 1)

        def make(name: str, config: dict[str, Any]) -> Workload:
            return Workload(name=name, model=model,
                            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                            scheduler=None, dataset_size=4, batch_size=2,
                            get_batch=lambda ids: ids, loss_fn=lambda m, b: b.sum(),
                            evaluate=None, config=config)

        base = workload_fingerprint(make("a", {"lr": 0.1, "layers": [1, 2]}))
        assert len(base) == 16 and int(base, 16) >= 0
        assert workload_fingerprint(make("a", {"layers": [1, 2], "lr": 0.1})) == base
        assert workload_fingerprint(make("a", {"lr": 0.2, "layers": [1, 2]})) != base
        assert workload_fingerprint(make("a", {"lr": 0.1, "layers": [2, 1]})) != base
        assert workload_fingerprint(make("b", {"lr": 0.1, "layers": [1, 2]})) != base

    @pytest.mark.parametrize("name", BUILTINS)
    def test_builtin_hyperparameters_change_it(self, name: str) -> None:
        assert workload_fingerprint(build(name)) == workload_fingerprint(build(name, seed=9))
        assert workload_fingerprint(build(name)) != \
            workload_fingerprint(build(name, batch_size=7))


# -- the built-in factories ---------------------------------------------------------------
class TestFactoriesDeterministic:
    """The same seed builds bit-identical parameters; another seed builds different ones; the
    global RNG is left as it was."""

    @pytest.mark.parametrize("name", BUILTINS)
    def test_seeded(self, name: str) -> None:
        torch.manual_seed(12345)
        rng_before = torch.get_rng_state()
        a, b, c = build(name, seed=1), build(name, seed=1), build(name, seed=2)
        assert torch.equal(torch.get_rng_state(), rng_before)
        pa, pb, pc = (dict(w.model.named_parameters()) for w in (a, b, c))
        assert pa.keys() == pb.keys() == pc.keys()
        assert all(torch.equal(pa[k], pb[k]) for k in pa)
        assert not all(torch.equal(pa[k], pc[k]) for k in pa)
        assert a.config == b.config == c.config
        json.dumps(a.config)


class TestGetBatchPure:
    """`get_batch` depends only on the ids: not on call order, global RNG, or the build."""

    @pytest.mark.parametrize("name", BUILTINS)
    def test_pure(self, name: str) -> None:
        first, rebuilt = build(name), build(name, seed=5)
        ids = torch.tensor([3, 0, first.dataset_size - 1, 3], dtype=torch.int64)
        expected = first.get_batch(ids)
        torch.manual_seed(999)
        first.get_batch(torch.tensor([1, 2]))
        for batch in (first.get_batch(ids), rebuilt.get_batch(ids)):
            assert all(torch.equal(x, y) for x, y in zip(batch, expected, strict=True))
        rows = [first.get_batch(ids[i:i + 1]) for i in range(len(ids))]
        for part, whole in zip(zip(*rows, strict=True), expected, strict=True):
            assert torch.equal(torch.cat(part), whole)
        assert all(torch.equal(x[0], x[3]) for x in expected)
        assert not all(torch.equal(x[0], x[1]) for x in expected)


class TestDigitsLearns:
    """The digits MLP passes 0.9 held-out accuracy within 300 steps."""

    def test_learns(self) -> None:
        workload = build("digits")
        assert workload.evaluate is not None
        before = workload.evaluate(workload.model)
        train(workload, 300)
        after = workload.evaluate(workload.model)
        assert before["accuracy"] < 0.5
        assert after["accuracy"] >= 0.9
        assert after["loss"] < before["loss"] / 4
        assert workload.model.training


class TestTinyLmLearns:
    """tiny-lm's held-out loss starts near ln(256) and falls well below it in 150 small steps;
    its batches are next-byte pairs."""

    def test_learns(self) -> None:
        workload = build("tiny-lm", batch_size=8)
        assert workload.evaluate is not None
        before = workload.evaluate(workload.model)
        assert abs(before["loss"] - 5.545) < 0.3
        train(workload, 150)
        after = workload.evaluate(workload.model)
        assert after["loss"] < before["loss"] - 2.0
        assert after["perplexity"] == pytest.approx(2.718281828 ** after["loss"], rel=1e-6)

    def test_batches_are_shifted_windows(self) -> None:
        workload = build("tiny-lm", batch_size=4, context=32)
        x, y = workload.get_batch(torch.arange(4))
        assert x.shape == y.shape == (4, 32) and x.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])
        assert workload.config["held_out_bytes"] > 0
        assert workload.config["train_bytes"] // 32 == workload.dataset_size

    def test_too_little_source(self, tmp_path: Path) -> None:
        (tmp_path / "a.py").write_text("x = 1\n")
        with pytest.raises(ConfigError, match=r"only .* bytes of Python source"):
            build("tiny-lm", stdlib_dir=str(tmp_path))
        with pytest.raises(ConfigError, match="cannot list the standard library"):
            build("tiny-lm", stdlib_dir=str(tmp_path / "missing"))


# -- the sampler --------------------------------------------------------------------------
def iterate(sampler: EpochSampler, steps: int) -> list[tuple[SamplerPosition, torch.Tensor]]:
    position, out = sampler.start_position(), []
    for _ in range(steps):
        out.append((position, sampler.batch_ids(position)))
        position = sampler.next_position(position)
    return out


class TestSamplerEpochCoverage:
    """Across all ranks, an epoch uses every id at most once, and all but the dropped
    remainder (fewer than one global batch) exactly once."""

    @pytest.mark.parametrize(("size", "batch", "world"), [(103, 4, 3), (96, 4, 3), (7, 7, 1)])
    def test_coverage(self, size: int, batch: int, world: int) -> None:
        samplers = [EpochSampler(size, batch, seed=11, rank=r, world_size=world)
                    for r in range(world)]
        steps = samplers[0].steps_per_epoch
        assert steps == size // (batch * world)
        for epoch in range(2):
            ids = torch.cat([ids for s in samplers for _, ids in iterate(s, steps * (epoch + 1))
                             [steps * epoch:]])
            assert len(ids) == len(set(ids.tolist())) == steps * batch * world
            assert size - len(ids) < batch * world
            assert set(ids.tolist()) <= set(range(size))
        assert samplers[0].next_position(SamplerPosition(epoch=0, batch_index=steps - 1)) == \
            SamplerPosition(epoch=1, batch_index=0)


class TestSamplerRankSlices:
    """At every position the ranks' slices are disjoint and together form the global batch."""

    def test_disjoint(self) -> None:
        samplers = [EpochSampler(50, 3, seed=2, rank=r, world_size=4) for r in range(4)]
        for step in range(12):
            position = samplers[0].position_at_step(step)
            slices = [s.batch_ids(position) for s in samplers]
            assert len(set(torch.cat(slices).tolist())) == 12
            assert torch.equal(torch.cat(slices), samplers[2].global_batch_ids(position))


class TestSamplerSeek:
    """Seeking to a stored position gives the same ids as iterating to it."""

    def test_seek_equals_iterate(self) -> None:
        iterated = iterate(EpochSampler(37, 5, seed=4, rank=1, world_size=2), 40)
        for step in (0, 1, 2, 3, 4, 17, 39):
            position, ids = iterated[step]
            stored = json.loads(json.dumps(dict(position)))
            fresh = EpochSampler(37, 5, seed=4, rank=1, world_size=2)
            assert fresh.position_from_dict(stored) == position
            assert fresh.position_at_step(step) == position
            assert torch.equal(fresh.batch_ids(stored), ids)

    def test_position_round_trip(self) -> None:
        position = SamplerPosition(epoch=3, batch_index=2)
        assert position.to_dict() == dict(position) == {"epoch": 3, "batch_index": 2}
        assert SamplerPosition.from_dict(position.to_dict()) == position


class TestSamplerOrder:
    """Epochs of one seed differ; the same (seed, epoch) repeats exactly; seeds differ."""

    def test_order(self) -> None:
        a, b, c = EpochSampler(64, 8, seed=1), EpochSampler(64, 8, seed=1), \
            EpochSampler(64, 8, seed=2)
        assert not torch.equal(a.permutation(0), a.permutation(1))
        assert torch.equal(a.permutation(5), b.permutation(5))
        assert not torch.equal(a.permutation(0), c.permutation(0))
        assert sorted(a.permutation(2).tolist()) == list(range(64))


class TestSamplerRefusals:
    """Impossible sizes are ConfigErrors; positions that do not fit are ValueErrors."""

    @pytest.mark.parametrize(("args", "expected"), [
        ((10, 6, 0, 0, 2), "needs batch_size 6 x world_size 2 = 12 samples"),
        ((10, 0, 0), "batch_size must be >= 1"),
        ((0, 1, 0), "dataset_size must be >= 1"),
        ((10, 1, 0, 2, 2), r"rank must be in \[0, 2\)"),
        ((10, 1, 0, 0, 0), "world_size must be >= 1"),
    ])
    def test_config(self, args: tuple[int, ...], expected: str) -> None:
        with pytest.raises(ConfigError, match=expected):
            EpochSampler(*args)

    @pytest.mark.parametrize("data", [
        {"epoch": 0, "batch_index": 5}, {"epoch": -1, "batch_index": 0},
        {"epoch": 0}, {"epoch": True, "batch_index": 0}, {"epoch": 0.0, "batch_index": 0},
    ])
    def test_position(self, data: dict[str, Any]) -> None:
        sampler = EpochSampler(10, 2, seed=0)
        with pytest.raises(ValueError):
            sampler.position_from_dict(data)
        with pytest.raises(ValueError):
            sampler.batch_ids(data)
