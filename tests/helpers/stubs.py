"""A model whose output is known in closed form, for the embedding's identity and free-energy tests.

:class:`FixedChargeModel` has the interface of an openmlip model (``forward(data, compute_forces)`` -> energy and
charges) but predicts fixed charges (the MM charges of the ML atoms, say) and, optionally, the harmonic bond and
angle energy of an MM force field for the ML atoms: then an ML/MM System built on it must equal the MM System.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch

from openmlip import units


class FixedChargeModel(torch.nn.Module):
    """Charges ``charges`` (e) for the ML atoms, energy = Σ ½ k (r − r0)² over ``bonds`` + Σ ½ k (θ − θ0)² over
    ``angles`` (OpenMM's harmonic terms, given in OpenMM units: nm, rad, kJ/mol/nm², kJ/mol/rad²)."""

    def __init__(self, charges: Sequence[float], cutoff: float = 5.0,
                 bonds: Sequence[Tuple[int, int, float, float]] = (),
                 angles: Sequence[Tuple[int, int, int, float, float]] = ()):
        super().__init__()
        self.cutoff = float(cutoff)
        self.register_buffer("q", torch.tensor([float(v) for v in charges], dtype=torch.float64))
        self.register_buffer("bond_atoms", torch.tensor([[b[0], b[1]] for b in bonds] or [], dtype=torch.long).reshape(-1, 2))
        self.register_buffer("bond_params", torch.tensor([[b[2] * units.NM_TO_ANGSTROM, b[3]] for b in bonds] or [],
                                                         dtype=torch.float64).reshape(-1, 2))
        self.register_buffer("angle_atoms", torch.tensor([[a[0], a[1], a[2]] for a in angles] or [],
                                                         dtype=torch.long).reshape(-1, 3))
        self.register_buffer("angle_params", torch.tensor([[a[3], a[4]] for a in angles] or [],
                                                          dtype=torch.float64).reshape(-1, 2))
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))  # gives the model a dtype to cast

    def forward(self, data: Dict[str, torch.Tensor], compute_forces: bool = False) -> Dict[str, torch.Tensor]:
        pos = data["pos"]
        energy = torch.zeros((), dtype=pos.dtype, device=pos.device) + self.dummy.to(pos.dtype)
        if self.bond_atoms.shape[0] > 0:
            r = torch.linalg.norm(pos[self.bond_atoms[:, 1]] - pos[self.bond_atoms[:, 0]], dim=-1)
            k = self.bond_params[:, 1].to(pos.dtype) / units.NM_TO_ANGSTROM ** 2  # kJ/mol/Å²
            energy = energy + (0.5 * k * (r - self.bond_params[:, 0].to(pos.dtype)) ** 2).sum()
        if self.angle_atoms.shape[0] > 0:
            u = pos[self.angle_atoms[:, 0]] - pos[self.angle_atoms[:, 1]]
            v = pos[self.angle_atoms[:, 2]] - pos[self.angle_atoms[:, 1]]
            cos = (u * v).sum(-1) / (torch.linalg.norm(u, dim=-1) * torch.linalg.norm(v, dim=-1))
            theta = torch.acos(cos.clamp(-1.0, 1.0))
            energy = energy + (0.5 * self.angle_params[:, 1].to(pos.dtype)
                               * (theta - self.angle_params[:, 0].to(pos.dtype)) ** 2).sum()
        return {"energy": (energy / units.EV_TO_KJ_PER_MOL).reshape(1), "charges": self.q.to(pos.dtype)}


def install(mlpotential, model: torch.nn.Module) -> None:
    """Make an openmm-ml ``MLPotential('openmlip', ...)`` build its forces on ``model`` (scripted) instead of its file's."""
    mlpotential._impl.model = torch.jit.script(model)


def mm_intramolecular_terms(system, atoms: List[int]):
    """The harmonic bonds and angles of ``system`` among ``atoms`` as (local indices, parameters) lists for
    :class:`FixedChargeModel`."""
    import openmm

    local = {a: k for k, a in enumerate(atoms)}
    bonds, angles = [], []
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for k in range(force.getNumBonds()):
                i, j, r0, kb = force.getBondParameters(k)
                if i in local and j in local:
                    bonds.append((local[i], local[j], r0.value_in_unit(openmm.unit.nanometer),
                                  kb.value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer ** 2)))
        elif isinstance(force, openmm.HarmonicAngleForce):
            for k in range(force.getNumAngles()):
                i, j, m, t0, ka = force.getAngleParameters(k)
                if i in local and j in local and m in local:
                    angles.append((local[i], local[j], local[m], t0.value_in_unit(openmm.unit.radian),
                                   ka.value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.radian ** 2)))
    return bonds, angles
