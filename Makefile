# One command each: `make demo` (the main job) and `make test` (lint + tests).
# Both create .venv on first use and install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pip byte-compiles every file it installs, serially (torch alone: ~30 s). Installing with
# --no-compile, Python compiles only what is imported, once, into this cache; the machine sets
# PYTHONDONTWRITEBYTECODE, which would make every process compile its imports again
export PYTHONPYCACHEPREFIX := $(abspath $(VENV))/pycache
unexport PYTHONDONTWRITEBYTECODE
PIP := $(PY) -m pip install --quiet --no-compile

.PHONY: setup demo test test-fast lint format

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) --upgrade "pip>=23"
	# the CPU wheel first: any other torch pulls GBs of CUDA packages
	$(PIP) "torch==2.13.0"
	$(PIP) -e ".[dev,server]"
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
