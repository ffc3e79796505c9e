"""Shared fixtures.  Helpers live in tests/helpers/ (systems, physics checks); import them from there."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import openmlip  # noqa: F401  -- torch before openmm, plugin repair

# tests/ on sys.path whatever the import mode, so test files (and their subprocess scripts) import helpers.*
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
# pytest rewrites the asserts of the shared checks too (values shown on failure)
pytest.register_assert_rewrite("helpers")

# Deliberate thread settings: tests run on small systems under pytest-xdist (2 workers on 2 cores in
# CI); more torch threads than cores per worker slows everything by an order of magnitude.
torch.set_num_threads(1)

# The longest test files first (minutes each on one worker: a local SLURM cluster, whole system specs, foreign-model
# imports, free-energy legs, torchrun, frozen TorchForce graphs), then the rest, so that with pytest-xdist's work
# stealing (Makefile: --dist worksteal) the two CI workers finish together instead of one waiting on a long tail.
LONG_FIRST = ("test_slurm.py", "test_systems.py", "test_imports.py", "test_fe.py", "test_distributed.py",
              "test_capturable.py", "test_mlmm.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: k for k, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FIRST)))  # stable: file order kept within


@pytest.fixture(params=[torch.float64, torch.float32], ids=["float64", "float32"])
def dtype(request):
    return request.param
