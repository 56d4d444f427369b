"""KFP component `fan_out_checkpoints`.

No `from __future__ import annotations` here: KFP reads the parameter annotations at
decoration time and needs real types, not strings.
"""

from kfp import dsl

from vertex_patterns.pipelines.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def fan_out_checkpoints(
    source_dir: str,
    replica_dirs: list,  # KFP accepts only a bare `list`
    metrics: dsl.Output[dsl.Metrics],
    follow: bool = False,
    until_marker: str = "",
    poll_seconds: int = 30,
    timeout_seconds: int = 0,
) -> None:
    """Copies committed checkpoints to backup regions, once or until training ends.

    Each committed checkpoint missing from a replica is copied data files first, manifest
    last, so a replica never lists a partial checkpoint; gs→gs copies are server-side. With
    `follow`, run it next to the training task: it makes a pass every `poll_seconds` until
    `until_marker` exists, then a final pass. A failing pass is retried at the next one.
    Turn KFP caching off for this task (`task.set_caching_options(False)`).

    Args:
        source_dir: The checkpoint directory the training job writes (`gs://bucket/prefix`).
        replica_dirs: One or more backup directories, e.g. in other regions' buckets.
        metrics: `checkpoints_copied`, `files_copied`, `bytes_copied`, `bytes_through_client`
            (0 for gs→gs), and `lag_steps_<i>`, `lag_seconds_<i>` for the i-th replica after
            the last pass.
        follow: Keep fanning out until `until_marker` exists (which it then requires).
        until_marker: URI of an object that ends `follow`, e.g. written when training ends.
        poll_seconds: Seconds between passes with `follow`.
        timeout_seconds: Stop following after this long (0: wait for the marker).

    Raises:
        RuntimeError: The last pass failed for some replica, or `follow` timed out (the
            outputs are written first).
    """
    from vertex_patterns.checkpoint.follow import follow_fan_out

    if follow != bool(until_marker):
        raise ValueError("follow and until_marker go together: set both or neither")
    summary = follow_fan_out(source_dir, list(replica_dirs), until_marker=until_marker or None,
                             poll_seconds=poll_seconds, timeout_seconds=timeout_seconds or None)
    for name, value in summary.metrics().items():
        metrics.log_metric(name, value)
    if not summary.ok:
        raise RuntimeError("checkpoint fan-out failed:\n" + summary.to_table())
