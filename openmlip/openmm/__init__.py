"""openmlip inside OpenMM: the OpenMM-units module, force backends and openmm-ml integration."""
from .forces import BACKENDS, create_force, create_python_force, create_torch_force
from .module import OpenMMPotential

__all__ = ["BACKENDS", "OpenMMPotential", "create_force", "create_python_force", "create_torch_force"]
