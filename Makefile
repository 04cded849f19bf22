# The README's commands. Every target installs first; `.ci/run` calls `make lint test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROMTOOL := $(VENV)/tools/promtool

.PHONY: install test lint audit bench faults demo services tools format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

services: install
	@$(PY) -m sender.testing.services

# promtool (tests/deploy checks the alert rules) from Debian's prometheus package, unpacked
# without installing the server. Other validators come from pip with the dev extras.
tools: install
	@if [ -x $(PROMTOOL) ]; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "tools: no apt-get here, promtool not fetched (its tests skip; put promtool on PATH)"; \
	else \
	  tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && chmod 755 "$$tmp" && cd "$$tmp" && \
	  { apt-get download -qq prometheus >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get download -qq prometheus; }; } && \
	  dpkg -x prometheus_*.deb root && cd "$(CURDIR)" && mkdir -p $(dir $(PROMTOOL)) && \
	  cp "$$tmp/root/usr/bin/promtool" $(PROMTOOL) && \
	  echo "tools: $$($(PROMTOOL) --version 2>&1 | head -n1) -> $(PROMTOOL)"; \
	fi

test: services tools
	$(VENV)/bin/pytest

bench: services
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m tests.benchmarks.run

faults: services
	$(PY) -m tests.faults.run

demo: services
	$(VENV)/bin/sender demo

lint: install
	$(VENV)/bin/ruff check sender tests
	$(VENV)/bin/ruff format --check sender tests
	$(VENV)/bin/mypy

# Known advisories in the installed packages (pip-audit over PyPI's vulnerability data; needs
# network access to pypi.org). --strict: a package it could not look up fails the audit, so an
# unreachable database is never reported as "no known vulnerabilities". Not part of `make test`.
audit: install
	@out=$$($(VENV)/bin/pip-audit --strict --skip-editable --progress-spinner off 2>&1); rc=$$?; \
	if [ $$rc -eq 0 ]; then echo "$$out"; \
	elif echo "$$out" | grep -qE 'could not be audited|ConnectionError|Max retries|resolve|timed out'; then \
	  echo "audit: PyPI's vulnerability data cannot be reached from here, nothing was audited ($$(echo "$$out" | tail -n1 | cut -c1-120))"; \
	  exit 1; \
	else echo "$$out"; exit $$rc; fi

format: install
	$(VENV)/bin/ruff format sender tests
	$(VENV)/bin/ruff check --fix sender tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
