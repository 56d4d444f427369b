"""Which container images the emulator can stand in for with the local environment.

The emulator pulls no images: a job or pipeline task runs as a process of the Python
environment the emulator runs in. That is only honest for images whose content that
environment really is, so each image URI is mapped, or refused with a message that says why:

- the project's own image (any registry, any tag, repository name ``vertex-patterns-python``,
  as `vertex-patterns compile --image` may point it at a user's registry) maps to this
  environment; its entrypoint is the ``vertex-patterns`` command;
- ``python:3.X`` images (Docker Hub's, as KFP's lightweight components name them) map to this
  interpreter; their entrypoint is ``python``;
- anything else is refused; `LOCAL_IMAGES_ENV` (``VERTEX_AI_EMULATOR_LOCAL_IMAGES``, a
  comma-separated list of image URI prefixes) declares more images as "this environment".
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

LOCAL_IMAGES_ENV = "VERTEX_AI_EMULATOR_LOCAL_IMAGES"
PROJECT_REPOSITORY_NAME = "vertex-patterns-python"
# [registry/][namespace/]name[:tag][@digest], loosely: Docker's reference grammar.
_REFERENCE = re.compile(
    r"^(?P<repo>[a-z0-9]+(?:[._-][a-z0-9]+)*(?::\d+)?(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")
_PYTHON_REPOS = ("python", "library/python", "docker.io/library/python",
                 "docker.io/python", "index.docker.io/library/python")


@dataclass(frozen=True)
class LocalImage:
    """An image the emulator runs as the local environment."""

    uri: str
    entrypoint: tuple[str, ...]
    """The argv prefix standing in for the image's ENTRYPOINT (used when a job gives no
    `command`)."""
    kind: str
    """``project``, ``python`` or ``declared`` (listed in `LOCAL_IMAGES_ENV`)."""


class UnrunnableImageError(ValueError):
    """The emulator cannot stand in for this image (the message says why and what to do)."""


def is_valid_reference(uri: str) -> bool:
    """True when `uri` is a well-formed container image reference."""
    return bool(uri) and len(uri) <= 1024 and _REFERENCE.match(uri) is not None


def resolve_image(uri: str) -> LocalImage:
    """Maps `uri` to the local environment.

    Raises:
        UnrunnableImageError: `uri` is malformed, or not an image the emulator can stand in for.
    """
    if not is_valid_reference(uri):
        raise UnrunnableImageError(f"image {uri!r} is not a valid container image reference")
    m = _REFERENCE.match(uri)
    assert m is not None
    repo = m.group("repo")
    if repo.rsplit("/", 1)[-1] == PROJECT_REPOSITORY_NAME:
        return LocalImage(uri, (sys.executable, "-m", "vertex_patterns.cli"), "project")
    if repo in _PYTHON_REPOS:
        return LocalImage(uri, (sys.executable,), "python")
    declared = [p.strip() for p in os.environ.get(LOCAL_IMAGES_ENV, "").split(",") if p.strip()]
    if any(uri.startswith(prefix) for prefix in declared):
        return LocalImage(uri, (sys.executable,), "declared")
    raise UnrunnableImageError(
        f"image {uri!r} cannot run on the emulator: it runs jobs in its own Python environment "
        f"and pulls no images. It stands in for the project's image (repository "
        f"'{PROJECT_REPOSITORY_NAME}', any registry and tag) and python:3.X images; declare "
        f"other images whose code is installed locally in {LOCAL_IMAGES_ENV} "
        "(comma-separated URI prefixes)")
