# Two commands do everything on a fresh machine: `make run` and `make test`.
# Every target below builds what it needs (virtualenv, pinned dependencies, generated code).

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
GEN    := gen
PROTOS := $(shell find protos -name '*.proto' | sort)
GENSTAMP := $(GEN)/.stamp

.PHONY: help setup gen run certs test test-fast check lint fmt types imports bench soak lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

setup: $(STAMP) $(GENSTAMP) ## virtualenv, pinned dependencies, generated code

$(STAMP): requirements.txt
	@test -n "$(PYTHON)" || { echo "Python 3.11 is required (python3.11 or python3 on PATH)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	@# Make the repository and the generated code importable from the venv's python, wherever it runs.
	$(PY) -c "import site,sys,os; p=site.getsitepackages()[0]; open(os.path.join(p,'trading_core.pth'),'w').write(os.path.abspath('.')+'\n'+os.path.abspath('$(GEN)')+'\n')"
	@touch $(STAMP)

gen: $(GENSTAMP) ## generate the protobuf and gRPC code from protos/

$(GENSTAMP): $(STAMP) $(PROTOS) scripts/gen-protos.sh
	sh scripts/gen-protos.sh $(PY) $(GEN)
	@touch $(GENSTAMP)

run: setup ## start everything on SQLite with the simulator (Ctrl-C stops it; TRADING_TLS_DIR=var/tls for TLS)
	$(PY) -m launcher

CERTS_DIR ?= var/tls

certs: setup ## a development CA and the services' TLS certificates in var/tls (FORCE=1 replaces them)
	$(PY) -m launcher.certs $(CERTS_DIR) $(if $(FORCE),--force)

test: setup ## run the whole test suite
	$(BIN)/pytest

test-fast: setup ## run the unit tests only
	$(BIN)/pytest tests/unit

lint: setup ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: setup ## format and fix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

types: setup ## mypy
	$(BIN)/mypy

imports: setup ## import-linter's layering rules
	$(BIN)/lint-imports

check: lint types imports test ## lint, types, import rules and the whole test suite (what CI runs)

# DB=postgres runs the services on a temporary PostgreSQL 15 server; BENCH_ARGS passes other flags.
bench: setup ## the load benchmark (writes bench/results/; DB=postgres for PostgreSQL)
	$(PY) -m bench $(if $(DB),--db $(DB)) $(BENCH_ARGS)

soak: setup ## the 10-minute soak at 100 orders/s
	$(PY) -m bench --soak

lock: ## re-pin requirements.txt from requirements.in
	rm -rf /tmp/trading-core-lock && $(PYTHON) -m venv /tmp/trading-core-lock
	/tmp/trading-core-lock/bin/pip install --quiet -r requirements.in
	{ echo '# Fully pinned lock of requirements.in (pip freeze in a clean venv). Regenerate with `make lock`.'; /tmp/trading-core-lock/bin/pip freeze; } > requirements.txt

clean: ## remove the virtualenv, generated code and var/
	rm -rf $(VENV) $(GEN) var .pytest_cache .mypy_cache .ruff_cache
