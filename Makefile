# The two commands a newcomer needs: `make run` (the bridge on SQLite) and `make test`.
# Both create the virtual environment in .venv on first use, from hash-pinned locks: `make run`
# installs only what the bridge needs (requirements.lock), `make test` the dev tools as well
# (requirements-dev.lock). `make lock` re-locks both after a change to pyproject.toml.

VENV ?= .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime-stamp
STAMP := $(VENV)/.installed-stamp
UV_STAMP := $(VENV)/.uv-stamp
# Every file checked against the lock's hashes; the project itself is built with the locked
# setuptools (no isolated build environment fetching an unchecked one).
INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check
LOCKED := $(INSTALL) --require-hashes -r
PROJECT := $(INSTALL) --no-deps --no-build-isolation -e .

.PHONY: run test lint typecheck unit bench lock clean

$(BIN)/python:
	python3 -m venv $(VENV)

$(RUNTIME): pyproject.toml requirements.lock | $(BIN)/python
	$(LOCKED) requirements.lock
	$(PROJECT)
	touch $@

# The dev lock holds the runtime lock's versions, so it stands for both.
$(STAMP): pyproject.toml requirements.lock requirements-dev.lock | $(BIN)/python
	$(LOCKED) requirements-dev.lock
	$(PROJECT)
	touch $(RUNTIME) $@

$(UV_STAMP): requirements-uv.lock | $(BIN)/python
	$(LOCKED) requirements-uv.lock
	touch $@

run: $(RUNTIME)
	$(BIN)/webhook-bridge serve

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/hadolint Dockerfile
	VENV=$(VENV) bash helm/check.sh

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/run.py

# Re-lock after changing pyproject.toml's dependencies (needs PyPI); UPGRADE="name ..." moves
# those packages to their newest versions, every other pin stays where it still fits.
lock: $(UV_STAMP)
	UV=$(BIN)/uv bash tools/lock.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
