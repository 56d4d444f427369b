"""vertex-patterns: resilient, cheap production training on Vertex AI Pipelines."""

from __future__ import annotations

__version__ = "0.1.0"
