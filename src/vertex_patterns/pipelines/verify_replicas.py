"""KFP component `verify_replicas`.

No `from __future__ import annotations` here: KFP reads the parameter annotations at
decoration time and needs real types, not strings.
"""

from kfp import dsl

from vertex_patterns.pipelines.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def verify_replicas(
    source_uri: str,
    replica_uris: list,  # KFP accepts only a bare `list`
    metrics: dsl.Output[dsl.Metrics],
    report: dsl.Output[dsl.Markdown],
) -> None:
    """Checks that every replica holds the source's objects with the same size and CRC32C.

    Read-only. Run it after `replicate_data` (the `data_replication` pipeline does) to prove
    the replicas from listings alone; objects a replica has beyond the source are reported,
    not failed. Turn KFP caching off (`task.set_caching_options(False)`): the buckets change
    while the inputs do not.

    Args:
        source_uri: `gs://bucket/prefix` (or a local directory) replicated from.
        replica_uris: The replica prefixes.
        metrics: `objects`, `ok` (1 or 0), and `r<i>_missing`, `r<i>_mismatched`,
            `r<i>_extra` for the i-th replica.
        report: One row per replica and the first differing keys, as Markdown.

    Raises:
        RuntimeError: Some replica misses or differs in an object (outputs written first).
    """
    from vertex_patterns.replication.verify import verify_replicas as verify

    result = verify(source_uri, list(replica_uris))
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    with open(report.path, "w") as f:
        f.write(result.to_markdown())
    if not result.ok:
        raise RuntimeError("replicas differ from the source:\n" + result.to_table())
