# medlake: build, test and local infrastructure.
#
# Local services, no Docker needed: a Kafka broker from Maven Central jars,
# an FTP server (pyftpdlib), pyspark + delta-spark for interoperability tests.
# Everything downloaded or run lives under $(MEDLAKE_CACHE), outside the
# clone, and so does the cargo target directory. See docs/local-infra.md.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export MEDLAKE_CACHE ?= $(HOME)/.cache/medlake
export CARGO_TARGET_DIR ?= $(MEDLAKE_CACHE)/target

CARGO ?= cargo
HELM ?= $(shell command -v helm 2>/dev/null || echo $(HOME)/go/bin/helm)

.PHONY: help
help: ## List the targets.
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

## ---- Build, test, check -----------------------------------------------

.PHONY: build test check check-rust check-deploy tools test-tools check-tools ci-fresh clean distclean
build: ## cargo build --workspace
	$(CARGO) build --workspace

test: ## Unit + integration tests against a real broker (started if KAFKA_BROKERS is unset).
	scripts/test.sh

check: check-rust check-deploy ## Formatting, clippy, compose and chart checks.

check-rust: ## cargo fmt --check and clippy -D warnings.
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Deployment checks (scripts/check-deploy.sh): `docker compose config`,
# promtool on the alerts and dashboards, `helm lint` / `helm template`.
check-deploy: ## Validate docker-compose.yml and the Helm chart.
	scripts/check-deploy.sh

tools: test-tools check-tools ## Install everything the tests and checks need.

test-tools: kafka-jars py-deps spark-deps trino-deps ## What `make test` needs: broker jars, Python env (moto, pyspark), delta jars, Trino.

check-tools: helm compose promtool ## What `make check-deploy` needs: helm, docker compose, promtool.

ci-fresh: ## Run .ci/run in a fresh clone of HEAD with an empty cache and target dir (~25 min).
	scripts/ci-fresh.sh

clean: ## Remove build output (the cargo target dir) and local scratch.
	$(CARGO) clean
	rm -rf spark-warehouse metastore_db derby.log

distclean: clean kafka-clean ftp-down ## Also stop local services and wipe $(MEDLAKE_CACHE).
	rm -rf "$(MEDLAKE_CACHE)"

## ---- Local Kafka broker (127.0.0.1:9092) ----------------------------------

.PHONY: kafka-up kafka-down kafka-restart kafka-clean kafka-jars
kafka-up: ## Start the local broker (no-op when it runs).
	scripts/kafka-up.sh

kafka-down: ## Stop the local broker (data kept).
	scripts/kafka-down.sh

kafka-restart: ## Restart the local broker keeping its data.
	scripts/kafka-restart.sh

kafka-clean: ## Stop the local broker and wipe its data.
	scripts/kafka-clean.sh

kafka-jars: ## Fetch the broker's jars from Maven Central (cached).
	scripts/kafka-jars.sh

## ---- Local FTP server (127.0.0.1:2121) ----------------------------------

.PHONY: ftp-up ftp-down py-deps
ftp-up: ## Start the local FTP server (FTP_USER, FTP_PASSWORD, FTP_PORT, FTP_ROOT).
	scripts/ftp-up.sh

ftp-down: ## Stop the local FTP server.
	scripts/ftp-down.sh

py-deps: ## Create the Python environment with scripts/requirements.txt.
	scripts/py-deps.sh

## ---- Spark with Delta Lake (interoperability tests) ---------------------

.PHONY: spark-deps spark-smoke
spark-deps: ## Install pyspark + delta-spark and the delta jars (no network at run time).
	scripts/spark-deps.sh

spark-smoke: spark-deps ## Write and read back a Delta table with Spark.
	"$(MEDLAKE_CACHE)/venv/bin/python" scripts/spark_session.py smoke

## ---- Trino 476 (interoperability tests; needs a JDK 24+) ----------------

.PHONY: trino-deps trino-up trino-down
# Exit status 3 of the script: no JDK 24+ on this machine. Not an error here;
# the Trino test then says it was skipped and why.
trino-deps: ## Fetch and unpack trino-server 476 from Maven Central (cached).
	scripts/trino-deps.sh || [ $$? -eq 3 ]

trino-up: ## Start a local Trino on 127.0.0.1:8085 (TRINO_S3_ENDPOINT adds an s3 catalog).
	scripts/trino-up.sh

trino-down: ## Stop the local Trino.
	scripts/trino-down.sh

## ---- Helm ---------------------------------------------------------------

.PHONY: helm
helm: ## Build the pinned helm v3 with go install (cached in ~/go/bin).
	scripts/install-helm.sh

## ---- Deployment checks: docker compose CLI, promtool -------------------

.PHONY: compose promtool
compose: ## Build the pinned docker compose CLI plugin (~/.docker/cli-plugins).
	scripts/install-compose.sh

promtool: ## Build the pinned promtool (~/go/bin).
	scripts/install-promtool.sh

## ---- Demo ---------------------------------------------------------------

.PHONY: demo bench
demo: ## The whole pipeline locally: generate files, deliver by FTP and HTTP, print what landed.
	scripts/demo.sh

bench: ## Release benchmark: throughput, latency, RSS, MERGE; writes bench/results/<date>-<commit>.json.
	scripts/bench.sh $(BENCH_ARGS)
