# Quarry: `make run` installs and starts Quarry (API + UI); `make test` runs the checks CI runs.
.PHONY: install run test test-all lint bench

install:
	@./scripts/install.sh

run: install
	@./scripts/run.sh

lint: install
	.venv/bin/ruff check app ingest embedding retrieval ui client tests bench
	.venv/bin/mypy

# Two tests at a time (most of a test's time is spent waiting on the processes it runs);
# TEST_WORKERS=0 runs them one by one.
TEST_WORKERS ?= 2

test: lint
	HF_HUB_OFFLINE=1 .venv/bin/pytest -q -m "not slow" --durations=20 -n $(TEST_WORKERS) --dist worksteal

# Everything, the minutes-long evaluation runs (SciFact) included.
test-all: lint
	HF_HUB_OFFLINE=1 .venv/bin/pytest -q --durations=20 -n $(TEST_WORKERS) --dist worksteal

bench: install
	HF_HUB_OFFLINE=1 .venv/bin/python bench/ingest.py
	HF_HUB_OFFLINE=1 .venv/bin/python bench/store.py
	HF_HUB_OFFLINE=1 .venv/bin/python bench/search.py
