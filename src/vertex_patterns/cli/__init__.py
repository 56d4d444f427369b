"""The `vertex-patterns` command line: parse, call the core, print."""
