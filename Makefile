# The two commands of the README:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: venv demo test test-sqlite test-postgres test-miniprogram lint bench

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

## Run the platform on SQLite with demo data, the broker, bridge and simulated piles.
demo: venv
	$(BIN)/python -m scripts.demo

## The whole test suite: lint, SQLite, the real PostgreSQL on loopback, the mini-program.
test: venv lint test-sqlite test-postgres test-miniprogram

test-sqlite: venv
	$(BIN)/python -m pytest -q --db sqlite

test-postgres: venv
	$(BIN)/python -m pytest -q --db postgresql

test-miniprogram: venv
	cd miniprogram && npm ci --no-audit --no-fund && npm test

## Benchmarks (not tests): figures printed, nothing asserted on wall time.
bench: venv
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.scan_to_power

lint: venv
	$(BIN)/ruff check app tests simulator bench scripts wsgi.py
