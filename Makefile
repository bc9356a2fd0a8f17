# Optimizer Lab. `make run` starts the product; `make test` runs every test. Both create .venv with pip first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint bench screenshot gpu-wheels clean

$(STAMP): requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) on PATH (or: make PYTHON=python3 ...)"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)  ## UI + worker + Redis (started if none answers) + SQLite under ./data
	$(PY) -m app.serve

test: $(STAMP)  ## the whole suite: unit, store (SQLite, and PostgreSQL with TEST_DATABASE_URL), live worker, browser
	$(PY) -m pytest

test-fast: $(STAMP)  ## everything but the browser and live-worker tests
	$(PY) -m pytest -m "not browser and not live_worker"

lint: $(STAMP)
	$(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m mypy app workers models db

bench: $(STAMP)
	$(PY) bench/overhead.py
	$(PY) bench/compare_page.py
	$(PY) bench/metric_store.py
	$(PY) bench/packed.py

screenshot: $(STAMP)  ## regenerate docs/live.png for the README
	$(PY) bench/screenshot.py

# what a lent GPU machine (Python 3.12, PyTorch, the scientific stack) lacks to run bench/gpu_check.sh
GPU_WHEELS := pydantic pydantic-core annotated-types typing-inspection pydantic-settings python-dotenv sqlalchemy \
	alembic mako pytorch-optimizer mnist1d

gpu-wheels: $(STAMP)  ## wheels for bench/gpu_check.sh on a GPU machine, at the versions installed here, into .whl/
	rm -rf .whl && grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
	$(PY) -m pip freeze | sed 's/_/-/g' | grep -iE '^($(shell echo $(GPU_WHEELS) | sed 's/ /|/g'))==' > /tmp/gpu-wheels.txt
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl -r /tmp/gpu-wheels.txt
	@ls .whl | wc -l | xargs echo "wheels in .whl:" && du -sh .whl

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
