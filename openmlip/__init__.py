"""openmlip: charge-aware E(3)-equivariant ML potentials inside OpenMM.

Importing openmlip imports torch *before* openmm and repairs openmm-torch's plugin loading if
the user imported openmm first (see :mod:`openmlip._plugins`), so ``TorchForce`` works on every
platform whatever the import order.
"""
from __future__ import annotations

import torch  # noqa: F401  -- keep first: openmm-torch's plugins need torch's libraries

from ._plugins import ensure_torch_plugins as _ensure_torch_plugins

_ensure_torch_plugins()

__version__ = "0.1.0"
#: Version of the model-file format written by :mod:`openmlip.deploy`.
MODEL_FORMAT_VERSION = 1
#: the default shipped potential (plugins/openmlip-xtb-v7): the default of the demo, MD specs and ``make run``
DEFAULT_POTENTIAL = "openmlip-xtb-v7"

__all__ = ["__version__", "MODEL_FORMAT_VERSION", "DEFAULT_POTENTIAL"]
