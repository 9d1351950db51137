# BriVL pipeline. Quick start on a fresh machine: `make run`, then `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export BRIVL_HOME ?= $(CURDIR)/.brivl

.DEFAULT_GOAL := help
.PHONY: help install run test test-ops test-ui lint bench serve stop clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install the project (offline-friendly pins)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	# clip-retrieval pins pyarrow<16 and pulls torchvision: take it alone, its runtime
	# needs are listed in pyproject.toml.
	$(BIN)/pip install --no-deps clip-retrieval==2.45.0
	# img2dataset installs the py<3.7 `dataclasses` backport, which breaks Prefect's server.
	$(BIN)/pip uninstall -y dataclasses
	touch $@

run: install ## serve the demo web and run the whole pipeline on it
	$(BIN)/brivl pipeline --demo

test: install ## run the test suite
	$(BIN)/python -m pytest -q

test-ops: install ## operations tests: a two-node Ray cluster (kills, retries) and make serve's deployments
	$(BIN)/python -m pytest -q -m ops tests/flows/ops

test-ui: install ## browser tests of the MLflow, search and Prefect UIs (installs Debian's chromium)
	command -v chromium >/dev/null || apt-get install -y --no-install-recommends chromium \
	  || (apt-get update && apt-get install -y --no-install-recommends chromium)
	$(BIN)/python -m pytest -q -m ui tests/ui
	@echo "screenshots: $${BRIVL_UI_SHOTS:-test-artifacts/ui}/"

lint: install ## ruff
	$(BIN)/ruff check .

bench: install ## run the benchmarks (results: bench/RESULTS.md)
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

serve: install ## start Prefect server + worker and MLflow server on 127.0.0.1, register deployments
	$(BIN)/python -m infra.services start
	PREFECT_API_URL=http://127.0.0.1:$${BRIVL_PREFECT_PORT:-4200}/api $(BIN)/python -m flows.deployments

stop: ## stop the services started by `make serve`
	$(BIN)/python -m infra.services stop

clean: ## remove pipeline state (BRIVL_HOME), keep the venv
	rm -rf "$(BRIVL_HOME)"
