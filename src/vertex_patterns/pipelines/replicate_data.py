"""KFP component `replicate_data`.

No `from __future__ import annotations` here: KFP reads the parameter annotations at
decoration time and needs real types, not strings.
"""

from kfp import dsl

from vertex_patterns.pipelines.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def replicate_data(
    source_uri: str,
    destination_uris: list,  # KFP accepts only a bare `list`
    metrics: dsl.Output[dsl.Metrics],
    report: dsl.Output[dsl.Markdown],
    delete: bool = False,
    allow_empty_source: bool = False,
    workers: int = 8,
) -> None:
    """Replicates training data from one prefix to regional buckets, verified by CRC32C.

    Incremental: objects whose size and CRC32C already match at a destination are skipped,
    so re-running copies nothing. gs→gs copies are server-side rewrites. Turn KFP caching
    off for this task (`task.set_caching_options(False)`): the source may have changed even
    when the inputs did not.

    Args:
        source_uri: `gs://bucket/prefix` (or a local directory) to copy from.
        destination_uris: One or more `gs://bucket/prefix` destinations.
        metrics: Objects and bytes per destination: `d<i>_copied`, `d<i>_skipped`,
            `d<i>_failed`, `d<i>_bytes_copied`, `d<i>_bytes_through_client` for the i-th
            destination, and `ok` (1 or 0).
        report: The replication report as a Markdown table.
        delete: Delete destination objects the source does not have.
        allow_empty_source: Let `delete` run when the source lists no objects.
        workers: Objects copied in parallel.

    Raises:
        RuntimeError: Any object failed to copy or verify (the outputs are written first).
    """
    from vertex_patterns.replication import replicate

    result = replicate(source_uri, list(destination_uris), delete=delete,
                       allow_empty_source=allow_empty_source, workers=workers, progress=False)
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    with open(report.path, "w") as f:
        f.write(result.to_markdown())
    if not result.ok:
        raise RuntimeError("replication failed:\n" + result.to_table())
