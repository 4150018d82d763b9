# Two commands matter: `make run` and `make test`. Both set up .venv on first use;
# `make test` also installs the system packages its tests need (scripts/system-deps).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/responder.toml
STAMP := $(VENV)/.installed

.PHONY: run test lint system-deps bench clean

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

# Chromium, a CJK font and PostgreSQL: installed when run as root, else named in one line.
system-deps:
	@scripts/system-deps

test: system-deps lint
	$(BIN)/pytest -rs

bench: $(STAMP)
	$(BIN)/python -m tests.bench.run

clean:
	rm -rf $(VENV) var/*.sqlite3* .pytest_cache .hypothesis
