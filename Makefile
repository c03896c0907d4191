# Two entry points for a fresh clone (see README): `make demo` and `make test`.
# Each one creates the virtual environment it needs on first use: the demo installs only what
# the product needs to run; the tests add the development and benchmark tools.
VENV ?= .venv
PY := $(VENV)/bin/python
RUNTIME := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench-transport clean

# pip's own chatter goes to $(VENV)/install.log, shown only when an install fails.
PIP := $(PY) -m pip install -q --log $(VENV)/install.log

$(VENV)/bin/python:
	@echo "creating $(VENV) (first run only)"
	@python3 -m venv $(VENV)
	@$(PIP) --upgrade pip >/dev/null 2>&1 || { cat $(VENV)/install.log; exit 1; }

$(RUNTIME): pyproject.toml | $(VENV)/bin/python
	@echo "installing aetherflow into $(VENV)"
	@$(PIP) -e . >/dev/null 2>&1 || { tail -40 $(VENV)/install.log; exit 1; }
	@touch $(RUNTIME)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	@echo "installing aetherflow with its test and benchmark tools into $(VENV)"
	@$(PIP) -e '.[dev,bench]' >/dev/null 2>&1 || { tail -40 $(VENV)/install.log; exit 1; }
	@touch $(RUNTIME) $(STAMP)

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
