# One command each: `make demo` (the main job) and `make test` (lint + tests).
# Both create .venv on first use and install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint format

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23"
	# the CPU wheel first: any other torch pulls GBs of CUDA packages
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev,server]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m fhe_sklearn demo

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest

# the inner loop: no real encryption (fhe_execute: key generation, execute, notebooks); CI runs `test`
test-fast: lint
	$(PY) -m pytest -m "not fhe_execute"

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .
