"""Parsing and validating storage URIs, and mapping object names safely onto local paths.

URIs stay `str` throughout: `pathlib.Path("gs://b/x")` collapses the double slash
(torchtitan warns about the same trap), so only local paths ever become `Path`s.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from vertex_patterns.errors import ConfigError

# https://cloud.google.com/storage/docs/buckets#naming (dots allowed, 3-222 chars overall).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


@dataclass(frozen=True)
class StorageUri:
    """A parsed storage location.

    Attributes:
        scheme: "gs" or "file".
        bucket: The bucket name for "gs"; empty for local paths.
        path: The object prefix or name for "gs" (no leading slash, may be empty);
            the absolute local path for "file".
    """

    scheme: str
    bucket: str
    path: str

    @property
    def is_gcs(self) -> bool:
        """True for `gs://` locations."""
        return self.scheme == "gs"

    def __str__(self) -> str:
        if self.is_gcs:
            return f"gs://{self.bucket}/{self.path}" if self.path else f"gs://{self.bucket}"
        return self.path

    def join(self, key: str) -> StorageUri:
        """Returns the location of `key` below this one (the key is not validated here)."""
        if self.is_gcs:
            return StorageUri("gs", self.bucket, _join_key(self.path, key))
        return StorageUri("file", self.path, os.path.join(self.path, *key.split("/")))

    def dir_prefix(self) -> str:
        """The object-name prefix that lists everything below this location ("" or "a/b/")."""
        if not self.path:
            return ""
        return self.path if self.path.endswith("/") else self.path + "/"

    def contains(self, other: StorageUri) -> bool:
        """True when `other` is this location or lies below it."""
        if self.scheme != other.scheme or self.bucket != other.bucket:
            return False
        if self.is_gcs:
            mine = self.dir_prefix()
            return mine == "" or other.dir_prefix().startswith(mine)
        mine_p = os.path.realpath(self.path)
        other_p = os.path.realpath(other.path)
        return other_p == mine_p or other_p.startswith(mine_p.rstrip(os.sep) + os.sep)


def _join_key(prefix: str, key: str) -> str:
    if not prefix:
        return key
    return prefix + key if prefix.endswith("/") else f"{prefix}/{key}"


def parse_uri(uri: str) -> StorageUri:
    """Parses `gs://bucket[/prefix]`, `file:///abs/path` or a local path.

    Args:
        uri: The location as the user wrote it.

    Returns:
        The parsed location; local paths are made absolute.

    Raises:
        ConfigError: The URI is malformed (`gs:/x`, `gs://`, a bad bucket name, an unknown
            scheme, a NUL byte).
    """
    if not isinstance(uri, str) or not uri:
        raise ConfigError("empty storage URI: give gs://BUCKET/PREFIX or a local path")
    if "\x00" in uri:
        raise ConfigError(f"storage URI {uri!r} contains a NUL byte")
    lowered = uri.lower()
    if lowered.startswith("gs:") and not lowered.startswith("gs://"):
        raise ConfigError(f"malformed URI {uri!r}: write gs://BUCKET/PREFIX (two slashes)")
    if lowered.startswith("gs://"):
        rest = uri[5:]
        bucket, _, path = rest.partition("/")
        if not bucket:
            raise ConfigError(f"malformed URI {uri!r}: no bucket name; write gs://BUCKET/PREFIX")
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise ConfigError(
                f"malformed URI {uri!r}: {bucket!r} is not a valid bucket name "
                "(3-222 lowercase letters, digits, '-', '_', '.')"
            )
        if "//" in path:
            raise ConfigError(f"malformed URI {uri!r}: empty path segment ('//')")
        return StorageUri("gs", bucket, path)
    if lowered.startswith("file://"):
        local = uri[7:]
        if not local.startswith("/"):
            raise ConfigError(f"malformed URI {uri!r}: file:// URIs need an absolute path")
        return StorageUri("file", "", os.path.abspath(local))
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", uri):
        scheme = uri.split("://", 1)[0]
        raise ConfigError(
            f"unsupported URI scheme {scheme!r} in {uri!r}: use gs://, file:// or a local path"
        )
    return StorageUri("file", "", os.path.abspath(os.path.expanduser(uri)))


def validate_object_key(key: str) -> str:
    """Checks that an object name relative to a prefix is safe to map onto a local path.

    Refuses names that would escape a local destination or cannot be represented there.

    Args:
        key: The object name relative to the replicated prefix, `/`-separated.

    Returns:
        The key unchanged.

    Raises:
        ConfigError: The key is absolute, holds `..` or `.` segments, empty segments, a NUL
            byte or a backslash.
    """
    problem = None
    if not key:
        problem = "is empty"
    elif "\x00" in key:
        problem = "contains a NUL byte"
    elif "\\" in key:
        problem = "contains a backslash"
    elif key.startswith("/"):
        problem = "is an absolute path"
    else:
        for segment in key.split("/"):
            if segment in ("..", "."):
                problem = f"has a {segment!r} segment"
                break
            if segment == "":
                problem = "has an empty path segment"
                break
    if problem:
        raise ConfigError(f"object name {key!r} {problem}: refusing to write it to a local path")
    return key


def safe_local_path(root: str, key: str) -> str:
    """Maps an object key below a local root, refusing anything that would land outside it.

    Besides the lexical checks of `validate_object_key`, the resolved path (symbolic links
    followed) must stay inside the resolved root.

    Raises:
        ConfigError: The key is unsafe or resolves outside `root`.
    """
    validate_object_key(key)
    root_real = os.path.realpath(root)
    candidate = os.path.join(root_real, *key.split("/"))
    resolved = os.path.realpath(candidate)
    if resolved != root_real and not resolved.startswith(root_real.rstrip(os.sep) + os.sep):
        raise ConfigError(f"object name {key!r} resolves outside {root!r}: refusing to write it")
    return candidate
