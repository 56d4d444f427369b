"""`NewFile`: unnamed (O_TMPFILE) files linked into place, and the named-temporary fallback."""

from __future__ import annotations

import errno
import os

import pytest

from vertex_patterns.errors import PermanentError, TransientError
from vertex_patterns.storage import local_write
from vertex_patterns.storage.checksum import crc32c_bytes
from vertex_patterns.storage.crc_cache import cached_crc32c
from vertex_patterns.storage.local_write import NewFile, copy_file


def _supports_tmpfile(directory: str) -> bool:
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return False
    try:
        os.close(os.open(directory, flag | os.O_WRONLY, 0o600))
    except OSError:
        return False
    return True


@pytest.fixture
def tmpfile_dir(tmp_path):
    if not _supports_tmpfile(str(tmp_path)):
        pytest.skip("this filesystem has no O_TMPFILE")
    return tmp_path


@pytest.fixture(autouse=True)
def _forget_refusals():
    """Each test starts with no directory remembered as refusing O_TMPFILE."""
    local_write._no_tmpfile_dirs.clear()
    yield
    local_write._no_tmpfile_dirs.clear()


class TestUnnamedFiles:
    def test_no_name_until_commit(self, tmpfile_dir) -> None:
        final = tmpfile_dir / "out" / "f.bin"
        with NewFile(str(final)) as f:
            assert f.temp_path is None
            f.write(b"x" * 10_000)
            # Nothing at all is visible in the directory while the file is written.
            assert os.listdir(final.parent) == []
            f.commit(crc32c_bytes(b"x" * 10_000))
        assert final.read_bytes() == b"x" * 10_000
        assert os.listdir(final.parent) == ["f.bin"]
        # The checksum is remembered on the linked file, valid for its state.
        assert cached_crc32c(str(final), os.stat(final)) == crc32c_bytes(b"x" * 10_000)

    def test_abort_leaves_nothing(self, tmpfile_dir) -> None:
        final = tmpfile_dir / "f.bin"
        with pytest.raises(RuntimeError), NewFile(str(final)) as f:
            f.write(b"half")
            raise RuntimeError("crash mid-write")
        assert os.listdir(tmpfile_dir) == []

    def test_replaces_an_existing_file(self, tmpfile_dir) -> None:
        final = tmpfile_dir / "f.bin"
        final.write_bytes(b"old contents")
        with NewFile(str(final)) as f:
            f.write(b"new")
            f.commit()
        assert final.read_bytes() == b"new"
        assert os.listdir(tmpfile_dir) == ["f.bin"]

    def test_replaces_a_symbolic_link_not_its_target(self, tmpfile_dir) -> None:
        target = tmpfile_dir / "target"
        target.write_bytes(b"keep me")
        final = tmpfile_dir / "link"
        final.symlink_to(target)
        with NewFile(str(final)) as f:
            f.write(b"new")
            f.commit()
        assert not final.is_symlink() and final.read_bytes() == b"new"
        assert target.read_bytes() == b"keep me"

    def test_directory_at_the_final_name_is_refused(self, tmpfile_dir) -> None:
        final = tmpfile_dir / "taken"
        final.mkdir()
        with pytest.raises(PermanentError, match="is a directory"), NewFile(str(final)) as f:
            f.write(b"data")
            f.commit()
        assert os.listdir(tmpfile_dir) == ["taken"] and os.listdir(final) == []

    def test_fsync_commit(self, tmpfile_dir) -> None:
        final = tmpfile_dir / "f.bin"
        with NewFile(str(final), fsync=True) as f:
            f.write(b"durable")
            f.commit()
        assert final.read_bytes() == b"durable"

    def test_copy_file_goes_through_unnamed_files(self, tmpfile_dir) -> None:
        src = tmpfile_dir / "src.bin"
        data = os.urandom(300_000)
        src.write_bytes(data)
        crc, st = copy_file(str(src), str(tmpfile_dir / "d" / "dst.bin"), None)
        assert crc == crc32c_bytes(data) and st.st_size == len(data)
        assert (tmpfile_dir / "d" / "dst.bin").read_bytes() == data
        assert os.listdir(tmpfile_dir / "d") == ["dst.bin"]

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
    def test_forked_child_links_through_its_own_proc(self, tmpfile_dir) -> None:
        # The parent opens its /proc/self/fd first; a child must not link through it.
        with NewFile(str(tmpfile_dir / "parent")) as f:
            f.write(b"p")
            f.commit()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                with NewFile(str(tmpfile_dir / "child")) as f:
                    f.write(b"from the child")
                    f.commit()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert (tmpfile_dir / "child").read_bytes() == b"from the child"


class TestFallbackToNamedTemporaries:
    def test_platform_without_o_tmpfile(self, tmp_path, monkeypatch) -> None:
        monkeypatch.setattr(local_write, "_TMPFILE", 0)
        final = tmp_path / "f.bin"
        with NewFile(str(final)) as f:
            assert f.temp_path is not None and ".vptmp-" in f.temp_path
            f.write(b"data")
            f.commit()
        assert final.read_bytes() == b"data" and os.listdir(tmp_path) == ["f.bin"]

    def test_filesystem_refusing_o_tmpfile(self, tmpfile_dir, monkeypatch) -> None:
        # Stands in for a filesystem without O_TMPFILE support (NFS, older FUSE).
        real_open = os.open
        refused = []

        def open_(path, flags, *args, **kwargs):
            if flags & os.O_TMPFILE == os.O_TMPFILE:
                refused.append(path)
                raise OSError(errno.EOPNOTSUPP, "Operation not supported")
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", open_)
        for name in ("a", "b"):
            with NewFile(str(tmpfile_dir / name)) as f:
                assert f.temp_path is not None
                f.write(name.encode())
                f.commit()
        # Refused once, then remembered for the directory.
        assert len(refused) == 1
        assert sorted(os.listdir(tmpfile_dir)) == ["a", "b"]

    def test_link_failure_is_transient_then_named(self, tmpfile_dir, monkeypatch) -> None:
        def no_link(fd: int, final_path: str) -> None:
            raise PermissionError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(local_write, "link_unnamed", no_link)
        final = tmpfile_dir / "f.bin"
        with pytest.raises(TransientError, match="could not link"), NewFile(str(final)) as f:
            f.write(b"data")
            f.commit()
        assert os.listdir(tmpfile_dir) == []
        # The retry of the same write uses a temporary name, and succeeds.
        with NewFile(str(final)) as f:
            assert f.temp_path is not None
            f.write(b"data")
            f.commit()
        assert final.read_bytes() == b"data" and os.listdir(tmpfile_dir) == ["f.bin"]


def test_missing_directories_are_created(tmp_path) -> None:
    final = tmp_path / "a" / "b" / "c.bin"
    with NewFile(str(final)) as f:
        f.write(b"deep")
        f.commit()
    assert final.read_bytes() == b"deep"
