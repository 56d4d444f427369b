"""Google Cloud Storage backend on google-cloud-storage, with our own retry policy.

Every call passes `retry=None` to the client library and goes through `RetryPolicy.call`, so a
transient failure is retried in one place with one budget. Writes carry generation
preconditions (`if_generation_match`), which makes them idempotent: when a retried write meets
a failed precondition, the object is checked and accepted if it already holds our bytes.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, TypeVar

import google.api_core.exceptions as gexc
import google.auth.exceptions
import google.cloud.storage as storage
import requests
from google.auth.credentials import AnonymousCredentials

from vertex_patterns.errors import (
    IntegrityError,
    NotFoundError,
    PreconditionFailedError,
    TransientError,
)
from vertex_patterns.storage.base import ObjectInfo
from vertex_patterns.storage.checksum import (
    HashingReader,
    HashingWriter,
    crc32c_bytes,
    crc32c_extend_bytes,
    crc32c_file,
    encode_crc32c,
)
from vertex_patterns.storage.crc_cache import crc32c_file_cached, remember_read_crc32c
from vertex_patterns.storage.gcs_direct import (
    LIST_FIELDS,
    DirectHttp,
    object_info,
    skip_environment_lookups,
)
from vertex_patterns.storage.local_write import NewFile, check_unchanged
from vertex_patterns.storage.retry import DEFAULT_RETRY, RetryPolicy
from vertex_patterns.storage.uri import StorageUri

T = TypeVar("T")
log = logging.getLogger(__name__)

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
# (connect, read) seconds for each HTTP request.
TIMEOUT = (10.0, 120.0)
# Objects up to this size are downloaded with one read of the response body (and one write
# and one checksum call) instead of the client library's 8 KiB stream chunks. Larger ones are
# fetched through the library as ranged GETs of this size, each read in one piece: memory
# stays bounded by one slice per worker, and a 32 MiB object costs 4 reads instead of 4,096
# (with as many GIL hand-offs), which halves the time of parallel large downloads.
SINGLE_SHOT_MAX = 8 * 1024 * 1024
DIRECT_ENV = "VERTEX_PATTERNS_GCS_DIRECT"
"""Set to 1 to send GCS calls over `gcs_direct` instead of google-cloud-storage."""

# Files up to this size go in one request carrying their CRC32C (see `gcs_direct`); larger
# ones as the library's resumable upload. Up to DIRECT_IN_MEMORY_MAX a file is read once into
# memory and checksummed there; above, its CRC32C is taken first and the file streamed.
DIRECT_UPLOAD_MAX = 64 * 1024 * 1024
DIRECT_IN_MEMORY_MAX = 1024 * 1024

BATCH_COPY_MAX_BYTES = 1024 * 1024
"""gs→gs copies of objects up to this size may go in batch requests (`copy_batch`)."""
BATCH_MAX_CALLS = 100
"""The JSON API's limit of calls in one batch request."""
# What a whole batch request can fail with: its items then go one by one (`copy_batch`).
_BATCH_FAILURES: tuple[type[BaseException], ...] = (
    gexc.GoogleAPICallError, requests.RequestException, google.auth.exceptions.TransportError,
    ValueError, KeyError)


# (source object as listed, destination gs:// URI, destination generation as listed) per copy.
CopyItems = list[tuple[ObjectInfo, str, int]]
CopyResults = list[ObjectInfo | None]
Blobs = list[storage.Blob]


def _object_location(uri: str) -> StorageUri:
    """The bucket and name of an object's gs:// URI as listed, taken as they are (any name
    GCS stores, which `parse_uri`, meant for user input, may refuse)."""
    bucket, _, name = uri[5:].partition("/")
    return StorageUri("gs", bucket, name)


