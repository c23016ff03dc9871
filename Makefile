# flower-suite: `make demo` and `make test` work on a fresh machine with Python 3.11+.
# They create .venv, install torch (TORCH_SPEC, CPU build by default), then the package.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel. For CUDA, e.g.: make test TORCH_SPEC="torch==2.5.1" TORCH_INDEX=https://download.pytorch.org/whl/cu124
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.installed

.PHONY: install demo test fuzz lint bench flwr-run clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/flower-suite demo

test: $(STAMP)
	$(BIN)/ruff check flower_suite tests benchmarks
	$(BIN)/mypy flower_suite
	$(BIN)/python -m pytest -q

# The random search behind the property tests (`make test` runs them derandomized, with their
# @example pins). A failure prints the seed: rerun it with `make fuzz FUZZ_SEED=<seed>`, then
# pin the falsifying example with @example. HYPOTHESIS_FUZZ_SCALE multiplies each test's budget
# (20 by default), hence the longer per-test timeout.
fuzz: $(STAMP)
	@seed="$(FUZZ_SEED)"; seed=$${seed:-$$($(BIN)/python -c "import random; print(random.randrange(2**32))")}; \
	echo "fuzz seed $$seed (rerun: make fuzz FUZZ_SEED=$$seed)"; \
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q -m fuzz --timeout=3600 --hypothesis-seed=$$seed

lint: $(STAMP)
	$(BIN)/ruff check flower_suite tests benchmarks
	$(BIN)/ruff format --check flower_suite tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/runner_overhead.py

# `flwr run` of the package's app on a local simulation federation (see README).
flwr-run: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/flwr_run_local.sh

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
