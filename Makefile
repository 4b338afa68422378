# MediSwift: `make demo` sets everything up and runs the demo recipe; `make test` runs what CI runs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# A local wheel folder configured for pip (if any) is passed on to uv, which ignores pip's config.
FIND_LINKS := $(shell pip config get global.find-links 2>/dev/null)
UV_LINKS := $(if $(FIND_LINKS),--find-links $(FIND_LINKS),)
MIRROR ?= $(if $(wildcard ../shared/mirror),$(abspath ../shared/mirror),)
export MEDISWIFT_HOME ?= $(abspath .mediswift)
# Cached bytecode matters here: torch, prefect and mlflow are large, and the tests start many
# Python processes (torchrun, process pools, Prefect workers).
unexport PYTHONDONTWRITEBYTECODE
RECIPE ?= demo

.PHONY: install install-eval demo repro-small repro-claims repro-claims-gpu test test-fast lint format bench serve serve-team stop clean docs cluster cluster-stop

# uv lists every package it downloads and installs (a few hundred lines): into a log file,
# one summary line on success, the log's tail on failure. torch is pinned to the CPU build
# here; pyproject keeps the range open for GPU users. $(1): the extras to install.
define uv_install
	@$(VENV)/bin/uv pip install --python $(PY) $(UV_LINKS) 'torch==2.13.0' 'mlflow<3.18' -e '.[$(1)]' \
		> $(VENV)/install.log 2>&1 \
		&& echo "installed into $(VENV) ($$(grep -c '^ + ' $(VENV)/install.log) packages added; see $(VENV)/install.log)" \
		|| { tail -n 40 $(VENV)/install.log; echo "install failed; full output in $(VENV)/install.log"; exit 1; }
endef
EXTRAS := dev,bench,dask,hf,team
EXTRAS_EVAL := $(EXTRAS),eval

# The compiled helper is rebuilt when its source changes (the install is editable).
$(VENV)/.installed: pyproject.toml setup.py $(wildcard mediswift/data/*.pyx)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q uv
	$(call uv_install,$(EXTRAS))
	touch $@

install: $(VENV)/.installed

# lm-evaluation-harness (the `eval` extra, 27 more packages a demo never uses): CI installs it
# so that tests/test_lm_eval.py runs there; `make test` elsewhere skips that test without it.
$(VENV)/.installed-eval: $(VENV)/.installed
	$(call uv_install,$(EXTRAS_EVAL))
	touch $@

install-eval: $(VENV)/.installed-eval

demo: install
	$(VENV)/bin/mediswift run --recipe $(RECIPE) $(if $(MIRROR),--mirror $(MIRROR),)

# The small reproduction that learns (about an hour on 2 cores; see the README).
repro-small:
	$(MAKE) demo RECIPE=repro-small

# The paper's headline claim in miniature: larger sparse models against a smaller dense one of
# equal active non-embedding parameters, two seeds each, a precondition arm, a verdict per claim
# in the report (under 90 minutes on 2 cores; see the README).
repro-claims:
	$(MAKE) demo RECIPE=repro-claims

# The same experiment nearer the paper's regime on one GPU (CUDA for pre-training and
# fine-tuning), then an export of one compared model.
repro-claims-gpu:
	$(MAKE) demo RECIPE=repro-claims-gpu
	$(VENV)/bin/mediswift export --recipe repro-claims-gpu --variant mini-s75-seed0 --out exports/repro-claims-gpu-mini-s75

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# Two workers, a test file each at a time: most of the slow tests wait on servers and child
# processes, so two files at once take about half the time on 2 cores. Files go out in
# collection order, the longest first (tests/conftest.py): xdist's default reorder would send
# the files with the most tests first, leaving the long one-test files for the end.
test: lint
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests

# The fast loop: the library's tests that need no Prefect server and start no training
# processes (under 2 minutes on 2 cores; see the README).
test-fast: install
	$(PY) -m pytest -q -m "not slow and not server and not subprocess" tests

# The stage-manifest and recipe-settings references, generated from the types (a test checks).
docs: install
	$(PY) -c "from flows.registry import manifest_reference; open('docs/manifests.md', 'w').write(manifest_reference())"
	$(PY) -c "from mediswift.config import settings_reference as r; open('docs/settings.md', 'w').write(r())"

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf .mediswift

serve: install
	MEDISWIFT_MIRROR=$(MIRROR) deployments/serve.sh

# The same on PostgreSQL (a server the script owns, under the home): a lab's shared servers.
serve-team: install
	MEDISWIFT_DB=postgres MEDISWIFT_MIRROR=$(MIRROR) deployments/serve.sh

stop:
	deployments/stop.sh

cluster: install
	deployments/cluster.sh

cluster-stop:
	deployments/cluster.sh stop
