"""`python -m vertex_patterns.train`: the trainer entry point inside the training container."""

from __future__ import annotations

import sys

from vertex_patterns.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
