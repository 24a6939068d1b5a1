# Commands of the qbo-backfill project. `make demo` and `make test` are the two
# that matter; the others are their steps.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON_VERSION := 3.11
UV_VERSION := 0.9.30
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
QBO := $(BIN)/qbo-backfill
MELTANO := $(BIN)/meltano
RUN_DIR := $(CURDIR)/.run

export MELTANO_PROJECT_ROOT := $(CURDIR)
# Compile every installed package to bytecode at install time, Meltano's plugin
# environments included (its uv backend reads this too). Where
# PYTHONDONTWRITEBYTECODE is set, Python never caches what it compiles, and each
# tap, target and Meltano start would compile its imports again: about 1 s of CPU
# for the tap alone.
export UV_COMPILE_BYTECODE := 1
export MELTANO_SEND_ANONYMOUS_USAGE_STATS := false
export EMBEDDED_PG_PORT ?= 55432
export QBO_EMULATOR_PORT ?= 8765

# Date range and window size of `make demo`. The demo company's captured
# records date from February 2023. Its generated ones end on 2024-12-31 in
# Pacific time, which is up to 2025-01-01T08:00Z, so the range ends a day later.
DEMO_START ?= 2017-01-01
DEMO_END ?= 2025-01-02
DEMO_WINDOW_SIZE ?= 90d

# Real QBO when QBO_CLIENT_ID is set (or MELTANO_ENVIRONMENT=prod with the
# TAP_QUICKBOOKS_BACKFILL_* credentials in .env), else the local emulator with
# its demo credentials. Values are never echoed because no recipe line names them.
ifdef QBO_CLIENT_ID
export MELTANO_ENVIRONMENT ?= prod
export TAP_QUICKBOOKS_BACKFILL_CLIENT_ID := $(QBO_CLIENT_ID)
export TAP_QUICKBOOKS_BACKFILL_CLIENT_SECRET := $(QBO_CLIENT_SECRET)
export TAP_QUICKBOOKS_BACKFILL_REFRESH_TOKEN := $(QBO_REFRESH_TOKEN)
export TAP_QUICKBOOKS_BACKFILL_REALM_ID := $(QBO_REALM_ID)
else
export MELTANO_ENVIRONMENT ?= dev
endif

ifeq ($(MELTANO_ENVIRONMENT),dev)
USE_EMULATOR := yes
export TAP_QUICKBOOKS_BACKFILL_CLIENT_ID ?= demo-client-id
export TAP_QUICKBOOKS_BACKFILL_CLIENT_SECRET ?= demo-client-secret
export TAP_QUICKBOOKS_BACKFILL_REFRESH_TOKEN ?= demo-refresh-token
export TAP_QUICKBOOKS_BACKFILL_REALM_ID ?= 9130357766900011
else
USE_EMULATOR := no
endif

# Prefix of recipe lines that talk to Postgres: exports PGHOST and friends of
# the embedded server, or nothing new when PGHOST is already set.
WITH_PG := eval "$$($(QBO) pg env)";

# Stamp files keep a second `make setup` quick: each step reruns only when one
# of its inputs changed.
SETUP_STAMP := $(VENV)/.qbo-setup.stamp
MELTANO_STAMP := $(CURDIR)/.meltano/.qbo-install.stamp
PACKAGE_FILES := pyproject.toml qbo-emulator/pyproject.toml tap-quickbooks-backfill/pyproject.toml
# Editable installs run from these folders, so uv does not compile them.
EDITABLE_SOURCES := qbo_backfill bench tap-quickbooks-backfill/tap_quickbooks_backfill \
	qbo-emulator/src
