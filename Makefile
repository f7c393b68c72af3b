# Every target creates .venv on first use; nothing outside the checkout is touched.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test lint bench soak clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,lint]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tickrec demo --root $(or $(ROOT),demo-data)

# Two workers: most tests wait on sockets, timers and child processes, so two
# share the two cores well (4 min instead of 7.5 on the 2-core VM).
test: $(STAMP)
	$(BIN)/pytest -n 2 tests

# mypy as configured in pyproject.toml (--strict over the product packages) and
# ruff on the same packages, benchmarks/ and tests/. Not part of `make test`.
PRODUCT := schemas recorder storage replay tickrec
lint: $(STAMP)
	$(BIN)/mypy
	$(BIN)/ruff check $(PRODUCT) benchmarks tests

# The fault suite at length: many more kill -9s, fuzz examples and torn offsets.
# TICKREC_SOAK_SEED=N picks another kill schedule.
soak: $(STAMP)
	SOAK=1 $(BIN)/pytest -o timeout=1800 tests/faults

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo-data .pytest_cache .hypothesis
