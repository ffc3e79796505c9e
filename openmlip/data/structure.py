"""One labelled structure in openmlip's internal units (Å, eV, e)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np


@dataclass
class Structure:
    """A structure with optional labels.

    Attributes
    ----------
    numbers : ndarray [N] int
    positions : ndarray [N, 3] float, Å
    total_charge : float, e
    spin_multiplicity : float (2S+1)
    energy : float, eV, optional
    forces : ndarray [N, 3], eV/Å, optional
    charges : ndarray [N], e, optional (partial charges, e.g. MBIS)
    formal_charges : ndarray [N], e, optional
    cell : ndarray [3, 3], Å, optional (rows are lattice vectors); pbc : ndarray [3] bool
    name, subset : identifiers (molecule/group name, SPICE subset)
    """

    numbers: np.ndarray
    positions: np.ndarray
    total_charge: float = 0.0
    spin_multiplicity: float = 1.0
    energy: Optional[float] = None
    forces: Optional[np.ndarray] = None
    charges: Optional[np.ndarray] = None
    formal_charges: Optional[np.ndarray] = None
    cell: Optional[np.ndarray] = None
    pbc: Optional[np.ndarray] = None
    name: str = ""
    subset: str = ""
    info: Dict[str, object] = field(default_factory=dict)

    @property
    def num_atoms(self) -> int:
        return int(len(self.numbers))
