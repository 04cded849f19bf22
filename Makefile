# The README's commands. Every target installs first; `.ci/run` calls `make lint test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint bench demo services format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

services: install
	@$(PY) -m sender.testing.services

test: services
	$(VENV)/bin/pytest

bench: services
	$(PY) -m tests.benchmarks.run

demo: services
	$(VENV)/bin/sender demo

lint: install
	$(VENV)/bin/ruff check sender tests
	$(VENV)/bin/ruff format --check sender tests
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format sender tests
	$(VENV)/bin/ruff check --fix sender tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
