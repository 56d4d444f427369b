"""The hot GCS calls of replication, sent directly over urllib3: list, get, put, rewrite.

Copying many small objects makes one request per object: a media download (gs→local), an
upload (local→gs) or a rewrite (gs→gs). Through google-cloud-storage each such call passes
Blob, its media and connection helpers, requests and then urllib3, about half a millisecond
of CPU per object here: more than the rest of copying a small object to local disk, and what
limits a many-small-objects copy. Listings likewise build a Blob per object before we read five
fields of it. `DirectHttp` sends the same requests the library sends (same URLs, query
parameters, body and `Accept-Encoding`) through google-auth's urllib3 transport, which adds
the OAuth header and refreshes it on a 401, over one urllib3 pool shared by all threads that
keeps connections alive. It takes about half the CPU.

It is used only where the library would talk to the endpoint directly, with the CA bundle
requests would use: no proxy variable set and no client certificate (mTLS). Elsewhere
`usable` says no and the callers go through the library. Errors come out as the library's
would (`google.api_core` exceptions by HTTP status; connection failures as TransientError),
so `RetryPolicy` treats both paths alike.

Also here, for both paths: `object_info` turns an object resource into an ObjectInfo, and
`skip_environment_lookups` keeps the library's requests session from re-reading the
environment on every call.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import urllib.parse
import urllib.request
from typing import Any, BinaryIO, Protocol

import certifi
import urllib3
from google.api_core import exceptions as gexc
from google.api_core.datetime_helpers import from_rfc3339
from google.auth.transport.urllib3 import AuthorizedHttp

from vertex_patterns.errors import TransientError
from vertex_patterns.storage.base import ObjectInfo

# Chunks of the body for large objects: big enough to keep per-chunk Python work small, small
# enough that the allocator reuses them (1 MiB chunks measured slower: fresh pages each time).
STREAM_CHUNK = 256 * 1024
_USER_AGENT = "vertex-patterns"
# The object fields listings need (real GCS then sends only these).
LIST_FIELDS = "items(bucket,name,size,crc32c,md5Hash,generation,updated),nextPageToken"


class Sink(Protocol):
    """Where downloaded bytes go (a file or a hashing wrapper of one)."""

    def write(self, data: bytes) -> int:
        """Writes all of `data`."""
        ...


def _parse_time(value: str | None) -> dt.datetime | None:
    """An RFC 3339 timestamp as GCS writes it (`...T12:00:00.123Z`), in UTC.

    `fromisoformat` parses it in C; the library's `Blob.updated` goes through `strptime`,
    which costs more than all the rest of turning a listed object into an ObjectInfo.
    """
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:  # nanoseconds on Python 3.10, or another form
        parsed = from_rfc3339(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.timezone.utc)


def object_info(resource: dict[str, Any], key: str = "") -> ObjectInfo:
    """ObjectInfo from an object resource as the JSON API returns it."""
    generation = resource.get("generation")
    return ObjectInfo(
        uri=f"gs://{resource['bucket']}/{resource['name']}",
        key=key,
        size=int(resource.get("size") or 0),
        crc32c=resource.get("crc32c"),
        md5=resource.get("md5Hash"),
        generation=int(generation) if generation is not None else None,
        updated=_parse_time(resource.get("updated")),
    )


def skip_environment_lookups(client: Any) -> None:
    """Stops requests from re-reading the environment on every request.

    With `trust_env` on (the default), requests scans all of `os.environ` for proxy settings
    (twice) and looks for `~/.netrc` on every request: about half a millisecond of CPU per
    request, as much as the rest of a small download. Where no proxy variable is set, what
    it would find is read once here instead: the CA bundle (`REQUESTS_CA_BUNDLE`, then
    `CURL_CA_BUNDLE`, as requests reads them) becomes the session's `verify`. A `~/.netrc`
    entry is no longer applied; it would only replace the OAuth header with Basic auth.
    Where a proxy variable is set, nothing changes.
    """
    if urllib.request.getproxies():
        return
    session = client._http
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle and session.verify is True:
        session.verify = bundle
    session.trust_env = False


def _ca_bundle() -> str:
    # What requests verifies against: its environment variables, else certifi's bundle.
    return (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            or certifi.where())


def _object_path(bucket: str, name: str) -> str:
    return f"/b/{urllib.parse.quote(bucket)}/o/{urllib.parse.quote(name, safe='')}"


def _query(params: dict[str, Any]) -> str:
    return urllib.parse.urlencode({k: v for k, v in params.items() if v is not None},
                                  quote_via=urllib.parse.quote, safe="")


class DirectHttp:
    """Media downloads and rewrites over a shared urllib3 pool, with each client's credentials.

    Args:
        timeout: (connect, read) seconds for each request.
        maxsize: Connections kept per host (the pool never blocks; extra ones are dropped
            after use).
        enabled: False makes `usable` always say no.
    """

    def __init__(
        self, *, timeout: tuple[float, float], maxsize: int = 32, enabled: bool = True
    ) -> None:
        self._timeout = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        self._maxsize = maxsize
        self._pool: urllib3.PoolManager | None = None
        self._usable: bool | None = None if enabled else False
        self._lock = threading.Lock()
        self._local = threading.local()

    def usable(self, client: Any) -> bool:
        """Whether calls for `client` may take this path (decided once)."""
        if self._usable is None:
            mtls = (os.environ.get("GOOGLE_API_USE_CLIENT_CERTIFICATE", "").lower() == "true"
                    or bool(getattr(client._http, "is_mtls", False)))
            self._usable = not mtls and not urllib.request.getproxies()
        return self._usable

    def _http(self, client: Any) -> AuthorizedHttp:
        credentials = client._http.credentials
        http: AuthorizedHttp | None = getattr(self._local, "http", None)
        if http is None or http.credentials is not credentials:
            with self._lock:
                if self._pool is None:
                    self._pool = urllib3.PoolManager(
                        maxsize=self._maxsize, block=False, ca_certs=_ca_bundle(),
                        blocksize=STREAM_CHUNK)  # file bodies are sent in these pieces
            http = AuthorizedHttp(credentials, http=self._pool)
            self._local.http = http
        return http

    def _open(self, client: Any, method: str, url: str, headers: dict[str, str],
              body: bytes | BinaryIO | None = None) -> Any:
        try:
            response = self._http(client).urlopen(
                method, url, body=body, headers=headers, preload_content=False,
                decode_content=False, retries=False, redirect=False, timeout=self._timeout)
        except urllib3.exceptions.SSLError:
            raise  # a certificate problem: retrying will not help (the policy says permanent)
        except urllib3.exceptions.HTTPError as exc:
            raise TransientError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        if response.status != 200:
            try:
                detail = response.read(4096).decode("utf-8", "replace").strip()
            except urllib3.exceptions.HTTPError:
                detail = ""
            finally:
                response.close()  # a half-read connection must not go back to the pool
                response.release_conn()
            raise gexc.from_http_status(response.status, f"{method} {url}: {detail}")
        return response

    def list_page(
        self, client: Any, bucket: str, prefix: str, page_token: str | None, *,
        page_size: int | None = None,
    ) -> dict[str, Any]:
        """One page of an object listing (`objects.list`, no delimiter): its JSON answer.

        Raises:
            google.api_core.exceptions.GoogleAPICallError: A non-200 answer (404: no bucket).
            TransientError: The connection failed or broke off.
        """
        query = _query({"prefix": prefix or None, "pageToken": page_token,
                        "maxResults": page_size,
                        "projection": "noAcl", "fields": LIST_FIELDS})
        url = f"{client.api_endpoint}/storage/v1/b/{urllib.parse.quote(bucket)}/o?{query}"
        headers = {"Accept-Encoding": "gzip", "User-Agent": _USER_AGENT}
        return self._json(client, "GET", url, headers)

    def _json(self, client: Any, method: str, url: str, headers: dict[str, str],
              body: bytes | BinaryIO | None = None) -> dict[str, Any]:
        response = self._open(client, method, url, headers, body=body)
        try:
            answer: dict[str, Any] = json.loads(response.read(decode_content=True))
        except urllib3.exceptions.HTTPError as exc:
            response.close()
            raise TransientError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        finally:
            response.release_conn()
        return answer

    def download(
        self,
        client: Any,
        bucket: str,
        name: str,
        out: Sink,
        *,
        if_generation_match: int | None,
        single_shot: bool,
    ) -> None:
        """Writes the object's bytes, exactly as stored, to `out` (one media GET).

        Args:
            client: The google-cloud-storage client whose endpoint and credentials to use.
            bucket: The bucket.
            name: The object name.
            out: Receives the bytes.
            if_generation_match: Fail with 412 unless the object has this generation.
            single_shot: Read the body in one piece (small objects) instead of chunks.

        Raises:
            google.api_core.exceptions.GoogleAPICallError: A non-200 answer (404, 412, 503...).
            TransientError: The connection failed or broke off.
        """
        query = _query({"alt": "media", "ifGenerationMatch": if_generation_match})
        url = f"{client.api_endpoint}/download/storage/v1{_object_path(bucket, name)}?{query}"
        # gzip accepted, never decoded: the bytes come as stored, which the CRC32C is of.
        headers = {"Accept-Encoding": "gzip", "User-Agent": _USER_AGENT}
        response = self._open(client, "GET", url, headers)
        complete = False
        try:
            if single_shot:
                out.write(response.read(decode_content=False))
            else:
                for chunk in response.stream(STREAM_CHUNK, decode_content=False):
                    out.write(chunk)
            complete = True
        except urllib3.exceptions.HTTPError as exc:
            raise TransientError(f"GET {url}: {type(exc).__name__}: {exc}") from exc
        finally:
            if not complete:
                response.close()  # a half-read connection must not go back to the pool
            response.release_conn()

    def upload(
        self,
        client: Any,
        bucket: str,
        name: str,
        body: bytes | BinaryIO,
        *,
        size: int,
        crc32c: str,
        if_generation_match: int | None,
    ) -> dict[str, Any]:
        """Writes an object in one request (a "simple" media upload); returns its resource.

        The CRC32C goes along in `X-Goog-Hash`: GCS checks it before the object exists, so
        bytes damaged on the way (or a file changed since it was checksummed) are never
        stored.

        Args:
            client: The google-cloud-storage client whose endpoint and credentials to use.
            bucket: The bucket.
            name: The object name.
            body: The bytes, or a file open at its start (streamed).
            size: The body's length.
            crc32c: The body's CRC32C.
            if_generation_match: The object's expected generation (0: must not exist).

        Raises:
            google.api_core.exceptions.GoogleAPICallError: A non-200 answer (412: the
                precondition failed; 400: the hash did not match).
            TransientError: The connection failed or broke off.
        """
        query = _query({"uploadType": "media", "name": name,
                        "ifGenerationMatch": if_generation_match})
        url = f"{client.api_endpoint}/upload/storage/v1/b/{urllib.parse.quote(bucket)}/o?{query}"
        headers = {"Content-Type": "application/octet-stream", "User-Agent": _USER_AGENT,
                   "Content-Length": str(size), "X-Goog-Hash": f"crc32c={crc32c}"}
        return self._json(client, "POST", url, headers, body=body)

    def rewrite(
        self,
        client: Any,
        source: tuple[str, str],
        target: tuple[str, str],
        *,
        token: str | None,
        if_generation_match: int | None,
        if_source_generation_match: int | None,
    ) -> dict[str, Any]:
        """One call of the rewrite API (a server-side copy); returns its JSON answer.

        Args:
            client: The google-cloud-storage client whose endpoint and credentials to use.
            source: (bucket, name) of the object copied.
            target: (bucket, name) of the copy.
            token: The token of the previous call of an unfinished rewrite, or None.
            if_generation_match: The target's expected generation (0: must not exist).
            if_source_generation_match: The source's expected generation.

        Returns:
            `{"done": bool, "rewriteToken": ..., "resource": {...}}` as GCS answers it.

        Raises:
            google.api_core.exceptions.GoogleAPICallError: A non-200 answer (404, 412, 503...).
            TransientError: The connection failed or broke off.
        """
        query = _query({"ifGenerationMatch": if_generation_match,
                        "ifSourceGenerationMatch": if_source_generation_match,
                        "rewriteToken": token})
        url = (f"{client.api_endpoint}/storage/v1{_object_path(*source)}"
               f"/rewriteTo{_object_path(*target)}?{query}")
        headers = {"Content-Type": "application/json", "User-Agent": _USER_AGENT}
        return self._json(client, "POST", url, headers, body=b"{}")