MELTANO_FILES := meltano.yml $(wildcard plugins/*/*.lock) tap-quickbooks-backfill/pyproject.toml

.PHONY: help setup demo test pg-start pg-stop emulator-start emulator-stop db-init \
	backfill counts validate clean setup-mage mage-lock bench bench-1m catalog

help:
	@echo "make demo     set up, start Postgres and the emulator, backfill the demo company"
	@echo "make test     set up and run every test suite"
	@echo "make backfill ENTITY=invoices|customers|items START=YYYY-MM-DD END=YYYY-MM-DD"
	@echo "make validate START=YYYY-MM-DD END=YYYY-MM-DD [ENTITY=...]  compare with QBO, write evidence/"
	@echo "make setup | pg-start | pg-stop | emulator-start | emulator-stop | db-init | clean"
	@echo "make setup-mage  create .venv-mage with mage-ai for orchestration/mage"
	@echo "make bench [BENCH_INVOICES=100000 ...]  time meltano run end to end, write bench-results/"

setup: $(SETUP_STAMP) $(MELTANO_STAMP)

# Mage's own environment, apart from Meltano's: mage-ai 0.9.80 pins click,
# typing_extensions, psutil, requests and ruamel.yaml versions that conflict
# with Meltano's. `uv pip sync` installs exactly the lock file, so a second run
# changes nothing.
MAGE_VENV := $(CURDIR)/.venv-mage
MAGE_LOCK := orchestration/requirements-mage.txt
MAGE_STAMP := $(MAGE_VENV)/.qbo-mage.stamp

setup-mage: $(MAGE_STAMP)

$(MAGE_VENV)/bin/python:
	@command -v uv >/dev/null || python$(PYTHON_VERSION) -m pip install --quiet uv==$(UV_VERSION)
	uv venv --quiet --python $(PYTHON_VERSION) $(MAGE_VENV)

$(MAGE_STAMP): $(MAGE_VENV)/bin/python $(MAGE_LOCK)
	uv pip sync --quiet --python $(MAGE_VENV)/bin/python $(MAGE_LOCK)
	touch $@

# Regenerate the Mage lock file after changing orchestration/requirements-mage.in.
mage-lock:
	uv pip compile --quiet --universal --python-version $(PYTHON_VERSION) \
		orchestration/requirements-mage.in -o $(MAGE_LOCK)

$(BIN)/python:
	@command -v uv >/dev/null || python$(PYTHON_VERSION) -m pip install --quiet uv==$(UV_VERSION)
	uv venv --quiet --python $(PYTHON_VERSION) $(VENV)

$(SETUP_STAMP): $(BIN)/python $(PACKAGE_FILES)
	uv pip install --quiet --python $(BIN)/python \
		-e '.[test]' -e './qbo-emulator[test]' -e './tap-quickbooks-backfill[test]'
	$(BIN)/python -m compileall -q $(EDITABLE_SOURCES)
	touch $@

$(MELTANO_STAMP): $(SETUP_STAMP) $(MELTANO_FILES)
	cd $(CURDIR) && $(MELTANO) install
	mkdir -p $(dir $@) && touch $@

pg-start: $(SETUP_STAMP)
	$(QBO) pg start

pg-stop: $(SETUP_STAMP)
	$(QBO) pg stop

emulator-start: $(SETUP_STAMP)
	$(QBO) emulator start

emulator-stop: $(SETUP_STAMP)
	$(QBO) emulator stop

db-init: pg-start
	$(WITH_PG) $(QBO) db init

# One entity over [START, END): make backfill ENTITY=invoices START=2023-01-01 END=2023-04-01
backfill: setup db-init $(if $(filter yes,$(USE_EMULATOR)),emulator-start)
	@test -n "$(ENTITY)" -a -n "$(START)" -a -n "$(END)" || \
		{ echo "usage: make backfill ENTITY=invoices|customers|items START=YYYY-MM-DD END=YYYY-MM-DD" >&2; exit 2; }
	$(WITH_PG) \
	export TAP_QB_$(shell echo '$(ENTITY)' | tr a-z A-Z)_START_DATE='$(START)' \
		TAP_QB_$(shell echo '$(ENTITY)' | tr a-z A-Z)_END_DATE='$(END)'; \
	$(MELTANO) run tap-qb-$(ENTITY) target-postgres

demo: setup db-init $(if $(filter yes,$(USE_EMULATOR)),emulator-start)
	$(WITH_PG) \
	export TAP_QUICKBOOKS_BACKFILL_WINDOW_SIZE='$(DEMO_WINDOW_SIZE)'; \
	for entity in INVOICES CUSTOMERS ITEMS; do \
		export TAP_QB_$${entity}_START_DATE='$(DEMO_START)' TAP_QB_$${entity}_END_DATE='$(DEMO_END)'; \
	done; \
	$(MELTANO) run qb_invoices_backfill qb_customers_backfill qb_items_backfill
	$(WITH_PG) $(MELTANO) invoke dbt-postgres:build
	$(WITH_PG) $(QBO) validate --entity all --start '$(DEMO_START)' --end '$(DEMO_END)'
	$(WITH_PG) $(QBO) db counts
	@echo "Postgres and the emulator keep running: make pg-stop emulator-stop"

counts: $(SETUP_STAMP)
	$(WITH_PG) $(QBO) db counts

# Compare a backfilled range with QBO and write evidence/<UTC timestamp>/:
# make validate START=2023-01-01 END=2025-01-01 [ENTITY=invoices] [VALIDATE_ARGS=--strict]
validate: setup pg-start $(if $(filter yes,$(USE_EMULATOR)),emulator-start)
	@test -n "$(START)" -a -n "$(END)" || \
		{ echo "usage: make validate START=YYYY-MM-DD END=YYYY-MM-DD [ENTITY=invoices|customers|items|all]" >&2; exit 2; }
	$(WITH_PG) $(QBO) validate --entity '$(or $(ENTITY),all)' --start '$(START)' --end '$(END)' $(VALIDATE_ARGS)

# Every suite runs even when an earlier one fails; pytest's exit code 5 (no test
# collected) counts as a failure.
TEST_SUITES := qbo-emulator tap-quickbooks-backfill .
PYTEST_ARGS ?=

test: setup setup-mage pg-start
	@failed=""; \
	$(WITH_PG) \
	for suite in $(TEST_SUITES); do \
		echo "=== pytest $$suite"; \
		status=0; \
		(cd "$$suite" && $(BIN)/pytest -p no:cacheprovider $(PYTEST_ARGS)) || status=$$?; \
		if [ "$$status" -ne 0 ]; then failed="$$failed $$suite(exit $$status)"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "FAILED suites:$$failed" >&2; exit 1; fi; \
	echo "all test suites passed"

# End-to-end benchmark against a generated emulator company, in a database of its
# own (qbo_bench) on the same server; writes bench-results/<UTC timestamp>.json.
# Sizes and limits: BENCH_* below; any other option of `python -m bench --help`
# through BENCH_ARGS.
BENCH_INVOICES ?= 100000
BENCH_CUSTOMERS ?= 10000
BENCH_ITEMS ?= 1000
BENCH_LIMITED_INVOICES ?= 150000
BENCH_ARGS ?=

bench: setup pg-start
	$(WITH_PG) $(BIN)/python -m bench --invoices $(BENCH_INVOICES) \
		--customers $(BENCH_CUSTOMERS) --items $(BENCH_ITEMS) \
		--limited-invoices $(BENCH_LIMITED_INVOICES) $(BENCH_ARGS)

# The tap's discovery output, which meltano.yml gives the extractors as their catalog.
# Run after changing a stream's schema; tests/test_e2e_catalog.py fails until then.
catalog: $(SETUP_STAMP)
	$(BIN)/tap-quickbooks-backfill --discover > extract/catalog.tmp
	$(BIN)/python -m json.tool --sort-keys extract/catalog.tmp \
		extract/tap-quickbooks-backfill.catalog.json
	rm extract/catalog.tmp

# One million invoices, to show that peak memory does not grow with volume (not in CI).
bench-1m:
	$(MAKE) bench BENCH_INVOICES=1000000 BENCH_CUSTOMERS=100000 BENCH_ITEMS=10000 \
		BENCH_ARGS='--no-limited $(BENCH_ARGS)'

clean:
	-$(QBO) emulator stop
	-$(QBO) pg stop
	rm -rf .pgdata .run .meltano .secrets evidence
