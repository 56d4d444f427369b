"""Google Cloud Storage backend on google-cloud-storage, with our own retry policy.

Every call passes `retry=None` to the client library and goes through `RetryPolicy.call`, so a
transient failure is retried in one place with one budget. Writes carry generation
preconditions (`if_generation_match`), which makes them idempotent: when a retried write meets
a failed precondition, the object is checked and accepted if it already holds our bytes.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from vertex_patterns.errors import NotFoundError, PreconditionFailedError, TransientError
from vertex_patterns.storage.base import ObjectInfo
from vertex_patterns.storage.checksum import HashingWriter, crc32c_bytes
from vertex_patterns.storage.local import atomic_write
from vertex_patterns.storage.retry import DEFAULT_RETRY, RetryPolicy
from vertex_patterns.storage.uri import StorageUri

T = TypeVar("T")

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
# (connect, read) seconds for each HTTP request.
TIMEOUT = (10.0, 120.0)


def _info(blob: storage.Blob, key: str) -> ObjectInfo:
    updated = blob.updated
    if updated is not None and updated.tzinfo is None:
        updated = updated.replace(tzinfo=dt.timezone.utc)
    return ObjectInfo(
        uri=f"gs://{blob.bucket.name}/{blob.name}",
        key=key,
        size=int(blob.size or 0),
        crc32c=blob.crc32c,
        md5=blob.md5_hash,
        generation=int(blob.generation) if blob.generation is not None else None,
        updated=updated,
    )


class _BufferSink:
    """A write-only file object collecting bytes in one bytearray."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        return len(data)

    def flush(self) -> None:
        return None


