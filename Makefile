# Everything a fresh machine needs, in two commands: `make demo` and `make test`.
# Each lane has its own virtual environment; every pip call is pinned by a
# constraints file so pip never reaches for a different torch.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck bench clean help

help:
	@echo "make demo  - create .venv if absent, install fitkit, train the quickstart example"
	@echo "make test  - create or update .venv, run the test suite (plus ruff and mypy)"
	@echo "make bench - run the overhead and import-time benchmarks"

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-install when the project's metadata or the pins change.
$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install -q --upgrade pip -c constraints.txt
	$(PIP) install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -c constraints.txt -e ".[dev,examples,tensorboard]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/quickstart.py

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m mypy
	$(PY) -m pytest -q -m "not gpu and not xla"

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m ruff format --check src

typecheck: $(STAMP)
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/import_time.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
