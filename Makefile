# traingate — developer entry points. Every target installs what it needs from scratch.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
PYTEST_ARGS ?=
# Two workers match the 2-core CI machine; tests that share servers use session fixtures per worker.
PYTEST_WORKERS ?= 2

.PHONY: help venv install install-dev demo test lint lint-py lint-workflows typecheck unit bench clean

help:
	@echo "make demo   - create $(VENV), install traingate, run the whole pipeline on the bundled example"
	@echo "make test   - create $(VENV), install traingate[dev], run lint and the test suite"
	@echo "make lint   - ruff + workflow checks (actionlint, zizmor, check-jsonschema)"
	@echo "make bench  - run the benchmarks in bench/ and print figures"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(UV): $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv

venv: $(UV)

install: venv
	$(UV) pip install --python $(BIN)/python --quiet --compile-bytecode -e '.[all]'

install-dev: venv
	$(UV) pip install --python $(BIN)/python --quiet --compile-bytecode -e '.[dev]'

demo: install
	$(BIN)/traingate demo

lint-py: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

lint-workflows: install-dev
	$(BIN)/python scripts/lint_workflows.py

lint: lint-py lint-workflows

typecheck: install-dev
	$(BIN)/mypy src/traingate

unit: install-dev
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test: lint unit

bench: install-dev
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .traingate .pytest_cache .ruff_cache build dist
