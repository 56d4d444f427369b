"""Demos on the embedded emulators, each one call: `replication` (a data set fanned out to
regional buckets and restored) and `spot` (the launcher alone, Spot training across regions).
The main job, the `spot_training` pipeline end to end, is `vertex_patterns.runs.local_run`
(`vertex-patterns run spot_training --local`, what `make demo` runs)."""
