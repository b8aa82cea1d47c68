# The README's two commands: `make repro` (environment, data, dvc repro, report) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: repro test env data bench clean-outputs

repro: env data
	dvc repro
	@echo "report: $(abspath reports/index.html)  (gattanet-cli report --open)"

test: env
	$(BIN)/python -m pytest -q

env: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

data:
	bash scripts/ensure_fashion_mnist.sh

bench: env
	$(BIN)/gattanet-cli bench

clean-outputs:
	rm -rf data models results reports .gattanet
