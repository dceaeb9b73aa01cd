# Every target bootstraps .venv on a fresh machine; `make test` also installs Debian's
# prometheus (promtool and the server the integration tests start), tmux (the terminal
# `agentwatch top` is tested in) and redis-server (the batch queue's tests start their
# own) when they are missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test soak lint bench tools dashboards clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lint]'
	touch $@

tools:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing Debian prometheus (promtool + server for the integration tests)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq prometheus >/dev/null; }
	@command -v tmux >/dev/null 2>&1 || { \
	  echo "installing Debian tmux (the terminal agentwatch top is tested in)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq tmux >/dev/null; }
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing Debian redis-server (the batch queue's tests start their own)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server >/dev/null; }

demo: $(STAMP)
	$(VENV)/bin/agentwatch demo

test: $(STAMP) tools
	$(PY) -m pytest -q

# The long variants of tests/reliability (docs/reliability.md): thousands of fuzzed
# requests, 1,000 concurrent streams, 20 SIGKILLs of a 500-task batch (local, and on
# Redis across 3 workers with a Redis restart); strict timing
# targets (AGENTWATCH_STRICT_TIMING=1) that `make test` checks only as sanity bounds.
soak: $(STAMP) tools
	AGENTWATCH_FUZZ_EXAMPLES=5000 AGENTWATCH_LOAD_STREAMS=1000 \
	AGENTWATCH_CRASH_KILLS=20 AGENTWATCH_CRASH_TASKS=500 AGENTWATCH_STRICT_TIMING=1 \
	AGENTWATCH_REDIS_CRASH_KILLS=20 AGENTWATCH_REDIS_CRASH_TASKS=500 \
	$(PY) -m pytest -q tests/reliability

lint: $(STAMP)
	@mkdir -p .typecheck/agentwatch
	@ln -sfn ../../runtime .typecheck/agentwatch/runtime
	@ln -sfn ../../telemetry .typecheck/agentwatch/telemetry
	$(VENV)/bin/ruff check runtime telemetry tests benchmarks dashboards
	$(VENV)/bin/ruff format --check runtime telemetry tests benchmarks dashboards
	cd .typecheck && MYPYPATH=. ../$(VENV)/bin/mypy --config-file ../pyproject.toml -p agentwatch.telemetry -p agentwatch.runtime
	cd .typecheck && PYTHONPATH=. ../$(VENV)/bin/lint-imports --config ../pyproject.toml

$(VENV)/.bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	touch $@

bench: $(VENV)/.bench
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) .typecheck build *.egg-info .pytest_cache .mypy_cache .ruff_cache

dashboards: $(STAMP)
	$(PY) dashboards/generate.py
