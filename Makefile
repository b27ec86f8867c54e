# Two commands do everything: `make demo` and `make test`. Both create .venv
# from the pinned requirements on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Parallel pytest workers: one per core by default.
JOBS   ?= auto

.PHONY: all demo test test-fast test-board bench venv clean

all: test

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/tlsnic demo

test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) --dist loadfile -q --durations=12

# The pure-Python tests only (no simulator build).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not cosim and not slow"

# The board top under cocotb (RGMII PHY and UART models, TLS both ways):
# its own Verilator build of the whole board, so it is marked slow.
test-board: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_board_cosim.py

bench: $(STAMP)
	$(BIN)/tlsnic bench plain --json

clean:
	rm -rf build sim_build .pytest_cache
