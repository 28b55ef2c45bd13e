# Two commands for a fresh clone: `make demo` (one full cycle on the sandbox province) and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PERSONS ?= 20000

.PHONY: install demo test test-fast check bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/hub sandbox init --force --persons $(PERSONS)
	$(BIN)/hub run

test: $(STAMP)
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest tests/unit

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy core connectors transforms store stages reports hub sandbox bench dags
	$(BIN)/lint-imports  # the layers and side contracts of .importlinter (docs/architecture.md)

bench: $(STAMP)
	$(BIN)/hub bench --persons 100000

clean:
	rm -rf var
