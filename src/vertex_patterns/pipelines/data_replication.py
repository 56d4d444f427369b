"""The `data_replication` pipeline: replicate a prefix to regional buckets, then verify.

No `from __future__ import annotations` here: KFP reads the parameter annotations at
decoration time and needs real types, not strings. Meant for a recurring schedule
(`vertex-patterns schedule create pipelines/data_replication.json --cron ...`): each run
copies only what changed and proves every replica from listings.
"""

from kfp import dsl

from vertex_patterns.pipelines.replicate_data import replicate_data
from vertex_patterns.pipelines.verify_replicas import verify_replicas


@dsl.pipeline(name="data-replication",
              description="Incrementally replicate a prefix to regional buckets and verify "
                          "every replica by size and CRC32C.")
def data_replication(
    source_uri: str,
    replica_uris: list,
    delete: bool = False,
    workers: int = 8,
) -> None:
    """Replicate, then verify.

    Args:
        source_uri: The prefix replicated from (`gs://bucket/prefix`).
        replica_uris: The regional replicas.
        delete: Delete replica objects the source no longer has.
        workers: Objects copied in parallel.
    """
    copy = replicate_data(source_uri=source_uri, destination_uris=replica_uris,
                          delete=delete, workers=workers)
    copy.set_caching_options(False)
    copy.set_retry(num_retries=2, backoff_duration="10s")  # incremental: safe to retry
    verify = verify_replicas(source_uri=source_uri, replica_uris=replica_uris)
    verify.after(copy)
    verify.set_caching_options(False)
    verify.set_retry(num_retries=2, backoff_duration="10s")  # read-only
