"""Uploading compiled pipeline templates to an Artifact Registry KFP repository.

The last step of `cloudbuild.yaml`: every `*.json` and `*.yaml` template in a directory goes to
``https://LOCATION-kfp.pkg.dev/PROJECT/REPOSITORY`` through kfp's own `RegistryClient`
(authenticated with the environment's Application Default Credentials), each tagged with the
given tags (e.g. ``v0.1.0`` and ``latest``). A run then starts from
``https://LOCATION-kfp.pkg.dev/PROJECT/REPOSITORY/PACKAGE/v0.1.0`` as its template path.

    python -m vertex_patterns.pipelines.registry HOST DIRECTORY TAG [TAG ...]

Exit codes: 0 uploaded, 1 an upload was refused, 2 bad input (nothing uploaded).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vertex_patterns.errors import ConfigError

_AR_HOST = re.compile(r"^https://[a-z][a-z0-9-]*-kfp\.pkg\.dev/[a-z][a-z0-9-]{4,28}[a-z0-9]/"
                      r"[a-z][a-z0-9-]*$")
# A local stand-in of the registry (tests); never a remote plain-HTTP host.
_LOOPBACK_HOST = re.compile(r"^http://(127\.0\.0\.1|localhost):\d+(/[A-Za-z0-9._-]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TEMPLATE_SUFFIXES = (".json", ".yaml", ".yml")


@dataclass(frozen=True)
class UploadedTemplate:
    """One template as the registry recorded it."""

    path: str
    """The local file uploaded."""
    package: str
    """The package name the registry gave it (the pipeline's name)."""
    version: str
    """``sha256:...``: the content's version."""
    tags: tuple[str, ...]
    """The tags attached to `version`."""


def check_upload(host: str, paths: Sequence[str], tags: Sequence[str]) -> None:
    """Validates an upload before anything is sent.

    Raises:
        ConfigError: A host that is not a KFP repository, a missing or non-template file,
            or a tag the registry would refuse.
    """
    if not (_AR_HOST.match(host) or _LOOPBACK_HOST.match(host)):
        raise ConfigError(f"registry host {host!r}: expected "
                          "https://LOCATION-kfp.pkg.dev/PROJECT/REPOSITORY")
    if not paths:
        raise ConfigError("no pipeline templates to upload: run `vertex-patterns compile` first")
    for path in paths:
        if not path.endswith(TEMPLATE_SUFFIXES) or not os.path.isfile(path):
            raise ConfigError(f"{path}: not a compiled pipeline template (.json or .yaml file)")
    for tag in tags:
        if not _TAG.match(tag) or tag.startswith("sha256"):
            raise ConfigError(f"tag {tag!r}: use letters, digits, '.', '_' and '-' (not a "
                              "sha256 version)")


def templates_in(directory: str) -> list[str]:
    """The template files directly in `directory`, sorted.

    Raises:
        ConfigError: `directory` does not exist.
    """
    if not os.path.isdir(directory):
        raise ConfigError(f"{directory} is not a directory of compiled pipeline templates")
    return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                  if name.endswith(TEMPLATE_SUFFIXES))


def upload_templates(host: str, paths: Sequence[str], tags: Sequence[str] = (),
                     *, auth: Any = None) -> list[UploadedTemplate]:
    """Uploads each template with `tags` through `kfp.registry.RegistryClient`.

    Args:
        host: ``https://LOCATION-kfp.pkg.dev/PROJECT/REPOSITORY``.
        paths: Compiled pipeline templates (JSON or YAML).
        tags: Tags for every uploaded version (e.g. the package version and ``latest``).
        auth: Credentials or a `requests` auth; None: Application Default Credentials for
            Artifact Registry hosts.

    Returns:
        What the registry recorded for each template, in order.

    Raises:
        ConfigError: Bad input (see `check_upload`); nothing was sent.
        requests.HTTPError: The registry refused an upload (earlier ones stay uploaded).
    """
    from kfp.registry import RegistryClient

    check_upload(host, paths, tags)
    client = RegistryClient(host=host, auth=auth)
    uploaded = []
    for path in paths:
        package, version = client.upload_pipeline(path, tags=list(tags) or None)
        uploaded.append(UploadedTemplate(path=path, package=package, version=version,
                                         tags=tuple(tags)))
    return uploaded


def main(argv: Sequence[str]) -> int:
    """``HOST DIRECTORY TAG...``: uploads the directory's templates; prints one line each."""
    import requests

    if len(argv) < 2:
        print("usage: python -m vertex_patterns.pipelines.registry HOST DIRECTORY [TAG ...]",
              file=sys.stderr)
        return 2
    host, directory, *tags = argv
    try:
        results = upload_templates(host, templates_in(directory), tags)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except requests.HTTPError as exc:
        print(f"error: upload refused: {exc}", file=sys.stderr)
        return 1
    for r in results:
        print(f"{r.path} -> {host}/{r.package} {r.version} tags {','.join(r.tags) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
