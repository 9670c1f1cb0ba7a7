# The two commands a newcomer needs: `make run` (the bridge on SQLite) and `make test`.
# Both create the virtual environment in .venv on first use, from the pinned versions.

VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck unit bench lock clean

$(STAMP): pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
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

# Re-pin every dependency to what is installed now (after changing pyproject.toml).
lock: $(STAMP)
	$(BIN)/pip freeze --exclude-editable --exclude webhook-bridge > requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
