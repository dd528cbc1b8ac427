# medlake: build, test and local infrastructure.
#
# Local services (no Docker needed): a Kafka broker from Maven Central jars,
# an FTP server (pyftpdlib), pyspark + delta-spark for interoperability tests.
# Everything downloaded or run lives under $(MEDLAKE_CACHE), outside the clone.
# See docs/local-infra.md.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export MEDLAKE_CACHE ?= $(HOME)/.cache/medlake
export CARGO_TARGET_DIR ?= $(HOME)/.cache/medlake/target

CARGO ?= cargo

.PHONY: help
help: ## List the targets.
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

## ---- Rust ---------------------------------------------------------------

.PHONY: build
build: ## cargo build --workspace
	$(CARGO) build --workspace

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

.PHONY: ftp-up ftp-down ftp-deps
ftp-up: ## Start the local FTP server (FTP_USER, FTP_PASSWORD, FTP_PORT, FTP_ROOT).
	scripts/ftp-up.sh

ftp-down: ## Stop the local FTP server.
	scripts/ftp-down.sh

ftp-deps: py-deps ## Install pyftpdlib (the Python environment).

.PHONY: py-deps
py-deps: ## Create the Python environment with scripts/requirements.txt.
	scripts/py-deps.sh

## ---- Spark with Delta Lake (interoperability tests) ---------------------

.PHONY: spark-deps spark-smoke
spark-deps: ## Install pyspark + delta-spark and the delta jars (no network at run time).
	scripts/spark-deps.sh

spark-smoke: spark-deps ## Write and read back a Delta table with Spark.
	"$(MEDLAKE_CACHE)/venv/bin/python" scripts/spark_session.py smoke
