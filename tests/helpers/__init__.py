"""Shared test helpers (not fixtures: those stay in tests/conftest.py).

* :mod:`helpers.systems` — small molecules, the test model configuration, model inputs and evaluation.
* :mod:`helpers.physics` — one assertion per physical property (symmetry, forces = −∇E, zero net force and
  torque, charge conservation, energies/forces agreeing between routes) and the OpenMM evaluation they use.
* :mod:`helpers.workflow` — running the Snakemake workflow (tests/test_workflow.py, tests/test_slurm.py).

``tests/`` is on ``sys.path`` (pytest puts the rootdir conftest's folder there; subprocess scripts add it), so
test files write ``from helpers.physics import ...``.  ``conftest.py`` registers this package for pytest's
assertion rewriting.
"""
