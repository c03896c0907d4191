# Two entry points for a fresh clone (see README): `make demo` and `make test`.
# Each one creates the virtual environment it needs on first use: the demo installs only what
# the product needs to run; the tests add the development and benchmark tools.
VENV ?= .venv
PY := $(VENV)/bin/python
RUNTIME := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench-transport clean

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(RUNTIME): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e .
	touch $(RUNTIME)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $(RUNTIME) $(STAMP)

demo: $(RUNTIME)
	$(VENV)/bin/aetherflow demo

test: $(STAMP)
	$(PY) -m pytest -q

# The standard matrix of docs/benchmarks.md (needs root for the link emulator; ~12 min).
bench-transport: $(STAMP)
	$(VENV)/bin/aetherflow bench transport --sweep --seed 1 --json bench-sweep.json --plot bench-sweep.png

lint: $(STAMP)
	$(VENV)/bin/ruff check src apps relay tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
