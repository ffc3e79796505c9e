# openmlip: two commands for a newcomer —  `make run` (main job) and `make test` (test suite).
# Both create or reuse the virtual environment in $(VENV) and (re)install when pyproject.toml changes.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.openmlip-installed
# Deliberate thread settings for 2-core machines (see docs/benchmarks.md, "Speed, 1 torch + 1 OpenMM thread"): xdist runs 2 workers,
# each test process pins torch to 1 thread (tests/conftest.py).
PYTEST_ARGS ?= -n 2 --dist worksteal

.PHONY: venv run test doctor demo bench clean

# PyPI's torch 2.9.1 for x86_64 is the CUDA build (with its nvidia-* wheels, several GB): no pip cache, so the wheels
# are not stored twice on a small disk (a CI run once failed with "No space left on device" here).
$(STAMP): export PIP_NO_CACHE_DIR = 1
$(STAMP): pyproject.toml plugins/openmlip-xtb-v7/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,data]'
	# openmm-ml 1.8 declares openmm>=8.6.1 but runs on the pinned 8.5.2 (docs/design.md, "The stack")
	$(PY) -m pip install --quiet --no-deps 'openmmml==1.8'
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e plugins/openmlip-xtb-v7
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/openmlip doctor
	$(VENV)/bin/openmlip run systems/ammonium-water --out out/ammonium-water

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

doctor: $(STAMP)
	$(VENV)/bin/openmlip doctor

bench: $(STAMP)
	$(PY) benchmarks/model_speed.py

clean:
	rm -rf out .pytest_cache

demo: $(STAMP)
	$(VENV)/bin/openmlip demo --out out/demo
