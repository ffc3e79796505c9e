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


@pytest.fixture(params=[torch.float64, torch.float32], ids=["float64", "float32"])
def dtype(request):
    return request.param
