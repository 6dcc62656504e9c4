# The README's two commands are `make run` and `make test`; both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck unit venv clean bench sim package format run fuzz soak

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The whole connector on this machine: DEMO=1 sends a few messages, REAL_TWILIO=1 uses your Twilio account.
run: $(STAMP)
	$(BIN)/python -m local.run --port $(or $(PORT),8000) $(if $(DEMO),--demo) $(if $(REAL_TWILIO),--real-twilio)

# Figures, not assertions: ratios and rates measured side by side in one run.
bench: $(STAMP)
	$(BIN)/python -m tests.bench

# Messages through the local stack with faults; passes only if nothing is lost or sent twice
# and every status matches the simulator's truth. SOAK_MESSAGES=5000 by default (~15 min here).
soak: $(STAMP)
	$(BIN)/python -m tests.bench.soak

# The property tests at a size too slow for every `make test`.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest tests/unit/test_properties.py tests/flow/test_openapi_fuzz.py

# The local Twilio simulator on its own (prints its account SID and auth token).
sim: $(STAMP)
	$(BIN)/python -m local.twilio_sim --port $(or $(PORT),8931)

STAGE ?= dev
package: $(STAMP)
	AWS_DEFAULT_REGION=$(or $(AWS_DEFAULT_REGION),us-east-1) $(BIN)/chalice package --stage $(STAGE) --merge-template infra/resources.json build/$(STAGE)
