"""Systems whose free-energy difference between λ = 0 and λ = 1 is known exactly (known-answer checks).

``harmonic_wells(n, k_a, k_b, offset)``: ``n`` particles, each in an isotropic harmonic well centred
at its own site, E(λ) = (1 − λ) E_A + λ E_B with E_X = Σ_i ½ k_X |r_i − r_i⁰|² and a constant
``offset`` c added to E_B.  The configurational partition function of one particle in a well of force
constant k is (2π kT / k)^{3/2}, so

    ΔG = G_B − G_A = (3n/2) kT ln(k_B / k_A) + c        (exact, in kJ/mol).

With ``k_b == k_a`` the two states differ only by the constant: ΔG = c with zero variance.
The System carries ``lambda_interpolate`` exactly like an openmm-ml interpolating ML/MM System, so it
runs through the same :class:`~openmlip.fe.engine.Engine`.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np

import torch  # noqa: F401  (before openmm: openmm-torch needs torch loaded)
import openmm

from .engine import LAMBDA, kt_kJmol


def harmonic_wells(n: int = 4, k_a: float = 200.0, k_b: float = 800.0, offset: float = 0.0,
                   mass_amu: float = 12.0, spacing_nm: float = 1.0) -> Tuple[openmm.System, np.ndarray]:
    """(System, positions [n, 3] nm): ``n`` particles in wells of k_a → k_b (kJ/mol/nm²), constant ``offset`` (kJ/mol)."""
    system = openmm.System()
    force = openmm.CustomExternalForce(
        f"0.5*((1-{LAMBDA})*k_a + {LAMBDA}*k_b)*((x-x0)^2 + (y-y0)^2 + (z-z0)^2)")
    force.addGlobalParameter(LAMBDA, 1.0)
    force.addGlobalParameter("k_a", float(k_a))
    force.addGlobalParameter("k_b", float(k_b))
    for name in ("x0", "y0", "z0"):
        force.addPerParticleParameter(name)
    pos = np.zeros((n, 3))
    for i in range(n):
        system.addParticle(mass_amu)
        pos[i] = (spacing_nm * i, 0.0, 0.0)
        force.addParticle(i, list(pos[i]))
    system.addForce(force)
    if offset:
        # a constant: a bond of zero length whose energy is λ·c (CustomBondForce on particle 0 with itself is not
        # allowed, so a CustomExternalForce on one particle carries it)
        const = openmm.CustomExternalForce(f"{LAMBDA}*c/{n}")
        const.addGlobalParameter(LAMBDA, 1.0)
        const.addGlobalParameter("c", float(offset))
        for i in range(n):
            const.addParticle(i, [])
        system.addForce(const)
    return system, pos


def harmonic_wells_dg(n: int, k_a: float, k_b: float, offset: float, temperature_K: float) -> float:
    """The exact ΔG (kJ/mol) of :func:`harmonic_wells`."""
    return 1.5 * n * kt_kJmol(temperature_K) * math.log(k_b / k_a) + offset
