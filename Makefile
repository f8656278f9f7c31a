# The two set-up commands of the README. Each creates .venv and installs the project on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test bench clean

$(BIN)/plaud-workers: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/plaud-workers
	$(BIN)/plaud-workers demo

test: $(BIN)/plaud-workers
	$(BIN)/python -m pytest

bench: $(BIN)/plaud-workers
	$(BIN)/python -m bench.sandbox_upload --size-mib 1024 --parallel 8
	$(BIN)/python -m bench.client_upload --size-mib 1024 --parallel 1 4 --latency-ms 20
	$(BIN)/python -m bench.token_sharing --processes 8 --uploads 50

clean:
	rm -rf $(VENV) build *.egg-info
