# k2rl: the two commands are `make run` and `make test`. Both bootstrap .venv when needed.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.k2rl-installed
SERVICES := trainer inference checkpoint_engine controller sandbox judge
LIBS := $(notdir $(wildcard libs/*))
DISTS := $(wildcard libs/*/pyproject.toml) $(wildcard services/*/pyproject.toml)
PYTEST := $(VENV)/bin/pytest
PYTEST_ARGS ?=

.PHONY: run test protos bench install clean-venv bazel-build helm-check \
	$(addprefix test-,$(SERVICES)) $(addprefix test-,$(LIBS)) test-integration

# --- bootstrap -------------------------------------------------------------------
# torch is pinned to the CPU wheel that pip finds on local disk; a bare `torch` would pull
# a multi-GB CUDA build. Every lib and service is installed editable; with a plain src/ layout
# setuptools adds each src/ to sys.path, so the k2rl namespace package spans all of them.
$(STAMP): requirements/constraints.txt requirements/dev.txt $(DISTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -c requirements/constraints.txt torch==2.13.0
	$(PIP) install -q -c requirements/constraints.txt -r requirements/dev.txt
	$(PIP) install -q -c requirements/constraints.txt --no-build-isolation \
		$(addprefix -e ,$(dir $(DISTS)))
	@touch $(STAMP)

install: $(STAMP)

# --- the two commands ------------------------------------------------------------
# The main job: pretrain k2-nano, RL it through all six services, report held-out accuracy.
# QUICK=1 runs the short configuration (about 2 minutes on 2 cores).
run: $(STAMP)
	$(VENV)/bin/k2rl run $(if $(QUICK),configs/demo-quick.yaml,configs/demo.yaml)

test: $(STAMP)
	$(PYTEST) $(PYTEST_ARGS)

# --- per-service and per-lib test selection (used by .github/workflows) -----------
$(addprefix test-,$(SERVICES)): test-%: $(STAMP)
	$(PYTEST) services/$*/tests $(PYTEST_ARGS)

$(addprefix test-,$(LIBS)): test-%: $(STAMP)
	$(PYTEST) libs/$*/tests $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(PYTEST) tests $(PYTEST_ARGS)

# --- code generation and tooling -------------------------------------------------
protos: $(STAMP)
	$(PY) scripts/gen_protos.py

bench: $(STAMP)
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

helm-check: $(STAMP)  ## helm lint + template where helm exists, else the offline renderer; always schema-validate
	PYTHON=$(PY) bash deploy/helm/check.sh

bazel-build: $(STAMP)
	bazel build //...

clean-venv:
	rm -rf $(VENV)
