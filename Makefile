# Every target installs what it needs: the venv is a prerequisite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Cache the project's bytecode even where the environment turns that off: every serve and job a test starts
# would otherwise compile orchestrator/, optimizers/ ... again (about half a second of CPU per process).
export PYTHONDONTWRITEBYTECODE :=

.PHONY: install demo lint test bench-optimizer bench-real-jobs bench-real-jobs-in-process bench-surrogate bench-parallel bench-loop bench-early-stopping bench-scale clean

install: $(STAMP)

# torch first, pinned: pip takes the CPU build from the machine's disk instead of a multi-GB CUDA build.
# Bytecode is compiled afterwards on every core at once (pip compiles one file at a time, most of the install's
# time). A few files that packages ship for newer Pythons do not compile, as under pip: not an install failure.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile torch==2.13.0
	$(PY) -m pip install --quiet --no-compile -e '.[dev]'
	$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m orchestrator serve --sweep demo --args sweep_name=demo_$$(date +%m%d_%H%M%S) --log-format human

# ruff (lint, format check), mypy (strict on orchestrator/core and optimizers/, see pyproject.toml), the dependency rule, no cycles.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m mypy orchestrator optimizers dispatchers stores recipes
	$(VENV)/bin/lint-imports
	$(PY) .ci/import_cycles.py

test: $(STAMP) lint
	$(PY) -m pytest -q -n 2 --dist loadfile tests  # two workers, a test file each: most tests wait on real processes

bench-optimizer: $(STAMP)
	$(PY) benchmarks/optimizer.py

bench-real-jobs: $(STAMP)
	nice -n 10 $(PY) benchmarks/real_jobs.py --ppo

bench-real-jobs-in-process: $(STAMP)  # the MLP in-process: 16 data seeds x 3 optimizer draws per method (~20 min)
	nice -n 10 $(PY) benchmarks/real_jobs.py --in-process

bench-surrogate: $(STAMP)  # the score model's ranking and picks on real MLP runs (~2 min)
	nice -n 10 $(PY) benchmarks/surrogate.py

bench-parallel: $(STAMP)
	nice -n 10 $(PY) benchmarks/parallel.py

bench-loop: $(STAMP)
	$(PY) benchmarks/loop.py

bench-early-stopping: $(STAMP)  # (a) synthetic curves, 12 seeds (~30 min on 2 cores); (b) real PPO sweeps (~40 min)
	nice -n 10 $(PY) benchmarks/early_stopping.py
	nice -n 10 $(PY) benchmarks/early_stopping_ppo.py

bench-scale: $(STAMP)
	nice -n 10 $(PY) benchmarks/scale.py

clean:
	rm -rf $(VENV) train_dir .pytest_cache
