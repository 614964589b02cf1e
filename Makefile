# Everything a fresh machine needs, in two commands: `make demo` and `make test`.
# Each lane has its own virtual environment; every pip call is pinned by a
# constraints file so pip never reaches for a different torch.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

LEGACY_VENV  := .venv-legacy
LEGACY_PY    := $(LEGACY_VENV)/bin/python
LEGACY_STAMP := $(LEGACY_VENV)/.installed
XLA_VENV     := .venv-xla
XLA_PY       := $(XLA_VENV)/bin/python
XLA_STAMP    := $(XLA_VENV)/.installed
TEST_DEPS    := pytest pytest-timeout hypothesis scikit-learn pyyaml tensorboard

.PHONY: demo test test-legacy test-xla lint typecheck bench clean help

help:
	@echo "make demo        - create .venv if absent, install fitkit, train the quickstart example"
	@echo "make test        - create or update .venv, run the test suite (plus ruff and mypy)"
	@echo "make test-legacy - the suite on torch 2.3.0 + torchvision 0.18.0 + torchtext 0.18.0 (.venv-legacy)"
	@echo "make test-xla    - the XLA tests (PJRT_DEVICE=CPU) and a core subset on torch 2.9.0 + torch_xla 2.9.0 (.venv-xla)"
	@echo "make bench       - run the overhead and import-time benchmarks"

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-install when the project's metadata or the pins change.
$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install -q --no-cache-dir --upgrade pip -c constraints.txt
	$(PIP) install -q --no-cache-dir -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q --no-cache-dir -c constraints.txt -e ".[dev,examples,tensorboard]"
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

# -- extra lanes: each its own venv, pinned by its own constraints file ---------------------
$(LEGACY_PY):
	$(PYTHON) -m venv $(LEGACY_VENV)

$(LEGACY_STAMP): $(LEGACY_PY) pyproject.toml constraints-legacy.txt
	$(LEGACY_PY) -m pip install -q --no-cache-dir --upgrade pip
	$(LEGACY_PY) -m pip install -q --no-cache-dir -c constraints-legacy.txt torch==2.3.0 torchvision==0.18.0 torchtext==0.18.0
	$(LEGACY_PY) -m pip install -q --no-cache-dir -c constraints-legacy.txt -e . $(TEST_DEPS)
	touch $(LEGACY_STAMP)

test-legacy: $(LEGACY_STAMP)
	$(LEGACY_PY) -m pytest -q -p no:cacheprovider -m "not gpu and not xla"

$(XLA_PY):
	$(PYTHON) -m venv $(XLA_VENV)

$(XLA_STAMP): $(XLA_PY) pyproject.toml constraints-xla.txt
	$(XLA_PY) -m pip install -q --no-cache-dir --upgrade pip
	$(XLA_PY) -m pip install -q --no-cache-dir -c constraints-xla.txt torch==2.9.0 torch_xla==2.9.0
	$(XLA_PY) -m pip install -q --no-cache-dir -c constraints-xla.txt -e . $(TEST_DEPS)
	touch $(XLA_STAMP)

# The XLA tests (torch_xla's CPU backend), then a core subset on this lane's torch 2.9.
XLA_CORE := tests/xla tests/trainer tests/checkpointing tests/callbacks

test-xla: $(XLA_STAMP)
	PJRT_DEVICE=CPU $(XLA_PY) -m pytest -q -p no:cacheprovider -m "xla" tests/xla
	PJRT_DEVICE=CPU $(XLA_PY) -m pytest -q -p no:cacheprovider -m "not gpu and not xla" $(XLA_CORE)

clean:
	rm -rf $(VENV) $(LEGACY_VENV) $(XLA_VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
