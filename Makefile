# streamrec: `make demo` runs the whole product locally, `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/pip
# Installed first and alone: the CUDA build from PyPI is ~3 GB; pip's cache keeps later installs quick.
TORCH_SPEC := torch>=2.4,<3

.PHONY: install demo test chaos lint clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade "pip>=24"
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/streamrec demo

test: install
	$(VENV)/bin/python -m pytest -ra --ignore=tests/integration/chaos

# Failure tests (a worker SIGKILLed mid-stream); prints the audit JSON line last.
chaos: install
	$(VENV)/bin/python -m pytest -ra -s tests/integration/chaos

lint: install
	$(VENV)/bin/ruff check stream encoders index tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean:
	-$(VENV)/bin/streamrec broker stop
	rm -rf .streamrec
