"""Benchmark structures: alanine dipeptide (shipped in systems/) and water boxes at 1 g/cm³."""
from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def alanine_dipeptide_vacuum():
    """(atomic_numbers, positions Å) of the 22-atom alanine dipeptide (openmmtools, Amber)."""
    import openmm.app as app

    base = ROOT / "systems" / "alanine-dipeptide" / "vacuum" / "alanine-dipeptide"
    prm = app.AmberPrmtopFile(str(base) + ".prmtop")
    crd = app.AmberInpcrdFile(str(base) + ".crd")
    z = np.array([a.element.atomic_number for a in prm.topology.atoms()])
    pos = np.array(crd.getPositions(asNumpy=True)._value) * 10.0
    return z, pos


def water_box(n_side: int, seed: int = 0):
    """n_side³ rigid-geometry waters on a jittered lattice, random orientations, 1.0 g/cm³.

    Returns (atomic_numbers, positions Å, box [3,3] Å); the same boxes as ``harness.water_box``.
    """
    from harness import water_box as _water_box

    top, pos_nm, L = _water_box(n_side, seed)
    z = np.array([a.element.atomic_number for a in top.atoms()])
    return z, np.asarray(pos_nm) * 10.0, np.diag([10.0 * L] * 3)