class GcsBackend:
    """`gs://` locations through one google-cloud-storage client per thread.

    Args:
        endpoint: An explicit API endpoint (an emulator or proxy, `http://127.0.0.1:N`);
            anonymous credentials are used with it. None reads `STORAGE_EMULATOR_HOST`, and
            without that uses Application Default Credentials against real GCS.
        project: The project for the client; defaults to `GOOGLE_CLOUD_PROJECT`.
        retry: The retry policy for every call.
    """

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        project: str | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self.endpoint = endpoint
        self.project = project
        self.retry = retry
        self._local = threading.local()

    # -- client -------------------------------------------------------------------------
    def client(self) -> storage.Client:
        """This thread's client (requests sessions are not shared across threads)."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._make_client()
            self._local.client = client
        return client

    def _make_client(self) -> storage.Client:
        project = self.project or os.environ.get("GOOGLE_CLOUD_PROJECT")
        if self.endpoint:
            return storage.Client(
                project=project or "local",
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": self.endpoint},
            )
        if os.environ.get(EMULATOR_ENV):
            return storage.Client(project=project or "local", credentials=AnonymousCredentials())
        return storage.Client(project=project)

    def _blob(self, location: StorageUri, generation: int | None = None) -> storage.Blob:
        return self.client().bucket(location.bucket).blob(location.path, generation=generation)

    # -- reads --------------------------------------------------------------------------
    def list(self, location: StorageUri, *, with_crc32c: bool = False) -> Iterator[ObjectInfo]:
        del with_crc32c  # GCS always reports it
        prefix = location.dir_prefix()
        uri = str(location)

        def fetch() -> list[ObjectInfo]:
            blobs = self.client().list_blobs(
                location.bucket, prefix=prefix or None, retry=None, timeout=TIMEOUT
            )
            return [_info(b, b.name[len(prefix):]) for b in blobs if b.name != prefix]

        try:
            infos = self.retry.call(fetch, uri=uri, what="list")
        except NotFoundError as exc:
            raise NotFoundError(
                f"bucket gs://{location.bucket} does not exist (or is not visible to these "
                "credentials): create it or fix the URI",
                uri=uri,
            ) from exc
        yield from infos

    def bucket_exists(self, location: StorageUri) -> bool:
        """True when the bucket answers a listing (needs only object-list permission)."""

        def probe() -> bool:
            blobs = self.client().list_blobs(
                location.bucket, max_results=1, retry=None, timeout=TIMEOUT
            )
            list(blobs)
            return True

        try:
            return self.retry.call(probe, uri=f"gs://{location.bucket}", what="probe bucket")
        except NotFoundError:
            return False

    def stat(self, location: StorageUri, *, with_crc32c: bool = True) -> ObjectInfo | None:
        del with_crc32c
        uri = str(location)

        def fetch() -> ObjectInfo | None:
            blob = self.client().bucket(location.bucket).get_blob(
                location.path, retry=None, timeout=TIMEOUT
            )
            return None if blob is None else _info(blob, "")

        return self.retry.call(fetch, uri=uri, what="stat")

    def read_bytes(self, location: StorageUri) -> bytes:
        return self.retry.call(
            lambda: self._blob(location).download_as_bytes(
                retry=None, timeout=TIMEOUT, raw_download=True, checksum=None
            ),
            uri=str(location),
            what="read",
        )

    def download_file(
        self, location: StorageUri, local_path: str, *, crc32c: str | None = None
    ) -> tuple[ObjectInfo, str]:
        """Streams the object to `local_path` atomically, verified before the rename."""
        uri = str(location)
        source = self.stat(location)
        if source is None:
            raise NotFoundError(f"{uri}: not found", uri=uri)
        expected = crc32c or source.crc32c

        def fetch() -> str:
            blob = self._blob(location)
            # Pin the generation listed above, so the bytes match the checksum we compare with.
            with atomic_write(local_path) as f:
                writer = HashingWriter(f)
                blob.download_to_file(
                    writer,
                    raw_download=True,
                    checksum=None,
                    if_generation_match=source.generation,
                    retry=None,
                    timeout=TIMEOUT,
                )
                if expected is not None and writer.crc32c != expected:
                    # Raised inside the with-block: the temporary file is dropped, never renamed.
                    raise TransientError(
                        f"{uri}: downloaded bytes have CRC32C {writer.crc32c}, "
                        f"expected {expected}",
                        uri=uri,
                    )
            return writer.crc32c

        return source, self.retry.call(fetch, uri=uri, what="download")

    # -- writes -------------------------------------------------------------------------
    def _accept_if_already_written(
        self, exc: PreconditionFailedError, location: StorageUri, crc32c: str
    ) -> ObjectInfo:
        """After a failed precondition, accepts the object if an earlier try of ours wrote it."""
        current = self.stat(location)
        if current is not None and current.crc32c == crc32c:
            return current
        raise exc

    def write_bytes(self, location: StorageUri, data: bytes) -> ObjectInfo:
        uri = str(location)
        crc = crc32c_bytes(data)
        current = self.stat(location)
        generation = current.generation if current is not None else 0

        def put() -> ObjectInfo:
            blob = self._blob(location)
            blob.upload_from_string(
                data,
                if_generation_match=generation,
                retry=None,
                timeout=TIMEOUT,
                checksum=None,
            )
            return _info(blob, "")

        try:
            return self.retry.call(put, uri=uri, what="write")
        except PreconditionFailedError as exc:
            return self._accept_if_already_written(exc, location, crc)

    def write_stream(
        self,
        location: StorageUri,
        produce: Callable[[BinaryIO], T],
        *,
        chunk_size: int = 16 * 1024 * 1024,
    ) -> T:
        """Streams what `produce` writes into a new object (resumable upload in chunks).

        The object must not exist yet (`if_generation_match=0`). On a transient failure the
        whole object is produced again, so `produce` must be repeatable.
        """

        def put() -> T:
            blob = self._blob(location)
            blob.chunk_size = chunk_size
            with blob.open("wb", ignore_flush=True, if_generation_match=0, retry=None) as w:
                return produce(w)

        return self.retry.call(put, uri=str(location), what="write")

    def read_into_buffer(self, location: StorageUri) -> bytearray:
        """Downloads a whole object into a new writable buffer (for zero-copy tensor views)."""
        uri = str(location)

        def fetch() -> bytearray:
            sink = _BufferSink()
            self._blob(location).download_to_file(
                sink, raw_download=True, checksum=None, retry=None, timeout=TIMEOUT
            )
            return sink.buffer

        return self.retry.call(fetch, uri=uri, what="read")

    def upload_file(
        self,
        local_path: str,
        location: StorageUri,
        *,
        expected_generation: int | None = None,
        crc32c: str | None = None,
    ) -> ObjectInfo:
        """Streams a local file up; large files go as a resumable upload.

        Args:
            local_path: The file to send.
            location: The destination object.
            expected_generation: The destination's generation as last seen (0 when absent),
                used as the write precondition; None stats the destination first.
            crc32c: The source checksum if known, to accept an earlier try's write on a
                failed precondition.
        """
        uri = str(location)
        if expected_generation is None:
            current = self.stat(location)
            expected_generation = current.generation if current is not None else 0
        size = os.path.getsize(local_path)

        def put() -> ObjectInfo:
            blob = self._blob(location)
            with open(local_path, "rb") as f:
                blob.upload_from_file(
                    f,
                    size=size,
                    if_generation_match=expected_generation,
                    retry=None,
                    timeout=TIMEOUT,
                    # The library sends/validates the CRC32C so real GCS rejects damaged bytes.
                    checksum="crc32c",
                )
            return _info(blob, "")

        try:
            return self.retry.call(put, uri=uri, what="upload")
        except PreconditionFailedError as exc:
            if crc32c is None:
                raise
            return self._accept_if_already_written(exc, location, crc32c)

    def rewrite(
        self,
        source: ObjectInfo,
        location: StorageUri,
        *,
        expected_generation: int | None,
    ) -> ObjectInfo:
        """Server-side copy with the rewrite API: object bytes never pass through the client.

        Loops on the rewrite token, so large and cross-location copies complete; each call of
        the loop is retried on its own.
        """
        src = StorageUri("gs", *source.uri[5:].split("/", 1))
        uri = str(location)
        if expected_generation is None:
            current = self.stat(location)
            expected_generation = current.generation if current is not None else 0
        client = self.client()
        src_blob = client.bucket(src.bucket).blob(src.path)
        dst_blob = client.bucket(location.bucket).blob(location.path)
        token: str | None = None

        def step() -> str | None:
            new_token, _done, _total = dst_blob.rewrite(
                src_blob,
                token=token,
                if_generation_match=expected_generation,
                if_source_generation_match=source.generation,
                retry=None,
                timeout=TIMEOUT,
            )
            return new_token

        try:
            while True:
                token = self.retry.call(step, uri=uri, what="rewrite")
                if token is None:
                    break
        except PreconditionFailedError as exc:
            if source.crc32c is None:
                raise
            return self._accept_if_already_written(exc, location, source.crc32c)
        return _info(dst_blob, "")

    def delete(self, location: StorageUri, *, generation: int | None = None) -> None:
        def drop() -> None:
            self._blob(location).delete(
                if_generation_match=generation, retry=None, timeout=TIMEOUT
            )

        try:
            self.retry.call(drop, uri=str(location), what="delete")
        except NotFoundError:
            # Already gone: deleting is idempotent (an earlier try may have succeeded).
            return
