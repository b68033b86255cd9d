# The two commands a newcomer needs:  make run  (main job, embedded)  and  make test.
# Each installs what it needs itself: virtual environment, Python packages, Kafka jars.
# Afterwards `. .venv/bin/activate` (once per shell) puts `tickstream` on PATH, as the
# README's commands and the run's start-up banner assume (or type .venv/bin/tickstream).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-unit setup system-deps kafka-jars lint bench clean

setup: $(VENV)/.installed .cache/kafka/libs/.fetched

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

.cache/kafka/libs/.fetched: kafka/pom.xml
	scripts/kafka-local.sh fetch

kafka-jars: .cache/kafka/libs/.fetched

# Main job on the embedded default (local broker + chDB). Pass options with ARGS="...".
run: setup
	$(BIN)/tickstream run $(ARGS)

# Debian packages some tests use (prometheus, docker-compose, chromium), when missing.
system-deps:
	scripts/install-system-deps.sh

test: setup system-deps
	scripts/test.sh

# Pure tests only (tests/unit: no broker, no ClickHouse, no browser): seconds, for the edit loop.
# tests/integration needs the broker, chDB and Prometheus; tests/browser needs Debian's chromium.
test-unit: setup
	$(BIN)/python -m pytest -q -n 2 tests/unit

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/tickstream bench analytics
	$(BIN)/tickstream bench publisher

# Stops a local broker left on 127.0.0.1:9092 and deletes .tickstream/ (the default chDB
# directory, the local broker's storage, Faust data, record seeds) and the test caches;
# keeps .venv and the broker's jars (.cache/kafka).
clean:
	-scripts/kafka-local.sh down
	rm -rf .tickstream .pytest_cache .hypothesis
