# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hotspin-installed
export QT_QPA_PLATFORM ?= offscreen
# Test processes (pytest-xdist): one more than the cores, each module on one worker (its module
# fixtures built once), handed out slowest first (tests/conftest.py); TEST_WORKERS=0 runs in one
# process. Part of the suite waits (served labs in other processes, children, sockets): with one
# worker per core 1.5 of 2 cores were busy (189 s); with three, 161 s (BENCHMARKS.md).
TEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print((os.cpu_count() or 1) + 1)')

.PHONY: demo test test-lowest lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# InstrumentKit 0.6 pins ruamel.yaml 0.15 (no build on Python >= 3.11) and enum34 (shadows the
	# standard enum): install it without those; its real needs are in the test extra.
	$(BIN)/python -m pip install --quiet --no-deps instrumentkit==0.6.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m hotspin.demo --out out/demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

# The suite again on the lowest version of every dependency that pyproject.toml allows (CI runs
# it after `make test`), so that a version range never claims what the code cannot run on.
LOWEST := .venv-lowest
test-lowest:
	test -x $(LOWEST)/bin/python || $(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install --quiet --upgrade pip
	$(PYTHON) .ci/lowest_constraints.py > $(LOWEST)/constraints.txt
	$(LOWEST)/bin/python -m pip install --quiet -c $(LOWEST)/constraints.txt -e '.[test]'
	$(LOWEST)/bin/python -m pip install --quiet --no-deps instrumentkit==0.6.0
	$(LOWEST)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_spin_noise.py
	$(BIN)/python benchmarks/bench_redpitaya_tcp.py
	$(BIN)/python benchmarks/bench_psd.py
	$(BIN)/python benchmarks/bench_fit.py
	$(BIN)/python benchmarks/bench_detection.py
	$(BIN)/python benchmarks/bench_gui.py
	$(BIN)/python benchmarks/bench_startup.py

clean:
	rm -rf $(VENV) $(LOWEST) out .pytest_cache .ruff_cache
