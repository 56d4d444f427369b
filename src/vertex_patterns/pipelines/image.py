"""The component image: one constant derived from the package version.

Never read from the environment at import or compile time: that would bake one machine's
settings into the compiled YAML/JSON (the same rule google-cloud-pipeline-components follows in
its `_image.py`). `cloudbuild.yaml` pushes this tag to each regional registry.
"""

from __future__ import annotations

from vertex_patterns import __version__

IMAGE_REPOSITORY = "us-docker.pkg.dev/vertex-patterns/containers/vertex-patterns-python"
IMAGE = f"{IMAGE_REPOSITORY}:{__version__}"
