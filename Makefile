# The two commands of the README: `make run` and `make test`. Both install what is missing
# (Debian packages, the virtualenv at .venv) and are cheap to repeat on a warm machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hutch-installed

DEBS_RUN := python3 python3-venv ca-certificates iproute2 procps runc runsc gcc libc6-dev mmdebstrap nftables s3fs nginx \
	e2fsprogs btrfs-progs mount util-linux skopeo umoci
DEBS_TEST := $(DEBS_RUN) postgresql-15 curl jq chromium tmux openssh-client docker-registry

CHAIN := tests/chain
CHAIN_STAMP := $(CHAIN)/node_modules/.hutch-installed
REGISTRY := tests/registry
REGISTRY_STAMP := $(REGISTRY)/node_modules/.hutch-installed

.PHONY: run test check lint types openapi bench debs-run debs-test venv chain registry console clean

run: debs-run venv
	$(BIN)/hutch images build
	$(BIN)/hutch serve

# The suite as two pytest processes at once (tests/e2e beside the rest; see
# tests/support/run_suite.py for why they share nothing); HUTCH_TEST_SERIAL=1 runs one.
test: debs-test venv chain registry
	$(BIN)/python -m tests.support.run_suite

check: debs-test venv chain registry lint types
	$(BIN)/python -m tests.support.run_suite

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

types: venv
	$(BIN)/mypy

# Benchmarks print JSON and write bench/results/; they start their own server.
bench: debs-test venv registry
	@scripts/ensure-debs.sh wrk iperf3
	$(BIN)/python bench/report.py

# Regenerates the committed OpenAPI document; a test fails when it drifts from the app.
openapi: venv
	$(BIN)/hutch openapi > specs/openapi.yaml

debs-run:
	@scripts/ensure-debs.sh $(DEBS_RUN)

debs-test:
	@scripts/ensure-debs.sh $(DEBS_TEST)

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

# The local EVM chain of the deploy tests (anvil, solc) from the npm registry, pinned.
chain: $(CHAIN_STAMP)

$(CHAIN_STAMP): $(CHAIN)/package.json $(CHAIN)/package-lock.json
	npm install --prefix $(CHAIN) --no-audit --no-fund --no-save --loglevel=error
	@touch $(CHAIN_STAMP)

# The npm registry of the egress tests' small internet (verdaccio, offline), pinned.
registry: $(REGISTRY_STAMP)

$(REGISTRY_STAMP): $(REGISTRY)/package.json $(REGISTRY)/package-lock.json
	npm install --prefix $(REGISTRY) --no-audit --no-fund --no-save --loglevel=error
	@touch $(REGISTRY_STAMP)

# The web console's bundle (Preact + htm, xterm.js, esbuild), from the npm registry, pinned.
# The built files are committed (src/hutch/api/console/static), so serving needs no Node;
# run this after changing console/ (a unit test fails while the bundle is older).
console:
	npm ci --prefix console --no-audit --no-fund --loglevel=error
	cd console && node build.mjs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(CHAIN)/node_modules $(REGISTRY)/node_modules console/node_modules
