# Two entry points: `make demo` (set up, then run the default job) and `make test`.
# Both create or reuse .venv inside the repo; the install is redone only when the
# dependency files change. The repository is a ZenML repository (`zenml init`) whose stack is
# registered in the user's ZenML store, as `zenml stack register` would; the stores it points
# at (artifacts, MLflow tracking and registry) live in .state/.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed

# Ignore any machine-wide pip configuration (find-links to a CPU-only torch wheel that
# breaks torchvision, private indexes): the install uses PyPI and our constraints only. uv installs
# the same pins as pip would, in parallel, compiled to bytecode as pip does (without it every
# process compiles torch, diffusers, zenml and mlflow again where PYTHONDONTWRITEBYTECODE is set:
# make test took 9 min 25 s instead of 5 min 45 s).
export PIP_CONFIG_FILE := /dev/null
export PIP_FIND_LINKS :=
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export UV_NO_CONFIG := 1
# The project runs offline.
export ZENML_ANALYTICS_OPT_IN := false
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PATH := $(BIN):$(PATH)

.PHONY: setup stack demo test browser lint preferences label retrain mlflow-ui clean-state gpu-wheels

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24" "uv==0.13.9"
	$(BIN)/uv pip install --compile-bytecode --python $(BIN)/python -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

stack: setup
	@test -d .zen || zenml init
	python -m mlops.stack

demo: stack
	dvc repro
	zenml pipeline run pipelines.training.drift_training_pipeline -c configs/digits.yaml

# A new batch of synthetic testbed preferences, versioned with DVC: make preferences SEED=2
preferences: setup
	dvc repro
	drift preferences add -c configs/retrain_local.yaml --seed $(or $(SEED),1)
	dvc add data/preferences

# Raters' choices by hand: the labelling page on http://127.0.0.1:8750, pairs drawn by the
# registered champion; Ctrl-C stops it and runs `dvc add data/preferences`. Options: ARGS="--version 3"
label: stack
	drift label -c configs/retrain_local.yaml $(ARGS)

# Retrain if the preference data changed (the local stack has no scheduler: run this from cron)
retrain: stack
	dvc repro
	zenml pipeline run pipelines.retraining.drift_retraining_pipeline -c configs/retrain_local.yaml

# Two pytest-xdist workers (one torch thread each): the pipeline tests wait on their subprocesses
# while the other worker computes. TEST_WORKERS=0 runs the tests in this process, one by one.
TEST_WORKERS ?= 2
test: setup browser
	python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The labelling page's tests drive a real headless Chromium: Debian's chromium and chromium-driver
# (no browser download), installed here as root or through `sudo -n` (never waiting on a password);
# otherwise one line says what to install, before any test runs.
BROWSER := /usr/bin/chromium /usr/bin/chromedriver
browser:
	@if ! ls $(BROWSER) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" -eq 0 ]; then sudo=; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	  else echo "make test needs Debian's chromium and chromium-driver: sudo apt-get install chromium chromium-driver" >&2; exit 1; fi; \
	  echo "installing Debian's chromium and chromium-driver for the labelling page's tests"; \
	  $$sudo apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; \
	fi

# Style and obvious bugs (ruff, configured in pyproject.toml); CI runs it.
lint: setup
	ruff check .
# Wheels that a GPU machine without network lacks for `drift bench gpu` (docs/real_models.md), at
# the pins of constraints.txt, built for its Python 3.12 on x86-64 Linux; scripts/bench_gpu.sh
# installs them there.
GPU_WHEELS := diffusers pydantic pydantic_core annotated-types typing-inspection typing_extensions
gpu-wheels:
	mkdir -p .whl
	python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl $$(for p in $(GPU_WHEELS); do grep -i "^$$p==" constraints.txt; done)

mlflow-ui: stack
	mlflow ui --backend-store-uri "$$(python -m mlops.stack --uri)" --host 127.0.0.1 --port 5000

clean-state:
	rm -rf .state .zen
