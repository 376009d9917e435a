# The two commands of the README:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: venv demo test test-sqlite test-postgres lint bench

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

## Run the platform on SQLite with demo data, the broker, bridge and simulated piles.
demo: venv
	$(BIN)/python -m scripts.demo

## The whole test suite: SQLite, then the real PostgreSQL on loopback.
test: venv lint test-sqlite test-postgres

test-sqlite: venv
	$(BIN)/python -m pytest -q --db sqlite

test-postgres: venv
	$(BIN)/python -m pytest -q --db postgresql

lint: venv
	$(BIN)/ruff check app tests simulator bench scripts wsgi.py
