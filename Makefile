# Skein developer entry points. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV  := .venv
BIN   := $(VENV)/bin
# Inside .venv so that deleting the venv also forgets the setup.
STAMP := $(VENV)/.skein-setup.stamp

# Two cores here: -n 2 runs the Airflow-heavy modules (each migrates its own
# metadata DB) side by side. --dist loadfile keeps a module on one worker so its
# module-scoped fixtures run once. Override: make test PYTEST_ARGS=-x
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: help setup lock material test test-fast run run-distributed bench clean distclean

help:
	@echo "make setup      create .venv from requirements.lock and install skein, and .venv-dbt"
	@echo "                (dbt-core, isolated) from requirements-dbt.lock (no-op if up to date)"
	@echo "make material   download the pinned public dbt projects and Python code the tests use"
	@echo "                (PyPI distributions, sha256-checked, cached in ~/.cache/skein-material)"
	@echo "make test       run the whole test suite (slow tests included)"
	@echo "make test-fast  run the suite without tests marked slow"
	@echo "make run        start the demo: demo fleet, discovery, Airflow on http://localhost:8080"
	@echo "                (SKEIN_PROFILE=distributed: PostgreSQL, Redis, CeleryExecutor, two workers)"
	@echo "make run-distributed  the same as SKEIN_PROFILE=distributed make run"
	@echo "make bench      run bench/*.py"
	@echo "make lock       regenerate requirements.lock and requirements-dbt.lock from their .txt"
	@echo "make clean      remove run state and caches (.airflow, .skein, caches); keeps .venv"
	@echo "make distclean  clean, and remove .venv and .venv-dbt"

setup: $(STAMP)

$(STAMP): requirements.lock requirements-dbt.lock pyproject.toml scripts/setup.sh
	scripts/setup.sh
	@touch $@

# uv from PATH, else the one setup bootstraps into the venv.
lock:
	@if command -v uv >/dev/null; then uv=uv; else $(MAKE) --no-print-directory setup; uv=$(BIN)/uv; fi; \
	$$uv pip compile requirements.txt --python-version 3.11 -o requirements.lock; \
	$$uv pip compile requirements-dbt.txt --python-version 3.11 -o requirements-dbt.lock

# Public projects nobody here wrote, from PyPI distributions (tests/material.py pins them).
material: setup
	@$(BIN)/python tests/material.py

# pytest exits 5 when it collects no tests: that is reported, not a failure.
# Every other non-zero exit fails make test.
test: setup material
	@scripts/browser.sh
	@rc=0; $(BIN)/python -m pytest $(PYTEST_ARGS) $(ARGS) || rc=$$?; \
	if [[ $$rc -eq 5 ]]; then echo "make test: pytest collected no tests (exit 5), treated as success"; exit 0; fi; \
	exit $$rc

test-fast: setup
	@$(MAKE) --no-print-directory test ARGS='-m "not slow"'

run:
	scripts/run.sh

run-distributed:
	SKEIN_PROFILE=distributed scripts/run.sh

bench: setup
	@shopt -s nullglob; files=(bench/*.py); \
	if (( $${#files[@]} == 0 )); then echo "make bench: no bench/*.py yet"; exit 0; fi; \
	for f in "$${files[@]}"; do echo "== $$f"; $(BIN)/python "$$f"; done

clean:
	rm -rf .airflow .airflow-distributed .skein bench/out .pytest_cache build include/*.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) .venv-dbt