def _info(blob: storage.Blob, key: str) -> ObjectInfo:
    # The blob's own resource, read once (its properties re-parse on every access).
    resource = {"bucket": blob.bucket.name, **blob._properties, "name": blob.name}
    return object_info(resource, key)


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
        direct_upload_max: Files up to this size are uploaded in one request (see
            `upload_file`); larger ones as the library's resumable upload.
        direct: Send listings, downloads, uploads up to `direct_upload_max` and rewrites
            directly over urllib3 where that is possible (see `gcs_direct`); False sends
            every call through google-cloud-storage. None (the default) reads
            `VERTEX_PATTERNS_GCS_DIRECT`: off unless it is "1". The library is the default
            because it is the client Google maintains and the one the tests exercise; the
            direct path halves client CPU per small object and is opt-in.
        list_page_size: Objects per listing page; None leaves it to the server (1,000 on
            GCS). Each page is one request, retried on its own.
    """

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        project: str | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        direct_upload_max: int = DIRECT_UPLOAD_MAX,
        direct: bool | None = None,
        list_page_size: int | None = None,
    ) -> None:
        if direct is None:
            direct = os.environ.get(DIRECT_ENV, "") == "1"
        self.endpoint = endpoint
        self.project = project
        self.retry = retry
        self.direct_upload_max = direct_upload_max
        self.list_page_size = list_page_size
        self._local = threading.local()
        self._direct = DirectHttp(timeout=TIMEOUT, enabled=direct)

    # -- object bytes through this process ------------------------------------------
    def data_bytes(self) -> int:
        """Object bytes this thread has sent or received so far (bodies of uploads and
        downloads, every attempt counted; metadata and rewrites carry none). Callers take
        the difference around an operation to measure what passed through the client."""
        return int(getattr(self._local, "data_bytes", 0))

    def _moved(self, n: int) -> None:
        self._local.data_bytes = self.data_bytes() + n

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
            client = storage.Client(
                project=project or "local",
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": self.endpoint},
            )
        elif os.environ.get(EMULATOR_ENV):
            client = storage.Client(project=project or "local",
                                    credentials=AnonymousCredentials())
        else:
            client = storage.Client(project=project)
        skip_environment_lookups(client)
        return client

    def _bucket(self, name: str) -> storage.Bucket:
        """This thread's `Bucket` handle for `name`, made once.

        A fresh `client.bucket()` per object would be four objects in reference cycles
        (Bucket and its two ACL helpers point at each other) per object: thousands of them
        per run, which trigger full garbage collections whose pauses (20-50 ms in a large
        process) dwarf a quick incremental run.
        """
        buckets: dict[str, storage.Bucket] | None = getattr(self._local, "buckets", None)
        if buckets is None:
            buckets = self._local.buckets = {}
        bucket = buckets.get(name)
        if bucket is None:
            bucket = buckets[name] = self.client().bucket(name)
        return bucket

    def _blob(self, location: StorageUri, generation: int | None = None) -> storage.Blob:
        return self._bucket(location.bucket).blob(location.path, generation=generation)

    # -- reads --------------------------------------------------------------------------
    def list(self, location: StorageUri, *, with_crc32c: bool = False) -> Iterator[ObjectInfo]:
        del with_crc32c  # GCS always reports it
        prefix = location.dir_prefix()
        uri = str(location)

        def page_via_library(token: str | None) -> dict[str, Any]:
            blobs = self.client().list_blobs(
                location.bucket, prefix=prefix or None, retry=None, timeout=TIMEOUT,
                fields=LIST_FIELDS,  # what ObjectInfo needs: a third of the answer
                page_token=token, page_size=self.list_page_size,
            )
            page = next(blobs.pages, None)
            # The page's resources as answered: no Blob object built per item.
            items = [] if page is None else page.raw_page.get("items", [])
            return {"items": items, "nextPageToken": blobs.next_page_token}

        def fetch() -> list[ObjectInfo]:
            client = self.client()
            get_page: Callable[[str | None], dict[str, Any]]
            if self._direct.usable(client):
                get_page = functools.partial(self._direct.list_page, client, location.bucket,
                                             prefix, page_size=self.list_page_size)
            else:
                get_page = page_via_library
            infos: list[ObjectInfo] = []
            token: str | None = None
            # Each page is retried on its own, resuming from its token: a failure on page N
            # does not list pages 1..N-1 again (nor spend the deadline on them).
            while True:
                page = self.retry.call(functools.partial(get_page, token), uri=uri,
                                       what="list")
                infos.extend(object_info(r, r["name"][len(prefix):])
                             for r in page.get("items", ()) if r["name"] != prefix)
                token = page.get("nextPageToken")
                if not token:
                    return infos

        try:
            infos = fetch()
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
            blob = self._bucket(location.bucket).get_blob(
                location.path, retry=None, timeout=TIMEOUT
            )
            return None if blob is None else _info(blob, "")

        return self.retry.call(fetch, uri=uri, what="stat")

    def read_bytes(self, location: StorageUri) -> bytes:
        def fetch() -> bytes:
            data: bytes = self._blob(location).download_as_bytes(
                retry=None, timeout=TIMEOUT, raw_download=True, checksum=None)
            self._moved(len(data))
            return data

        return self.retry.call(fetch, uri=str(location), what="read")

    def download_file(
        self,
        location: StorageUri,
        local_path: str,
        *,
        crc32c: str | None = None,
        source: ObjectInfo | None = None,
    ) -> tuple[ObjectInfo, str]:
        """Streams the object to `local_path` atomically, verified before the rename.

        Args:
            location: The object.
            local_path: Where the file goes.
            crc32c: The CRC32C the bytes must have; defaults to the object's.
            source: The object's metadata as already listed (generation, size, CRC32C); the
                download is then one media GET. Without it the object is stat-ed first.
        """
        uri = str(location)
        if source is None or source.generation is None:
            source = self.stat(location)
            if source is None:
                raise NotFoundError(f"{uri}: not found", uri=uri)
        expected = crc32c or source.crc32c
        generation = source.generation
        single_shot = source.size <= SINGLE_SHOT_MAX

        def fetch() -> str:
            client = self.client()
            # Pin the generation listed, so the bytes match the checksum we compare with.
            with NewFile(local_path) as f:
                writer = HashingWriter(f)
                try:
                    self._download_into(client, location, writer, generation, source.size,
                                        single_shot)
                finally:
                    self._moved(writer.bytes_written)
                if writer.bytes_written != source.size:
                    raise TransientError(f"{uri}: downloaded {writer.bytes_written} bytes, "
                                         f"expected {source.size}", uri=uri)
                if expected is not None and writer.crc32c != expected:
                    # Raised inside the with-block: the temporary file is dropped, never renamed.
                    raise TransientError(
                        f"{uri}: downloaded bytes have CRC32C {writer.crc32c}, "
                        f"expected {expected}",
                        uri=uri,
                    )
                f.commit(writer.crc32c)
            return writer.crc32c

        return source, self.retry.call(fetch, uri=uri, what="download")

    def _download_into(self, client: storage.Client, location: StorageUri,
                       writer: HashingWriter, generation: int | None, size: int,
                       single_shot: bool) -> None:
        """One try of a download pinned to `generation` (412 if the object changed)."""
        if self._direct.usable(client):
            self._direct.download(client, location.bucket, location.path, writer,
                                  if_generation_match=generation, single_shot=single_shot)
            return
        blob = self._blob(location)
        # Every slice pins the generation listed: all come from one version.
        for start in range(0, max(size, 1), SINGLE_SHOT_MAX):
            end = min(size, start + SINGLE_SHOT_MAX) - 1
            blob.download_to_file(
                writer,
                raw_download=True,
                checksum=None,
                if_generation_match=generation,
                retry=None,
                timeout=TIMEOUT,
                single_shot_download=True,
                # A single slice is a plain GET (no Range header).
                start=None if single_shot else start,
                end=None if single_shot else end,
            )

    # -- writes -------------------------------------------------------------------------
    def _accept_if_already_written(
        self, exc: PreconditionFailedError, location: StorageUri, crc32c: str,
        size: int | None = None,
    ) -> ObjectInfo:
        """After a failed precondition, accepts the object if an earlier try of ours wrote
        it: a retried write whose first response was lost meets its own object (same CRC32C
        and, where known, size) and reports it as written, as GCS stored it."""
        current = self.stat(location)
        if current is not None and current.crc32c == crc32c \
                and (size is None or current.size == size):
            log.info("%s: precondition failed on a retried write, but the object holds our "
                     "bytes (an earlier try landed): accepted", location)
            return current
        raise exc

    def write_bytes(self, location: StorageUri, data: bytes) -> ObjectInfo:
        uri = str(location)
        crc = crc32c_bytes(data)
        current = self.stat(location)
        generation = current.generation if current is not None else 0

        def put() -> ObjectInfo:
            blob = self._blob(location)
            self._moved(len(data))
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
            return self._accept_if_already_written(exc, location, crc, len(data))

    def write_stream(
        self,
        location: StorageUri,
        produce: Callable[[BinaryIO], T],
        *,
        chunk_size: int = 16 * 1024 * 1024,
    ) -> T:
        """Streams what `produce` writes into a new object (resumable upload in chunks).

        The object must not exist yet (`if_generation_match=0`). On a transient failure the
        whole object is produced again, so `produce` must be repeatable. When a retry meets
        412 because an earlier try's upload landed but its answer was lost, the object is
        accepted if it holds what `produce` wrote (same CRC32C and size).
        """
        produced: list[tuple[str, int, T]] = []  # the last try's CRC32C, size and result

        def put() -> T:
            blob = self._blob(location)
            blob.chunk_size = chunk_size
            with blob.open("wb", ignore_flush=True, if_generation_match=0, retry=None) as w:
                writer = HashingWriter(w)
                try:
                    result = produce(writer)  # type: ignore[arg-type]  # a file's write
                finally:
                    self._moved(writer.bytes_written)
                produced[:] = [(writer.crc32c, writer.bytes_written, result)]
            return result

        try:
            return self.retry.call(put, uri=str(location), what="write")
        except PreconditionFailedError as exc:
            if not produced:
                raise
            crc, size, result = produced[0]
            self._accept_if_already_written(exc, location, crc, size)
            return result

    def read_into_buffer(self, location: StorageUri) -> bytearray:
        """Downloads a whole object into a new writable buffer (for zero-copy tensor views)."""
        uri = str(location)

        def fetch() -> bytearray:
            sink = _BufferSink()
            try:
                self._blob(location).download_to_file(
                    sink, raw_download=True, checksum=None, retry=None, timeout=TIMEOUT
                )
            finally:
                self._moved(len(sink.buffer))
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
        """Sends a local file up, verified by CRC32C.

        The CRC32C of the bytes sent must equal the one the server reports for the stored
        object (and `crc32c`, when given), and the file must not change meanwhile. How:

        - up to 1 MiB: read once into memory, checksummed there, sent in one request that
          carries the CRC32C (GCS checks it before the object exists);
        - up to `direct_upload_max`: the CRC32C taken first (remembered beside the file,
          or one read of it), then the file streamed in one such request;
        - larger, or where `gcs_direct` cannot be used: the library's resumable upload,
          checksummed while it reads (the library sends the CRC32C with the last chunk).

        Args:
            local_path: The file to send.
            location: The destination object.
            expected_generation: The destination's generation as last seen (0 when absent),
                used as the write precondition; None stats the destination first.
            crc32c: The source checksum if known (otherwise computed while sending); also
                used to accept an earlier try's write on a failed precondition.

        Raises:
            IntegrityError: The stored object's CRC32C differs from the bytes read.
        """
        uri = str(location)
        if expected_generation is None:
            current = self.stat(location)
            expected_generation = current.generation if current is not None else 0
        sent: list[str] = []  # the CRC32C of the file as read by the last attempt

        def put() -> ObjectInfo:
            client = self.client()
            with open(local_path, "rb") as f:
                before = os.fstat(f.fileno())
                started = time.time_ns()
                size = before.st_size
                # Empty files go through the library: gcp-storage-emulator drops the
                # connection on an empty simple upload (one request either way).
                direct = size > 0 and self._direct.usable(client)
                if direct:
                    self._moved(size)  # one request carrying the whole file
                if direct and size <= DIRECT_IN_MEMORY_MAX:
                    # Read once; the bytes checksummed are the bytes sent.
                    data = f.read()
                    read_crc = encode_crc32c(crc32c_extend_bytes(0, data))
                    self._check_read(local_path, f, before, read_crc, crc32c, uri)
                    remember_read_crc32c(f.fileno(), read_crc, before, started)
                    info = object_info(self._direct.upload(
                        client, location.bucket, location.path, data, size=size,
                        crc32c=read_crc, if_generation_match=expected_generation))
                elif direct and size <= self.direct_upload_max:
                    # The CRC32C first (remembered, or one read of the file), then the file
                    # streamed in one request carrying it: the server checks what it got.
                    read_crc = crc32c_file_cached(local_path)
                    self._check_read(local_path, f, before, read_crc, crc32c, uri)
                    info = object_info(self._direct.upload(
                        client, location.bucket, location.path, f, size=size,
                        crc32c=read_crc, if_generation_match=expected_generation))
                    check_unchanged(before, os.fstat(f.fileno()), local_path)
                else:
                    blob = self._blob(location)
                    reader = HashingReader(f)
                    at = f.tell()
                    try:
                        blob.upload_from_file(
                            reader,
                            size=size,
                            if_generation_match=expected_generation,
                            retry=None,
                            timeout=TIMEOUT,
                            # The library sends the CRC32C so real GCS rejects damaged bytes.
                            checksum="crc32c",
                        )
                    finally:
                        self._moved(max(f.tell() - at, reader.bytes_hashed))
                    hashed = reader.crc32c
                    if hashed is None or reader.bytes_hashed != size:
                        hashed = crc32c_file(local_path)  # the library re-read a chunk
                    read_crc = hashed
                    self._check_read(local_path, f, before, read_crc, crc32c, uri)
                    remember_read_crc32c(f.fileno(), read_crc, before, started)
                    info = _info(blob, "")
            sent[:] = [read_crc]
            if info.crc32c != read_crc:
                raise IntegrityError(
                    f"{uri}: stored CRC32C {info.crc32c} differs from the {read_crc} of the "
                    f"bytes read from {local_path}",
                    uri=uri,
                )
            return info

        try:
            return self.retry.call(put, uri=uri, what="upload")
        except PreconditionFailedError as exc:
            expected = crc32c or (sent[0] if sent else crc32c_file(local_path))
            return self._accept_if_already_written(exc, location, expected,
                                                   os.path.getsize(local_path))

    @staticmethod
    def _check_read(
        path: str,
        f: BinaryIO,
        before: os.stat_result,
        read_crc: str,
        expected: str | None,
        uri: str,
    ) -> None:
        """Raises if the file changed since `expected` was taken or while it was read."""
        if expected is not None and read_crc != expected:
            raise IntegrityError(f"{path}: read with CRC32C {read_crc}, not the {expected} "
                                 "expected (the file changed)", uri=uri)
        check_unchanged(before, os.fstat(f.fileno()), path)

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
        src = _object_location(source.uri)
        uri = str(location)
        if expected_generation is None:
            current = self.stat(location)
            expected_generation = current.generation if current is not None else 0
        client = self.client()
        direct = self._direct.usable(client)
        src_blob = None if direct else self._bucket(src.bucket).blob(src.path)
        dst_blob = None if direct else self._bucket(location.bucket).blob(location.path)
        token: str | None = None
        written: list[dict[str, Any]] = []  # the direct path's final object resource

        def step() -> str | None:
            if direct:
                answer = self._direct.rewrite(
                    client, (src.bucket, src.path), (location.bucket, location.path),
                    token=token, if_generation_match=expected_generation,
                    if_source_generation_match=source.generation)
                if answer.get("done"):
                    written[:] = [answer["resource"]]
                    return None
                return str(answer["rewriteToken"])
            assert dst_blob is not None and src_blob is not None
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
            return self._accept_if_already_written(exc, location, source.crc32c, source.size)
        if written:
            return object_info(written[0])
        assert dst_blob is not None
        return _info(dst_blob, "")

    def copy_batch(self, items: CopyItems) -> CopyResults:
        """Server-side copies of small objects, up to `BATCH_MAX_CALLS` in one batch request.

        Each copy is the library's `Bucket.copy_blob` (objects.copy, no bytes through the
        client) with both generation preconditions, deferred into one `Client.batch`: one
        HTTP exchange for up to 100 objects instead of one each, which is what limits
        replicating many small objects (the per-request cost of the client library). Only
        for objects up to `BATCH_COPY_MAX_BYTES`: objects.copy completes in one call at that
        size even across locations, where larger copies need `rewrite`'s token loop.

        Nothing is retried here. Where a copy did not happen (its own error, such as a failed
        precondition or a 503, or a failure of the whole batch request) its result is None,
        and the caller copies that object with `rewrite`, which retries and verifies.

        Args:
            items: (source object as listed, with its generation; destination gs:// URI; the
                destination's generation as last listed, 0 when absent).

        Returns:
            Per item, the destination object's metadata as the server reported it, or None.
        """
        if len(items) > BATCH_MAX_CALLS:
            raise ValueError(f"at most {BATCH_MAX_CALLS} copies per batch, got {len(items)}")
        if not items:
            return []
        client = self.client()
        written: Blobs = []
        try:
            with client.batch(raise_exception=False):
                for source, dest_uri, expected_generation in items:
                    src, dest = _object_location(source.uri), _object_location(dest_uri)
                    src_bucket = self._bucket(src.bucket)
                    written.append(src_bucket.copy_blob(
                        src_bucket.blob(src.path), self._bucket(dest.bucket), dest.path,
                        if_generation_match=expected_generation,
                        if_source_generation_match=source.generation,
                        retry=None, timeout=TIMEOUT))
        except _BATCH_FAILURES as exc:
            log.info("batch of %d copies failed as a whole (%s: %s); copying them one by one",
                     len(items), type(exc).__name__, exc)
            return [None] * len(items)
        results: CopyResults = []
        for blob in written:
            resource = blob._properties
            # A failed call leaves its error document here (or nothing, if the answer was
            # cut short): only a resource with a generation and a CRC32C is a copy.
            if isinstance(resource, dict) and resource.get("generation") is not None \
                    and resource.get("crc32c") is not None:
                results.append(_info(blob, ""))
            else:
                results.append(None)
        return results

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
