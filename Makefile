# Everything a fresh machine needs, from the project's own files.
# `make demo` runs the main job on the embedded emulators; `make test` runs the whole suite.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint typecheck unit bench bench-deps browser-deps compile lock clean

venv: $(STAMP)

# torch first, pinned: a bare `torch` requirement with no torch installed would pull a
# multi-GB CUDA build. An already-installed torch (CPU or CUDA) satisfies torch>=2.4.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: venv
	$(BIN)/vertex-patterns run spot_training --local --output-dir local-run

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

unit: venv browser-deps
	$(BIN)/python -m pytest -q

# Headless Chromium (Debian package) renders the run report in tests/test_report.py, which
# checks that every plot drew. Installed when missing and root can; otherwise that test skips.
browser-deps:
	command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && apt-get install -y -qq chromium)

test: lint typecheck unit

compile: venv
	$(BIN)/vertex-patterns compile

# The image's pinned dependencies, from what this venv resolved (commit the result).
lock: venv
	$(BIN)/python containers/lock.py containers/requirements.lock

# rclone is the peer the replication benchmark measures against, rsync its local reference
# (Debian packages).
bench-deps:
	command -v rclone >/dev/null && command -v rsync >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq rclone rsync)

bench: venv bench-deps
	$(BIN)/python bench/replication.py
	$(BIN)/python bench/checkpoint.py
	$(BIN)/python bench/goodput.py
	$(BIN)/python bench/cost_interval.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
