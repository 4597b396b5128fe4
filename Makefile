# Handoff: the one entry point. `make run` starts everything on the embedded stack,
# `make test` runs every check. Both install what they need first.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
VENV := .venv
PY := $(VENV)/bin/python
PROMTOOL := $(TOOLS)/prometheus/usr/bin/promtool
PACKAGES := -e ./schemas -e ./runtime -e ./services/scorer -e ./services/router -e ./services/feedback

.PHONY: install run demo test bench chaos lint typecheck unit integration e2e schemas lock clean prometheus

$(TOOLS)/bin/uv:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

# The lock pins every third-party package; the workspace packages install editable on top.
$(VENV)/.installed: requirements.lock $(wildcard */pyproject.toml services/*/pyproject.toml) | $(UV)
	test -d $(VENV) || $(UV) venv --quiet --python $(PYTHON) $(VENV)
	$(UV) pip sync --quiet --python $(PY) requirements.lock
	$(UV) pip install --quiet --python $(PY) --no-deps $(PACKAGES)
	touch $@

install: $(VENV)/.installed

## Prometheus and promtool (rule tests, dashboard queries), unpacked from Debian's package.
$(PROMTOOL):
	$(SHELL) deploy/prometheus/install.sh

prometheus: $(PROMTOOL)

## Regenerate requirements.lock from the pyproject files (records no index hosts).
lock: | $(UV)
	$(UV) lock
	$(UV) export --frozen --no-hashes --no-emit-workspace --all-packages --all-groups --no-header -o requirements.lock

run: install
	$(PY) -m handoff_runtime.launcher run

demo: install
	$(PY) -m handoff_runtime.demo

## Benchmark: Handoff against a bare-infrastructure baseline in the same run (bench/run.py;
## BENCH_ARGS="--runs 3" for medians). Figures are reported here, never asserted in tests.
bench: install
	$(PY) bench/run.py $(BENCH_ARGS)

## Fault soak: every fault of tests/integration/test_faults.py with more leads and rounds,
## ending with a summary (accepted, ended, duplicated, lost, time to recover per fault).
chaos: install
	HANDOFF_CHAOS=soak $(PY) -m pytest tests/integration/test_faults.py -q -s

schemas: install
	$(PY) -m handoff_schemas.generate

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy -p handoff_schemas -p handoff_runtime -p handoff_scorer -p handoff_router -p handoff_feedback
	$(VENV)/bin/mypy tests bench

unit: install
	$(PY) -m pytest tests/unit -q

integration: install $(PROMTOOL)
	$(PY) -m pytest tests/integration -q

e2e: install $(PROMTOOL)
	$(PY) -m pytest tests/e2e -q

test: lint typecheck $(PROMTOOL)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(TOOLS) .data
