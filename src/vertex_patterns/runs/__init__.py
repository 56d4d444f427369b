"""Running compiled pipelines: parameter checks, submit and schedule through the Vertex AI
SDK, and `run --local` on the embedded emulators. Plain Python: no kfp here (the compile
step `run --local` needs is imported from `pipelines` only when it runs)."""
