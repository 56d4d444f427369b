"""Where object keys land below a local destination, refusing any that would escape it."""

from __future__ import annotations

import os

from vertex_patterns.errors import ConfigError
from vertex_patterns.storage.uri import validate_object_key


class LocalTargets:
    """`safe_local_path` for many keys below one root, resolving each directory only once.

    `os.path.realpath` costs an `lstat` per path component; for thousands of files in a few
    directories, resolving the root and each parent directory once (then only checking
    whether the file name itself is a symbolic link) gives the same answer for a fraction of
    the system calls.

    Args:
        root: The destination directory (absolute).
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self._root_real = os.path.realpath(root)
        self._inside = self._root_real.rstrip(os.sep) + os.sep
        self._dirs: dict[str, str] = {"": self._root_real}

    def path(self, key: str) -> str:
        """The local path of `key` (below the resolved root).

        Raises:
            ConfigError: The key is unsafe (see `validate_object_key`) or resolves outside
                the root through a symbolic link.
        """
        validate_object_key(key)
        head, _, name = key.rpartition("/")
        candidate = os.path.join(self._root_real, *key.split("/"))
        real_dir = self._dirs.get(head)
        if real_dir is None:
            real_dir = os.path.realpath(os.path.dirname(candidate))
            self._dirs[head] = real_dir
        # realpath(dir/name) == realpath(dir)/name unless name itself is a symbolic link.
        resolved = (os.path.realpath(candidate) if os.path.islink(candidate)
                    else os.path.join(real_dir, name))
        if resolved != self._root_real and not resolved.startswith(self._inside):
            raise ConfigError(
                f"object name {key!r} resolves outside {self.root!r}: refusing to write it")
        return candidate
