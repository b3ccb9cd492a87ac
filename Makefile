# Developer entry points. Needs only python3 (3.11+), make and Debian packages on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.8
UV := .uv/bin/uv
VENV := .venv

.PHONY: help install run test test-reliability lint bench lock clean screenshots

help:
	@echo "make install  create .venv (uv $(UV_VERSION), requirements-dev.lock) and make sure nats-server and chromium exist"
	@echo "make run      the whole stack locally: Temporal, MongoDB (SecantusDB), NATS, localstripe, API, worker"
	@echo "make test     the test suite (.venv/bin/pytest -q), without tests/reliability"
	@echo "make test-reliability  faults, load, many replicas, bad input and security, counted (tests/reliability, ~10 min)"
	@echo "make lint     ruff check, ruff format --check, mypy, the import layers (tests/test_architecture.py)"
	@echo "make screenshots  the web pages' screenshots in docs/screenshots (taken by the browser tests)"
	@echo "make bench    the benchmarks against the BullMQ baseline (python -m bench.run; BENCH_ARGS=\"--n 1000 ...\")"
	@echo "make clean    delete .data/ (all local state and logs)"

install:
	@if [ ! -x $(UV) ]; then \
		echo "+ $(PYTHON) -m venv .uv && .uv/bin/pip install uv==$(UV_VERSION)"; \
		$(PYTHON) -m venv .uv && .uv/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION); \
	fi
	@# Hashed lock files (requirements*.lock, made by `make lock`): reproducible installs.
	@[ -x $(VENV)/bin/python ] || $(UV) venv --python $(PYTHON) $(VENV)
	VIRTUAL_ENV=$(VENV) $(UV) pip sync --require-hashes requirements-dev.lock
	VIRTUAL_ENV=$(VENV) $(UV) pip install --no-deps -e .
	@if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "+ apt-get update && apt-get install -y nats-server"; \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nats-server; \
		else \
			echo "nats-server is missing (needed only when no NATS already listens on NATS_URL)."; \
			echo "Install it with: sudo apt-get install -y nats-server"; \
		fi; \
	fi
	@# The browser tests (tests/test_web.py) drive Debian's chromium with Playwright (no browser download).
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "+ apt-get update && apt-get install -y chromium"; \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
		else \
			echo "chromium is missing (needed by the browser tests, skipped without it outside CI)."; \
			echo "Install it with: sudo apt-get install -y chromium"; \
		fi; \
	fi

run: install
	$(VENV)/bin/ticketing dev

test: install
	$(VENV)/bin/pytest -q --ignore=tests/reliability

test-reliability: install
	$(VENV)/bin/pytest tests/reliability -q

screenshots: install
	WEB_SCREENSHOTS=docs/screenshots $(VENV)/bin/pytest -q tests/test_web.py

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy ticketing api workflows activities workers devstack bench tests
	@# the layers of docs/architecture.md (imports only: no server starts)
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/test_architecture.py

bench: install
	@if [ ! -d bench/bullmq/node_modules ]; then echo "+ (cd bench/bullmq && npm ci)"; (cd bench/bullmq && npm ci --no-audit --no-fund); fi
	$(VENV)/bin/python -m bench.run $(BENCH_ARGS)

lock:  ## re-resolve pyproject.toml into the two hashed lock files
	$(UV) pip compile pyproject.toml --generate-hashes --python-version 3.11 --no-header -q -o requirements.lock
	$(UV) pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 --no-header -q -o requirements-dev.lock

clean:
	rm -rf .data
