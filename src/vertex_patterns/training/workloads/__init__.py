"""Built-in workloads: `digits` (scikit-learn's bundled digits) and `tiny-lm` (Python's stdlib)."""
