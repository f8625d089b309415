# Two commands do everything on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The ray extra: the tests run the Ray engine on a local two-node cluster; the demo does not.
RAY_STAMP := $(VENV)/.installed-ray

.PHONY: demo test ui lint lock clean-data benchmark

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)  ## land the 2013 flights, build features, train, score Sep-Dec, print a summary
	$(BIN)/batch-platform demo

$(RAY_STAMP): $(STAMP) requirements-ray.lock
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock -r requirements-ray.lock
	touch $(RAY_STAMP)

# Test modules spread over this many processes (pytest-xdist), each module whole in one.
TEST_WORKERS ?= 2

test: $(RAY_STAMP)  ## the whole test suite, the Ray engine's and the UI's included (installs chromium, postgresql)
	scripts/ensure-chromium
	scripts/ensure-postgresql
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

ui: $(STAMP)  ## the Dagster UI on 127.0.0.1:3000 with the persistent instance under data/
	$(BIN)/batch-platform ui

benchmark: $(RAY_STAMP)  ## the tables of docs/performance.md: the year, 1M and 10M rows, the Ray engine (about an hour on 2 cores)
	$(BIN)/python benchmarks/benchmark.py

lint: $(STAMP)
	$(BIN)/ruff check batch_platform batch_platform_tests benchmarks scripts

lock:  ## re-resolve requirements.lock from pyproject.toml in a scratch venv
	rm -rf /tmp/batch-platform-lock && $(PYTHON) -m venv /tmp/batch-platform-lock
	/tmp/batch-platform-lock/bin/pip install --quiet ".[dev]"
	/tmp/batch-platform-lock/bin/pip freeze --exclude batch_platform > requirements.lock
	/tmp/batch-platform-lock/bin/pip install --quiet "ray[data]==2.60.0" -c requirements.lock
	{ grep '^#' requirements-ray.lock; /tmp/batch-platform-lock/bin/pip freeze \
		--exclude batch_platform | grep -vxFf requirements.lock; } > requirements-ray.lock.new
	mv requirements-ray.lock.new requirements-ray.lock

clean-data:  ## remove everything the pipeline generated under data/
	find data -mindepth 1 ! -name README.md -exec rm -rf {} +
