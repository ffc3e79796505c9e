"""GFN2-xTB (tblite) calculators and reference energies of the xTB data.

tblite is always given the total charge and multiplicity (without it NH4+ silently becomes the neutral radical).
"""
from __future__ import annotations

import os
from typing import Dict, Sequence

from .templates import Template


def xtb_calculator(t: Template):
    """tblite's GFN2-xTB ASE calculator at the template's total charge and multiplicity."""
    return gfn2_xtb(t.charge, t.multiplicity)


def gfn2_xtb(charge: float, multiplicity: int = 1):
    """tblite's GFN2-xTB ASE calculator at an explicit total charge and multiplicity (never tblite's default 0)."""
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", charge=float(charge), multiplicity=int(multiplicity), verbosity=0)


GROUND_STATE_MULTIPLICITY = {"H": 2, "C": 3, "N": 4, "O": 3, "F": 2, "Na": 2, "P": 4, "S": 3, "Cl": 2, "K": 2, "Br": 2}


def isolated_atom_energies(elements: Sequence[str]) -> Dict[str, float]:
    """GFN2-xTB energies (eV) of neutral isolated atoms in their ground-state multiplicity.

    Used as per-element reference energies, so that a trained model's dissociation limit is the
    sum of the atoms' energies instead of least-squares offsets (which can put separated atoms
    *below* the bound molecule).
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from ase import Atoms
    from tblite.ase import TBLite

    out = {}
    for el in elements:
        if el not in GROUND_STATE_MULTIPLICITY:
            raise ValueError(f"no ground-state multiplicity known for {el!r}; known: {sorted(GROUND_STATE_MULTIPLICITY)}")
        atoms = Atoms(el, positions=[[0.0, 0.0, 0.0]])
        atoms.calc = TBLite(method="GFN2-xTB", charge=0.0, multiplicity=GROUND_STATE_MULTIPLICITY[el], verbosity=0)
        out[el] = float(atoms.get_potential_energy())
    return out
