"""KFP components: checked-in YAML matches a fresh compile, and components run under kfp.local."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import read_tree, write_tree
from vertex_patterns.storage import Storage

REPO = Path(__file__).resolve().parents[1]


def _normalise(text: str) -> str:
    # The KFP SDK version stamp differs between installs; everything else must match.
    return "\n".join(line for line in text.splitlines() if "sdkVersion" not in line)


class TestGoldenFiles:
    """components/*.yaml is exactly what `vertex-patterns compile` produces now."""

    def test_compiled_components_are_current(self, tmp_path) -> None:
        from vertex_patterns.pipelines.compile import compile_all

        written = compile_all(str(tmp_path))
        assert written, "nothing compiled"
        for path in written:
            rel = os.path.relpath(path, tmp_path)
            checked_in = REPO / rel
            assert checked_in.exists(), f"{rel} is not checked in: run `vertex-patterns compile`"
            assert _normalise(checked_in.read_text()) == _normalise(Path(path).read_text()), (
                f"{rel} is stale: run `vertex-patterns compile` and commit the result")

    def test_image_is_versioned_constant(self) -> None:
        from vertex_patterns import __version__
        from vertex_patterns.pipelines.image import IMAGE

        text = (REPO / "components" / "replicate_data.yaml").read_text()
        assert f"image: {IMAGE}" in text and IMAGE.endswith(f":{__version__}")


class TestReplicateDataComponent:
    """replicate_data runs under kfp.local against the emulator and reports its metrics."""

    def test_runs_locally(self, store: Storage, make_bucket, kfp_local) -> None:
        from vertex_patterns.pipelines.replicate_data import replicate_data

        files = {"a.bin": os.urandom(5000), "dir/b.bin": os.urandom(7000)}
        src = f"gs://{make_bucket('src')}/data"
        write_tree(store, src, files)
        dests = [f"gs://{make_bucket('us')}/data", f"gs://{make_bucket('eu')}/data"]
        task = replicate_data(source_uri=src, destination_uris=dests)
        for dest in dests:
            assert read_tree(store, dest) == files
        metrics = task.outputs["metrics"].metadata
        assert metrics["d0_copied"] == 2 and metrics["d1_copied"] == 2
        assert metrics["d0_bytes_copied"] == 12000 and metrics["d0_bytes_through_client"] == 0
        assert metrics["ok"] == 1
        report_path = task.outputs["report"].path
        assert "OK" in Path(report_path).read_text()
        # A second run copies nothing.
        again = replicate_data(source_uri=src, destination_uris=dests)
        assert again.outputs["metrics"].metadata["d0_skipped"] == 2
        assert json.dumps(again.outputs["metrics"].metadata)

    def test_failure_fails_the_task(self, store: Storage, make_bucket, kfp_local) -> None:
        from vertex_patterns.pipelines.replicate_data import replicate_data

        with pytest.raises(RuntimeError):
            replicate_data(source_uri=f"gs://{make_bucket('s')}/x",
                           destination_uris=["gs://missing-bucket-kfp/x"])
