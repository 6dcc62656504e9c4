# The README's two commands are `make run` and `make test`; both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck unit sim-tests flow artifact browser chromium venv clean bench campaign sim package plan deploy \
	twilio-credentials api-key facade-account format run fuzz soak

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

# checkov pins an older boto3 than ours: it gets a venv of its own, used by the artifact tests.
CHECKOV := .venv-checkov/bin/checkov
$(CHECKOV): tests/artifact/requirements-checkov.txt
	test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet -r tests/artifact/requirements-checkov.txt
	touch $(CHECKOV)

# Test-only: the official twilio Node.js package drives the Twilio-compatible front door (tests/node).
NODE_TWILIO := tests/node/node_modules/twilio/package.json
$(NODE_TWILIO): tests/node/package.json tests/node/package-lock.json
	npm ci --prefix tests/node --no-audit --no-fund --silent
	touch $(NODE_TWILIO)

# Test-only: Debian's Chromium, which Playwright drives against the status page (tests/browser). Installed
# when this runs as root with apt-get (CI does); elsewhere the browser tests are skipped, saying how to run them.
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null || \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; \
	else echo "Debian's chromium is not installed and this is not root: the browser tests will be skipped" \
		"(as root: apt-get install chromium; then make browser)"; fi

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Tests by tier (docs/development.md). `make test` runs lint, types and every tier in one pytest run.
unit: $(STAMP)
	$(BIN)/pytest tests/unit

sim-tests: $(STAMP)
	$(BIN)/pytest tests/sim

flow: $(STAMP) $(NODE_TWILIO)
	$(BIN)/pytest tests/flow

artifact: $(STAMP) $(CHECKOV)
	$(BIN)/pytest tests/artifact

browser: $(STAMP) chromium
	$(BIN)/pytest tests/browser

test: lint typecheck $(CHECKOV) $(NODE_TWILIO) chromium
	$(BIN)/pytest

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .venv-checkov .pytest_cache .mypy_cache .ruff_cache tests/node/node_modules build .chalice/deployments

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

# The deployed connector at campaign scale (1,000,000 messages at 1,000 msg/s), as a model driven by the
# project's own plan, pacing and polling code; fails if a planned campaign loses, throttles or drains slow.
campaign: $(STAMP)
	$(BIN)/python -m tests.bench.campaign

# The property tests at a size too slow for every `make test`.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest --hypothesis-show-statistics tests/unit/test_properties.py \
		tests/flow/test_openapi_fuzz.py tests/flow/test_api.py::TestHostileInput tests/flow/test_api.py::TestBoundedJson \
		tests/unit/test_facade.py::test_hostile_forms_get_a_201_or_a_twilio_error_never_a_500

# The local Twilio simulator on its own (prints its account SID and auth token).
sim: $(STAMP)
	$(BIN)/python -m local.twilio_sim --port $(or $(PORT),8931)

# The one deploy path (docs/deploy.md): `chalice package` with infra/resources.json merged and settings
# derived (the queue's visibility timeout), then one CloudFormation stack. `chalice deploy` is refused.
STAGE ?= dev
package: $(STAMP)
	AWS_DEFAULT_REGION=$(or $(AWS_DEFAULT_REGION),us-east-1) $(BIN)/python -m infra.deploy package --stage $(STAGE)

# What SEND_RATE reserves (every function, the triggers, the Twilio budget): `make plan STAGE=prod [RATE=100]`.
plan: $(STAMP)
	$(BIN)/python -m infra.deploy plan --stage $(STAGE) $(if $(RATE),--rate $(RATE))

deploy: $(STAMP)
	@test -n "$(BUCKET)" || { echo "usage: make deploy STAGE=prod BUCKET=<an S3 bucket of yours> [REGION=…] [ALARM_TOPIC_ARN=…]"; exit 2; }
	$(BIN)/python -m infra.deploy deploy --stage $(STAGE) --bucket $(BUCKET) $(if $(REGION),--region $(REGION)) \
		$(if $(STACK),--stack-name $(STACK)) $(if $(ALARM_TOPIC_ARN),--parameter AlarmTopicArn=$(ALARM_TOPIC_ARN)) \
		$(if $(TRACING),--parameter Tracing=$(TRACING)) $(if $(LOG_RETENTION_DAYS),--parameter LogRetentionDays=$(LOG_RETENTION_DAYS))

# After the first deploy: the Twilio credentials (asked for, never on the command line) and API keys.
twilio-credentials: $(STAMP)
	$(BIN)/python -m infra.keys twilio --stage $(STAGE) $(if $(REGION),--region $(REGION)) $(if $(STACK),--stack-name $(STACK))

# An account for the Twilio-compatible front door (platforms' Base URL, Account SID and token).
facade-account: $(STAMP)
	@test -n "$(NAME)" || { echo "usage: make facade-account STAGE=prod NAME=<platform> [CONNECTION=<name>]"; exit 2; }
	$(BIN)/python -m infra.keys facade-account --stage $(STAGE) --name "$(NAME)" $(if $(CONNECTION),--connection $(CONNECTION)) $(if $(REGION),--region $(REGION)) $(if $(STACK),--stack-name $(STACK))

api-key: $(STAMP)
	@test -n "$(NAME)" || { echo "usage: make api-key STAGE=prod NAME=<who the key is for> [ROLE=send|read|admin] [CONNECTIONS=a,b]"; exit 2; }
	$(BIN)/python -m infra.keys api-key --stage $(STAGE) --name $(NAME) $(if $(ROLE),--role $(ROLE)) $(if $(CONNECTIONS),--connections $(CONNECTIONS)) $(if $(REGION),--region $(REGION)) $(if $(STACK),--stack-name $(STACK))
