# Two commands matter: `make run` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/responder.toml
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	mkdir -p var
	$(BIN)/responder --config $(CONFIG) serve

lint: $(STAMP)
	$(BIN)/ruff check responder tests
	$(BIN)/ruff format --check responder tests

test: lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m tests.bench.run

clean:
	rm -rf $(VENV) var/*.sqlite3* .pytest_cache .hypothesis
