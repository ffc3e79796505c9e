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

    Returns (atomic_numbers, positions Å, box [3,3] Å).
    """
    rng = np.random.default_rng(seed)
    n = n_side**3
    volume = n * 18.01528 / (0.60221408 * 1.0)  # Å^3 at 1 g/cm³
    L = volume ** (1.0 / 3.0)
    a = L / n_side
    geom = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.2400, 0.9266, 0.0]])
    z, pos = [], []
    for i in range(n_side):
        for j in range(n_side):
            for k in range(n_side):
                q = rng.normal(size=4)
                q /= np.linalg.norm(q)
                w, x, y, zq = q
                R = np.array([[1 - 2 * (y * y + zq * zq), 2 * (x * y - zq * w), 2 * (x * zq + y * w)],
                              [2 * (x * y + zq * w), 1 - 2 * (x * x + zq * zq), 2 * (y * zq - x * w)],
                              [2 * (x * zq - y * w), 2 * (y * zq + x * w), 1 - 2 * (x * x + y * y)]])
                o = (np.array([i, j, k]) + 0.5) * a + rng.normal(scale=0.1, size=3)
                pos += list(o + geom @ R.T)
                z += [8, 1, 1]
    return np.array(z), np.array(pos), np.diag([L, L, L])
