# MiraiKakaku: `make demo` runs the main job on the embedded default, `make test` runs the tests.
# Both create .venv with Python 3.10 and the pinned set in requirements.lock first.
SHELL := /bin/bash
VENV ?= .venv
PYTHON310 ?= $(shell PYENV_VERSION=3.10.13 command -v python3.10 >/dev/null 2>&1 && echo "env PYENV_VERSION=3.10.13 python3.10" || echo python3.10)
BIN := $(VENV)/bin
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: venv demo test lint bench serve lock clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.lock setup.py
	@test -x $(BIN)/python || $(PYTHON310) -m venv $(VENV)
	$(BIN)/python -c 'import sys; assert sys.version_info[:2] == (3, 10), sys.version'
	$(BIN)/python -m pip install -qq --no-deps -r requirements.lock
	$(BIN)/python -m pip install -qq --no-deps --no-build-isolation -e .
	@touch $@

demo: venv
	$(BIN)/miraikakaku demo

test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# Benchmarks (never part of `make test`): each writes benchmarks/results/<name>.json, then
# benchmarks.report writes benchmarks/results/REPORT.md. `make bench BENCH_ARGS=--quick` smoke-runs.
BENCHMARKS := pipeline_throughput inference streaming_latency api_latency scale_bounded scale_streaming \
  quality_validation
BENCH_ARGS ?=
bench: venv
	@rc=0; for b in $(BENCHMARKS); do \
	  echo "== benchmarks.$$b $(BENCH_ARGS)"; \
	  $(BIN)/python -m benchmarks.$$b $(BENCH_ARGS) || { echo "benchmarks.$$b failed"; rc=1; }; \
	done; \
	$(BIN)/python -m benchmarks.report || rc=1; \
	exit $$rc

lint: venv
	$(BIN)/ruff check .

serve: venv
	$(BIN)/miraikakaku serve

# Re-resolve the pinned set (needs the package index); see requirements.in.
lock:
	rm -rf /tmp/mk-lock && $(PYTHON310) -m venv /tmp/mk-lock
	/tmp/mk-lock/bin/pip install -r requirements.in
	/tmp/mk-lock/bin/pip install tensorflow-hub==0.16.1
	/tmp/mk-lock/bin/pip freeze --all | grep -v '^-e' > requirements.lock

clean:
	rm -rf $(VENV) var
