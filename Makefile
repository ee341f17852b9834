# The README's commands. Everything installs itself into .venv/ (Python) and
# node_modules/ (buf, protoc-gen-es, the Node.js example's packages) from the project's own files.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev
BUF := node_modules/.bin/buf

.PHONY: run env test lint fmt proto clients proto-check buf-lint buf-breaking pytest bench bench-bids bench-execution bench-llm-limits bench-execution-e2e bench-queue bench-workers freeze clean

## run: install, migrate and start both services on the embedded default (Ctrl-C stops both)
run: $(RUNTIME_STAMP)
	$(BIN)/python scripts/run_dev.py

## env: create .env (tokens for docker compose); plain python3, no venv needed
env:
	$(PYTHON) scripts/make_env.py --out .env

## test: install what tests need, lint, type-check and run the whole suite
test: lint pytest

lint: $(DEV_STAMP) $(BUF)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BUF) lint
	bash scripts/buf_breaking.sh
	bash scripts/check_deploy.sh

pytest: $(DEV_STAMP) $(BUF)
	$(BIN)/pytest

fmt: $(DEV_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## proto: regenerate libs/proto (Python) and clients/ts (TypeScript) from proto/ (both committed)
proto: $(DEV_STAMP) clients
	$(BIN)/python scripts/gen_proto.py

## clients: regenerate the TypeScript clients in clients/ts with buf.gen.yaml (committed)
clients: $(DEV_STAMP) $(BUF)
	$(BIN)/python scripts/gen_clients.py

bench: bench-bids bench-execution bench-llm-limits bench-execution-e2e

bench-bids: $(DEV_STAMP)
	$(BIN)/python bench/bids_bench.py

## bench-execution: pacing at scale (attempt loop; execution path with an in-process fake BidService), smart vs blind retry sweep + PNG in var/bench/ (installs the bench extra)
bench-execution: $(DEV_STAMP)
	$(PIP_INSTALL) -e '.[dev,bench]'
	$(BIN)/python bench/execution_bench.py

## bench-llm-limits: executions/s against a provider key limited to R rps, 1 and 2 replicas (PostgreSQL)
bench-llm-limits: $(DEV_STAMP)
	$(BIN)/python bench/llm_limits_bench.py

## bench-execution-e2e: executions/s end to end (bids service + two execution replicas as processes, PostgreSQL) and 1,000 paced executions
bench-execution-e2e: $(DEV_STAMP)
	$(BIN)/python bench/execution_e2e_bench.py

## bench-workers: bids-service serve --workers 2 against --workers 1, GetBid and PlaceBid (PostgreSQL)
bench-workers: $(DEV_STAMP)
	$(BIN)/python bench/workers_bench.py

## bench-queue: the execution queue beside procrastinate and PgQueuer on PostgreSQL (127.0.0.1:5432)
bench-queue: $(DEV_STAMP)
	$(PIP_INSTALL) -e '.[dev,queue-bench]'
	$(BIN)/python bench/queue_compare.py

## freeze: rewrite the pins after changing dependencies in pyproject.toml
freeze: $(DEV_STAMP)
	bash scripts/freeze.sh

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): pyproject.toml requirements/constraints.txt | $(VENV)/bin/python
	$(PIP_INSTALL) -e '.[tools]'
	touch $@

$(DEV_STAMP): pyproject.toml requirements/constraints.txt | $(VENV)/bin/python
	$(PIP_INSTALL) -e '.[dev]'
	touch $(RUNTIME_STAMP) $@

$(BUF): package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) node_modules var .mypy_cache .ruff_cache .pytest_cache
