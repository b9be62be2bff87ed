# Thin targets: the logic lives in tools/, tasks/ and the test suites.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help host-deps venv artifact sandbox deploy up down ssh tunnel lint test-app \
	test-scripts test-alerts test-deploy idempotence verify drills test bench up-cluster test-cluster \
	test-sandbox test-cluster-then-offline \
	down-cluster rollback api-key restore

VENV := .venv
BIN := $(VENV)/bin
INVENTORY ?= inventories/local.py
CLUSTER := inventories/cluster.py
# CI starts from a brand-new sandbox, so `make test` proves the fresh-machine path every time.
FRESH_SANDBOX ?= $(CI)
ARCHS ?= x86_64 aarch64
PYTEST := $(BIN)/pytest -p no:cacheprovider
# Deploys and suites that change or read the sandbox take turns (two terminals, two sessions).
ENV_NAME = $(notdir $(basename $(INVENTORY)))
ONE_AT_A_TIME = flock /tmp/techno-os-$(ENV_NAME).lock env
DRILLS ?= tests/infra
# On the cluster, the drills about several hosts (releases one host at a time, an API host lost,
# a key's limits across hosts); the single-host sandbox runs every drill.
CLUSTER_DRILLS := tests/infra/test_releases.py tests/infra/test_client_keys.py

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

host-deps: ## Install the control machine's Debian packages (PostgreSQL 15, promtool, Docker...)
	@tools/host_deps.sh

venv: $(VENV)/.stamp ## Create the tooling venv (.venv) with the app installed editable
$(VENV)/.stamp: pyproject.toml app/pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install --python $(BIN)/python -q -r pyproject.toml -e ./app
	touch $@

artifact: venv host-deps ## Build the release: wheel, wheelhouses, images, manifest (build/artifact)
	$(BIN)/python tools/sandbox.py engine
	@mkdir -p build
	flock build/.artifact.lock $(BIN)/python tools/build_artifact.py $(addprefix --arch ,$(ARCHS))

sandbox: venv host-deps ## Create the local VMs techno-os-vm and techno-os-backup
	$(if $(filter true,$(FRESH_SANDBOX)),$(BIN)/python tools/sandbox.py down inventories/local.py)
	$(BIN)/python tools/sandbox.py up inventories/local.py

deploy: venv artifact ## Deploy to INVENTORY (default: the local VM)
	$(ONE_AT_A_TIME) $(BIN)/pyinfra -y $(INVENTORY) deploy.py

up: host-deps venv artifact sandbox deploy ## Fresh machine -> healthy stack in the local VM

down: venv ## Destroy the local VMs and their volumes
	$(BIN)/python tools/sandbox.py down inventories/local.py

up-cluster: host-deps venv artifact ## Five VMs (edge, db, 2 api, backup) and a deploy to them
	$(if $(filter true,$(FRESH_SANDBOX)),$(BIN)/python tools/sandbox.py down $(CLUSTER))
	$(BIN)/python tools/sandbox.py up $(CLUSTER)
	flock /tmp/techno-os-cluster.lock $(BIN)/pyinfra -y $(CLUSTER) deploy.py

down-cluster: venv ## Destroy the cluster's VMs
	$(BIN)/python tools/sandbox.py down $(CLUSTER)

rollback: venv ## Put the previous API release back on every API host of INVENTORY
	$(ONE_AT_A_TIME) $(BIN)/python tools/release.py $(INVENTORY) rollback

restore: venv ## Restore INVENTORY's database, API hosts stopped: make restore ARGS="--latest"
	$(ONE_AT_A_TIME) $(BIN)/python tools/restore.py $(INVENTORY) $(ARGS)

api-key: venv ## Client keys on INVENTORY: make api-key ARGS="create --user alice --rpm 60"
	@$(BIN)/python tools/api_key.py $(INVENTORY) $(ARGS)

ssh: venv ## Open a root shell in the local VM
	$(BIN)/python tools/sandbox.py ssh

tunnel: venv ## Forward the VM's loopback API (8000) and Prometheus (9090) here
	$(BIN)/python tools/sandbox.py tunnel

lint: venv host-deps ## ruff, mypy and shellcheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --config-file app/pyproject.toml app/src/techno_os_api
	shellcheck files/scripts/*.sh files/images/*/*.sh tools/*.sh .ci/run

test-app: venv host-deps ## App tests: real PostgreSQL, loopback provider stand-ins
	$(PYTEST) tests/app

test-scripts: venv host-deps ## Backup/restore scripts and the DB image against the local Docker
	$(BIN)/python tools/sandbox.py engine
	$(PYTEST) tests/scripts

test-alerts: venv host-deps ## promtool check config/rules and rule unit tests
	$(PYTEST) tests/alerts

test-deploy: venv ## Bad inputs stop the deploy before any change (against INVENTORY)
	$(ONE_AT_A_TIME) INVENTORY=$(INVENTORY) $(PYTEST) tests/deploy

idempotence: venv ## A second deploy of an unchanged tree must change nothing
	$(ONE_AT_A_TIME) $(BIN)/python tools/check_idempotence.py $(INVENTORY)

verify: venv ## Read-only runbook checks against INVENTORY (safe on production)
	@mkdir -p reports
	$(ONE_AT_A_TIME) INVENTORY=$(INVENTORY) $(PYTEST) tests/infra -m readonly --record-verification \
		--junitxml=reports/infra-readonly-$(ENV_NAME).xml

drills: venv ## State-changing drills (refused unless the inventory is disposable)
	@mkdir -p reports
	$(ONE_AT_A_TIME) INVENTORY=$(INVENTORY) $(PYTEST) $(DRILLS) -m drill \
		--junitxml=reports/infra-drills-$(ENV_NAME).xml

test-cluster: up-cluster ## The cluster: fresh VMs and deploy, idempotence, its drills, the read-only suite
	$(MAKE) idempotence INVENTORY=$(CLUSTER)
	$(MAKE) drills INVENTORY=$(CLUSTER) DRILLS="$(CLUSTER_DRILLS)"
	@# The nightly backup, as cron runs it on the db host, so the read-only suite checks an archive.
	$(BIN)/python tools/sandbox.py ssh --inventory $(CLUSTER) --host techno-os-dbhost -- \
		/opt/techno-os/scripts/backup_observability.sh
	$(MAKE) verify INVENTORY=$(CLUSTER)

# Everything CI runs. The local sandbox's deploy, drills and read-only suite (the longest chain,
# mostly waiting on alerts and timeouts) run beside the cluster's and then the offline suites,
# so the whole stays well under CI's hour on two cores (35-40 min); each chain runs its steps
# in order.
test: lint artifact ## Everything CI runs
	$(MAKE) -j2 --output-sync=line test-sandbox test-cluster-then-offline

test-sandbox: ## The local sandbox: fresh VMs and deploy, idempotence, deploy validation, drills, read-only suite
	$(MAKE) -j1 up idempotence test-deploy drills verify

test-cluster-then-offline:
	$(MAKE) -j1 test-cluster test-app test-alerts test-scripts

bench: venv ## Benchmarks (figures go to docs/benchmarks.md)
	$(BIN)/python bench/bench_gateway.py
	$(BIN)/python bench/bench_deploy.py
	$(BIN)/python bench/bench_backup.py
