# Every `key=value` given to make, other than name=, goes to Hydra as an override:
#   make experiment name=attention_heads tier=smoke seeds=1 data=tinyshakespeare data.path=/path/input.txt
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SETUP  := $(VENV)/.setup-done
PORT   ?= 5000
OVERRIDES := $(filter-out name=% PYTHON=% PORT=% jobs=% launcher=% NANOGPT=% DATA=% test_workers=%,$(MAKEOVERRIDES))
jobs      ?= 2
launcher  ?= local
SHARDS    := $(shell i=0; while [ $$i -lt $(jobs) ]; do printf '%s' "$$i/$(jobs)"; i=$$((i+1)); [ $$i -lt $(jobs) ] && printf ,; done)

.PHONY: setup experiment sweep suite results report ui test lint bench clean-cache mutation golden

# torch is pinned first and on its own: 2.13.0 is the CPU build on this machine's disk; an unpinned
# torch would pull a multi-GB CUDA build.
$(SETUP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

setup: $(SETUP)

experiment: $(SETUP)
	@if [ -z "$(name)" ]; then echo "usage: make experiment name=<experiment> [tier=smoke|quick|full] [hydra overrides]"; \
	  echo "experiments: $$(ls experiments | sed -n 's/\.yaml$$//p' | tr '\n' ' ')"; exit 2; fi
	$(PY) -m ablations experiment=$(name) $(OVERRIDES)

# One experiment's arms x seeds as `jobs` Hydra launcher jobs (conf/hydra/launcher): launcher=local runs
# them as processes here through submitit, launcher=slurm as a SLURM job array; then the verdicts.
sweep: $(SETUP)
	@if [ -z "$(name)" ]; then echo "usage: make sweep name=<experiment> [jobs=N] [launcher=local|slurm] [hydra overrides]"; exit 2; fi
	$(PY) -m ablations --multirun experiment=$(name) shard=$(SHARDS) hydra/launcher=$(launcher) $(OVERRIDES)

suite: $(SETUP)  ## every experiment of a tier (experiments=a,b for a list), resumable
	$(PY) -m ablations.suite $(OVERRIDES)

results: $(SETUP)  ## runs.csv, verdicts.csv, curves.csv from the MLflow store
	$(PY) -m ablations.results out=results

report: $(SETUP)  ## reports/evidence-report.pdf from results/, logged to MLflow
	$(PY) -m ablations.report

ui: $(SETUP)  ## the MLflow UI on the project's store, on loopback only
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db --host 127.0.0.1 --port $(PORT)

# Two pytest workers: every test runs single-threaded, so two of them fill the two cores this suite is sized
# for. Tests are shared out one by one, except the modules whose tests share a costly fixture (xdist_group).
test: $(SETUP)
	$(PY) -m pytest -n $(or $(test_workers),2) --dist loadgroup

# After a change that alters numbers, and a bump of ablations.numerics.NUMERICS_VERSION: the new golden numbers.
golden: $(SETUP)
	PYTHONPATH=tests $(PY) tests/golden.py --write

lint: $(SETUP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

bench: $(SETUP)  ## needs NANOGPT=/path/to/nanoGPT DATA=/path/to/tinyshakespeare/input.txt; run on an idle machine
	@if [ -z "$(NANOGPT)" ] || [ -z "$(DATA)" ]; then echo "usage: make bench NANOGPT=/path/to/nanoGPT DATA=/path/to/input.txt"; exit 2; fi
	$(PY) benchmarks/step_speed.py --nanogpt $(NANOGPT) --data $(DATA)
	$(PY) benchmarks/baseline_vs_nanogpt.py --nanogpt $(NANOGPT) --data $(DATA)

# Mutation testing of the code that decides verdicts, with fast unit tests only (config: [tool.mutmut] in
# pyproject.toml); not part of `make test`. Fails if any mutant of verdict.py survives. workers=N mutants at once.
mutation: $(SETUP)
	rm -rf mutants
	globs="$$($(PY) scripts/mutation_score.py --globs)" && set -f && \
	  OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children $(or $(workers),1) $$globs
	$(PY) scripts/mutation_score.py

clean-cache:
	rm -rf .cache
