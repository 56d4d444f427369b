"""Checkpoints of a 2-rank torch.distributed job (gloo, CPU), launched for real under torchrun.

Per mode, one scenario (three launches of `helpers/ddp_checkpoint_worker.py`):

1. train steps 0..9 uninterrupted, saving at 3 (async), 5 (blocking) and 7 (async), and
   trying saves at 4 and 6 that fail on rank 0 only;
2. resume from the newest checkpoint into differently initialised weights, train to 9;
3. flip a byte in step 7, resume again: every rank falls back to step 5, and re-saves 7.

`ddp` keeps everything replicated (no numpy needed); `fsdp` shards parameters and optimizer
moments as DTensors (FSDP2), which go through torch.distributed.checkpoint.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from vertex_patterns.checkpoint import CheckpointManager
from vertex_patterns.checkpoint.distributed import CheckpointGroup
from vertex_patterns.checkpoint.io import list_committed, verify_step
from vertex_patterns.checkpoint.layout import MANIFEST, QUARANTINE, Manifest, step_dir_name
from vertex_patterns.checkpoint.serialization import StateError
from vertex_patterns.checkpoint.sharded import (
    check_sharded_supported,
    merge_sharded,
    split_sharded,
)
from vertex_patterns.errors import ConfigError
from vertex_patterns.storage import Storage

WORKER = Path(__file__).parent / "helpers" / "ddp_checkpoint_worker.py"
LAUNCH_TIMEOUT_S = 180
SAVED = (3, 5, 7)

NO_NUMPY = importlib.util.find_spec("numpy") is None
MODES = [
    pytest.param("ddp", id="ddp"),
    pytest.param("fsdp", id="fsdp", marks=pytest.mark.skipif(
        NO_NUMPY, reason="torch.distributed.checkpoint exchanges its plans with torch's object "
                         "collectives, which need numpy; numpy is not installed")),
]


@dataclass
class Run:
    """What each rank of one launch reported, and its final full parameters."""

    reports: list[dict[str, Any]]
    params: list[dict[str, torch.Tensor]]


@dataclass
class Scenario:
    mode: str
    ckpt: Path
    layout: dict[int, list[str]]
    """Files of each step directory right after the first launch."""
    manifests: dict[int, Manifest]
    reference: Run
    resumed: Run
    fallback: Run


def launch(mode: str, ckpt: Path, out: Path, *, resume: bool = False, faults: bool = False
           ) -> Run:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(WORKER), "--mode", mode, "--dir", str(ckpt), "--out", str(out)]
    cmd += ["--resume"] * resume + ["--faults"] * faults
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks
        output, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {LAUNCH_TIMEOUT_S}s:\n{output[-4000:]}")
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{output[-6000:]}"
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    params = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    return Run(reports, params)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module", params=MODES)
def scenario(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Scenario:
    mode = request.param
    root = tmp_path_factory.mktemp(mode)
    ckpt = root / "ckpt"
    reference = launch(mode, ckpt, root / "reference", faults=True)
    layout = {s: sorted(str(p.relative_to(ckpt / step_dir_name(s)))
                        for p in (ckpt / step_dir_name(s)).rglob("*") if p.is_file())
              for s in SAVED}
    manifests = list_committed(Storage(), str(ckpt))
    resumed = launch(mode, ckpt, root / "resumed", resume=True)
    # Rank 1's shard in fsdp mode: whichever rank verifies it, all must fall back together.
    damaged = "dcp/__1_0.distcp" if mode == "fsdp" else "tensors-00000.safetensors"
    flip_byte(ckpt / step_dir_name(7) / damaged)
    fallback = launch(mode, ckpt, root / "fallback", resume=True)
    return Scenario(mode, ckpt, layout, manifests, reference, resumed, fallback)


def assert_same_params(run: Run, reference: Run) -> None:
    for rank in (0, 1):
        got, want = run.params[rank], reference.params[rank]
        assert got.keys() == want.keys()
        for name in want:
            assert torch.equal(got[name], want[name]), f"rank {rank}: {name} differs"


class TestCommittedOnce:
    """Each save commits one checkpoint, after every rank finished, with world_size 2; the
    replicated state in it is written once (one set of tensor files), not once per rank."""

    def test_every_save_committed_with_world_size_2(self, scenario: Scenario) -> None:
        assert sorted(scenario.manifests) == list(SAVED)
        for manifest in scenario.manifests.values():
            assert manifest.world_size == 2
        assert all(r["saved"] == list(SAVED) for r in scenario.reference.reports)

    def test_replicated_state_written_once(self, scenario: Scenario) -> None:
        for step in SAVED:
            files = scenario.layout[step]
            assert [f for f in files if f.endswith(".safetensors")] == \
                ["tensors-00000.safetensors"]
            assert files.count("state.json") == 1

    def test_manifest_lists_every_file_and_each_verifies(self, scenario: Scenario) -> None:
        store = Storage()
        for step, manifest in scenario.manifests.items():
            listed = sorted(f.name for f in manifest.files)
            assert sorted(f for f in scenario.layout[step] if f != MANIFEST) == listed
            # Step 7 was damaged and quarantined later; 3 and 5 are still where they were.
            if step != 7:
                verify_step(store, str(scenario.ckpt / step_dir_name(step)), manifest)

    def test_sharded_state_written_by_every_rank(self, scenario: Scenario) -> None:
        for step in SAVED:
            shards = [f for f in scenario.layout[step] if f.startswith("dcp/")]
            if scenario.mode == "ddp":
                assert shards == []
            else:
                assert "dcp/.metadata" in shards
                assert [f for f in shards if f.endswith(".distcp")] == \
                    ["dcp/__0_0.distcp", "dcp/__1_0.distcp"]

    def test_no_leftovers(self, scenario: Scenario) -> None:
        names = {p.name for p in scenario.ckpt.iterdir()}
        assert names == {step_dir_name(s) for s in SAVED} | {QUARANTINE}


class TestFailureOnOneRank:
    """A save that fails on one rank fails on every rank and commits nothing; the ranks stay
    in step, so later saves commit."""

    def test_every_rank_raises(self, scenario: Scenario) -> None:
        rank0, rank1 = (r["errors"] for r in scenario.reference.reports)
        assert sorted(rank0) == sorted(rank1) == ["4", "6"]
        # Step 4 fails while snapshotting (caller's thread), 6 in rank 0's background writer.
        assert rank0["4"].startswith("StateError") and "builtins.object" in rank0["4"]
        assert rank0["6"].startswith("StateError") and "complex64" in rank0["6"]
        for step in ("4", "6"):
            assert rank1[step].startswith("StorageError")
            assert f"checkpoint step {step} not saved: rank 0: StateError" in rank1[step]

    def test_failed_steps_not_committed(self, scenario: Scenario) -> None:
        assert sorted(scenario.manifests) == list(SAVED)


class TestResume:
    """Both ranks restore the same (newest) step and continue bit for bit like a run that was
    never interrupted."""

    def test_both_ranks_restore_the_newest_step(self, scenario: Scenario) -> None:
        assert [r["restored_step"] for r in scenario.resumed.reports] == [7, 7]
        assert all(r["trained"] == [8, 9] for r in scenario.resumed.reports)

    def test_parameters_equal_the_uninterrupted_run(self, scenario: Scenario) -> None:
        assert_same_params(scenario.resumed, scenario.reference)


class TestDamagedFallback:
    """A damaged file in the newest checkpoint, whichever rank finds it, sends every rank back
    to the same older step; the damaged one is moved aside and saved again later."""

    def test_every_rank_falls_back_to_the_same_step(self, scenario: Scenario) -> None:
        assert [r["restored_step"] for r in scenario.fallback.reports] == [5, 5]
        assert_same_params(scenario.fallback, scenario.reference)

    def test_damaged_step_quarantined_and_saved_anew(self, scenario: Scenario) -> None:
        quarantined = [p.name for p in (scenario.ckpt / QUARANTINE).iterdir()]
        assert len(quarantined) == 1 and quarantined[0].startswith(step_dir_name(7))
        assert all(r["saved"] == [7] for r in scenario.fallback.reports)
        committed = list_committed(Storage(), str(scenario.ckpt))
        assert sorted(committed) == list(SAVED)
        assert committed[7].wall_time > scenario.manifests[7].wall_time


class TestWorldSize:
    """Sharded state restores only at the world size that wrote it; replicated state
    restores at any."""

    def test_restore_in_one_process(self, scenario: Scenario) -> None:
        with CheckpointManager(str(scenario.ckpt)) as ckpt:
            if scenario.mode == "fsdp":
                with pytest.raises(ConfigError, match="written by 2 ranks; this job has 1"):
                    ckpt.restore()
            else:
                restored = ckpt.restore()
                assert restored is not None and restored.step == 7
                assert restored.manifest.world_size == 2
                assert set(restored.state) == {"model", "optim"}


class TestShardedStateSplit:
    """DTensor leaves are taken out of the state and put back by path; plain state is kept."""

    def test_plain_state_round_trips_unchanged(self) -> None:
        state = {"a": torch.ones(2), "b": [1, (2, "x")], "c": {3: None}}
        plain, sharded = split_sharded(state)
        assert sharded == {}
        merged, used = merge_sharded(plain, {})
        assert used == {} and merged["b"] == [1, (2, "x")] and merged["c"] == {3: None}

    def test_reserved_key_refused(self) -> None:
        with pytest.raises(StateError, match="reserved"):
            split_sharded({"x": {"__dcp__": "y"}})

    def test_missing_target_named(self) -> None:
        with pytest.raises(ConfigError, match="model/w"):
            merge_sharded({"model": {"w": {"__dcp__": "model/w"}}}, {})


class TestShardedConfig:
    """Sharded checkpoints need a filesystem path and an initialised process group."""

    def test_gcs_directory_refused(self) -> None:
        with pytest.raises(ConfigError, match="GCS FUSE"):
            check_sharded_supported("gs://bucket/run")

    def test_group_needs_torch_distributed(self) -> None:
        with pytest.raises(ConfigError, match="init_process_group"):
            CheckpointGroup()
