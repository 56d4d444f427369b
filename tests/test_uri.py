"""URI parsing and the object-name safety rules that keep writes inside a local destination."""

from __future__ import annotations

import os

import pytest

from vertex_patterns.errors import ConfigError
from vertex_patterns.storage.uri import parse_uri, safe_local_path, validate_object_key


class TestParse:
    """Well-formed URIs parse to scheme, bucket and path; malformed ones are refused."""

    def test_gcs(self) -> None:
        u = parse_uri("gs://my-bucket/data/train")
        assert (u.scheme, u.bucket, u.path) == ("gs", "my-bucket", "data/train")
        assert str(u) == "gs://my-bucket/data/train"
        assert u.dir_prefix() == "data/train/"
        assert parse_uri("gs://my-bucket").dir_prefix() == ""

    def test_local_and_file(self, tmp_path) -> None:
        assert parse_uri(str(tmp_path)).path == str(tmp_path)
        assert parse_uri(f"file://{tmp_path}").path == str(tmp_path)
        assert parse_uri("relative/dir").path == os.path.abspath("relative/dir")

    @pytest.mark.parametrize(
        "bad",
        ["gs:/x", "gs://", "gs:///x", "gs://UPPER/x", "gs://a/x", "gs://b//x", "s3://b/x",
         "file://relative", "", "gs://b\x00/x"],
    )
    def test_malformed(self, bad: str) -> None:
        with pytest.raises(ConfigError):
            parse_uri(bad)

    def test_contains(self) -> None:
        a = parse_uri("gs://bkt/data")
        assert a.contains(parse_uri("gs://bkt/data/sub"))
        assert a.contains(parse_uri("gs://bkt/data"))
        assert not a.contains(parse_uri("gs://bkt/database"))
        assert not a.contains(parse_uri("gs://other/data/sub"))
        assert parse_uri("gs://bkt").contains(a)


class TestObjectKeys:
    """Object names never escape a local destination."""

    @pytest.mark.parametrize(
        "key", ["../evil", "a/../../evil", "/etc/passwd", "a\\b", "a/./b", "a//b", "x\x00y", ""]
    )
    def test_refused(self, key: str, tmp_path) -> None:
        with pytest.raises(ConfigError):
            validate_object_key(key)
        with pytest.raises(ConfigError):
            safe_local_path(str(tmp_path), key)

    def test_accepted(self, tmp_path) -> None:
        p = safe_local_path(str(tmp_path), "a/b/c..d.txt")
        assert p == os.path.join(os.path.realpath(tmp_path), "a", "b", "c..d.txt")

    def test_symlink_escape_refused(self, tmp_path) -> None:
        outside = tmp_path / "outside"
        outside.mkdir()
        root = tmp_path / "root"
        root.mkdir()
        (root / "link").symlink_to(outside)
        with pytest.raises(ConfigError, match="outside"):
            safe_local_path(str(root), "link/file.bin")
