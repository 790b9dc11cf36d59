# tfserving-orchestrator — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODEL ?= demo
RUNTIME ?=
PYTEST_ARGS ?=
# `make test` runs the test modules in parallel, each module whole on one worker (tests/conftest.py).
# Most of the time is spent waiting on servers, so more workers than the 2 cores pays.
TEST_WORKERS ?= 3

help: ## Show this help.
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  \033[1m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[serve,dev,convert,bench,kubernetes]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with all extras (fast when done).

convert-deps: $(STAMP) ## Install model-packaging tools (tensorflowjs, tfjs for Node, Chromium).
	bash scripts/install_convert_deps.sh

system: ## Install Docker, HAProxy, wrk, busybox, Prometheus when missing and start dockerd (needs root).
	bash scripts/setup_system.sh

demo-model: $(STAMP) ## Build the demo Keras model (versions 1 and 2) under models/demo.
	$(VENV)/bin/tfsctl demo-model

deploy: $(STAMP) ## Deploy MODEL (default demo) on RUNTIME (auto|local|docker|kubernetes; kubernetes reads KUBECONFIG).
	@if [ "$(MODEL)" = "demo" ] && [ ! -d models/demo/1 ]; then $(VENV)/bin/tfsctl demo-model; fi
	$(VENV)/bin/tfsctl deploy $(MODEL) $(if $(RUNTIME),--runtime $(RUNTIME),)

stop: $(STAMP) ## Stop MODEL's deployment.
	$(VENV)/bin/tfsctl stop $(MODEL)

test: $(STAMP) convert-deps system ## Run every test (unit and integration) against real servers.
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

unit: $(STAMP) ## Run the fast unit tests only.
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP) ## ruff and mypy.
	$(VENV)/bin/ruff check orchestrator tests bench
	$(VENV)/bin/mypy orchestrator

protos: $(STAMP) ## Regenerate orchestrator/protos/*_pb2.py from the .proto sources.
	bash scripts/gen_protos.sh

bench: $(STAMP) system ## Run the benchmarks: each prints its table, then one table of every ratio (slow).
	$(PY) bench/all.py

clean: ## Remove caches (keeps .venv and models).
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info

.PHONY: help install convert-deps system demo-model deploy stop test unit lint protos bench clean
