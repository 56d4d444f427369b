"""KFP component `verify_checkpoints`.

No `from __future__ import annotations` here: KFP reads the parameter annotations at
decoration time and needs real types, not strings.
"""

from kfp import dsl

from vertex_patterns.pipelines.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def verify_checkpoints(
    checkpoint_dir: str,
    metrics: dsl.Output[dsl.Metrics],
    report: dsl.Output[dsl.Markdown],
    step: int = -1,
) -> None:
    """Checks every file of committed checkpoints against their manifests (size, CRC32C).

    Read-only: a damaged checkpoint is reported, not moved aside. A step directory whose
    manifest is malformed or names files outside it counts as damaged; one without a
    manifest is an uncommitted save and is not checked. Useful before promoting or
    resuming from a checkpoint directory, e.g. a replica in another region.

    Args:
        checkpoint_dir: The checkpoint directory (`gs://bucket/prefix`).
        metrics: `checked` and `damaged` checkpoint counts.
        report: One row per checkpoint and one line per damaged file, as Markdown.
        step: Only this committed step; -1 checks all.

    Raises:
        RuntimeError: Some checkpoint is damaged (the outputs are written first).
        ValueError: `step` is not committed, or the directory or bucket does not exist.
    """
    from vertex_patterns.checkpoint.inspect import verify_checkpoints as verify

    result = verify(checkpoint_dir, None if step < 0 else step)
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    with open(report.path, "w") as f:
        f.write(result.to_markdown())
    if not result.ok:
        raise RuntimeError("damaged checkpoints:\n" + result.to_table())
