# The two set-up commands of the README. Each installs what a fresh Debian machine lacks
# (redis-server, python3-venv, and chromium for the tests) and the project into .venv on first use.
# Also: `make lint` (ruff and mypy, as CI runs them) and `make test-fast` (the suite without the
# tests marked slow, browser or chaos, on two processes: under a minute, for the edit-test loop;
# `make test` runs all, one process).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-fast lint bench system-packages test-packages prometheus-package clean

system-packages:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(BIN)/plaud-workers: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $@

demo: system-packages $(BIN)/plaud-workers
	$(BIN)/plaud-workers demo

prometheus-package:
	@command -v prometheus >/dev/null || { echo "installing Debian package: prometheus (the exporter test, promtool)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	  --no-install-recommends prometheus; }

test-packages: prometheus-package
	@command -v chromium >/dev/null || { echo "installing Debian package: chromium (the Flower browser test)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

test: system-packages test-packages $(BIN)/plaud-workers
	$(BIN)/python -m pytest

test-fast: system-packages prometheus-package $(BIN)/plaud-workers
	$(BIN)/python -m pytest -m "not slow and not browser and not chaos" -n 2

lint: system-packages $(BIN)/plaud-workers
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(BIN)/plaud-workers
	$(BIN)/python -m bench.sandbox_upload --size-mib 1024 --parallel 8
	$(BIN)/python -m bench.client_upload --size-mib 1024 --parallel 1 4 --latency-ms 20
	$(BIN)/python -m bench.token_sharing --processes 8 --uploads 50
	$(BIN)/python -m bench.http_cpu --requests 2000
	$(BIN)/python -m bench.sandbox_cpu --recordings 300
	$(BIN)/python -m bench.pipeline_throughput --recordings 500 --concurrency 8
	$(BIN)/python -m bench.idle_worker
	$(BIN)/python -m bench.polling_cost
	$(BIN)/python -m bench.budget_polling --recordings 300 --rate 600/m
	$(BIN)/python -m chaos --recordings 60 --enqueue-over-s 60 --workers 3
	$(BIN)/python -m bench.pipeline_in_flight --recordings 10000
	$(BIN)/python -m bench.pipeline_scaling --recordings 60 --latency-ms 100

clean:
	rm -rf $(VENV) build *.egg-info
