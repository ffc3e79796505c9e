"""Building blocks for openmlip's equivariant potentials (all TorchScript-compatible)."""
from .radial import BesselBasis, PolynomialCutoff
from .mlp import ScalarMLP
from .gate import ScriptableGate
from .aggregation import Aggregation, AGGREGATIONS
from .embedding import SpeciesIndex
from .neighbors import neighbor_list
from .zbl import ZBLRepulsion
from .electrostatics import DampedCoulomb

__all__ = [
    "BesselBasis", "PolynomialCutoff", "ScalarMLP", "ScriptableGate", "Aggregation", "AGGREGATIONS",
    "SpeciesIndex", "neighbor_list", "ZBLRepulsion", "DampedCoulomb",
]
