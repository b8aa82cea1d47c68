# The README's two commands: `make repro` (environment, data, dvc repro, report) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: repro test test-fast env data bench clean-outputs package-check screenshot rerender

# The estimate first (the stages `dvc repro` will run, on this machine: its CPU class and precision), then the run.
repro: env data
	$(BIN)/gattanet-cli plan --stale --save || echo "plan: no estimate (the run goes on)"
	dvc repro
	@echo "report: $(abspath reports/index.html)  (gattanet-cli report --open)"

# Tests run in TEST_WORKERS processes (pytest-xdist), a test file to a process: a file's module fixtures are built
# once; the trained tiny-profile run (conftest's tiny_run) is built once per pytest run, beside the tests, and each
# process takes its own copy of it, so no two share a workspace.
# The cores are shared out (TEST_THREADS torch/OpenMP threads a process): more threads than cores slows the kernels.
TEST_WORKERS ?= 2
TEST_THREADS ?= $(shell n=$$(( $$(nproc) / $(TEST_WORKERS) )); echo $$(( n > 0 ? n : 1 )))
PYTEST = OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test: env
	$(PYTEST)

# The edit-test loop: everything but the tests marked slow (end-to-end dvc repro, DDP, kills); under 3 minutes.
test-fast: env
	$(PYTEST) -m "not slow"

# The README's picture of the report's first screen (docs/report-first-screen.png), from reports/index.html.
screenshot: env
	$(BIN)/python scripts/screenshot.py

# Each committed profile run's report (reports/<profile>/index.html) re-rendered from its committed outputs; then
# `gattanet-cli stage report` (or `dvc repro`) links them from the default report with their headlines.
rerender: env
	$(BIN)/python -m pipeline.report.committed

env: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

data:
	bash scripts/ensure_fashion_mnist.sh

# The wheel as a user gets it: built, installed into a clean venv, gattanet-cli run outside the
# checkout (a few minutes: it installs torch; not part of `make test`).
package-check:
	PYTHON=$(PYTHON) bash scripts/check_wheel.sh

bench: env
	$(BIN)/gattanet-cli bench

# Every output of a run, for a run from nothing (results/ and reports/ files that git tracks come back
# with `git checkout -- results reports`).
clean-outputs:
	rm -rf data models results reports .gattanet
