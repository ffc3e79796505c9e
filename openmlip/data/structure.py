"""One labelled structure in openmlip's internal units (Å, eV, e)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

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


_ARRAY_FIELDS = ("positions", "forces", "charges", "formal_charges", "cell", "pbc")


def structure_to_json(s: Structure) -> Dict[str, Any]:
    """A JSON-able dict of ``s`` (``info`` is not kept); floats round-trip exactly through ``json``."""
    out: Dict[str, Any] = {"numbers": np.asarray(s.numbers).tolist(), "total_charge": s.total_charge,
                           "spin_multiplicity": s.spin_multiplicity, "energy": s.energy, "name": s.name, "subset": s.subset}
    for key in _ARRAY_FIELDS:
        value = getattr(s, key)
        out[key] = None if value is None else np.asarray(value).tolist()
    return out


def structure_from_json(d: Dict[str, Any]) -> Structure:
    """The inverse of :func:`structure_to_json`."""
    arrays = {k: None if d[k] is None else np.asarray(d[k]) for k in _ARRAY_FIELDS}
    if arrays["positions"] is not None:
        arrays["positions"] = arrays["positions"].reshape(-1, 3).astype(float)
    if arrays["forces"] is not None:
        arrays["forces"] = arrays["forces"].reshape(-1, 3).astype(float)
    return Structure(numbers=np.asarray(d["numbers"], dtype=int), total_charge=d["total_charge"],
                     spin_multiplicity=d["spin_multiplicity"], energy=d["energy"], name=d["name"], subset=d["subset"], **arrays)
