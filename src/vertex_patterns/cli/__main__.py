"""`python -m vertex_patterns.cli` is the same as the `vertex-patterns` command."""

from __future__ import annotations

import sys

from vertex_patterns.cli.main import main

sys.exit(main())
