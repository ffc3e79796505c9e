"""Ziegler-Biersack-Littmark universal screened nuclear repulsion, switched off smoothly.

A physics prior that keeps compressed geometries from collapsing.  It only acts at short range:
each pair is switched off with a polynomial envelope at ``scale * (r_cov,i + r_cov,j)`` (default 0.6 of
the covalent bond length: 0.61 Å for N–H), so it leaves equilibrium bonds untouched.
"""
from __future__ import annotations

from typing import Sequence

import torch
from ase.data import atomic_numbers as _ASE_Z, covalent_radii

from ..units import COULOMB_EV_ANGSTROM
from .radial import polynomial_envelope


class ZBLRepulsion(torch.nn.Module):
    def __init__(self, elements: Sequence[str], scale: float = 0.6, p: int = 6):
        super().__init__()
        z = torch.tensor([float(_ASE_Z[e]) for e in elements], dtype=torch.get_default_dtype())
        rcov = torch.tensor([float(covalent_radii[_ASE_Z[e]]) for e in elements], dtype=torch.get_default_dtype())
        self.register_buffer("z", z)
        self.register_buffer("rcov", rcov)
        self.scale = float(scale)
        self.p = float(p)
        self.k = COULOMB_EV_ANGSTROM
        #: no pair at or beyond this distance (Å) has a ZBL term: the largest switch-off radius of any species pair
        self.range = self.scale * 2.0 * float(rcov.max())

    def forward(self, r: torch.Tensor, si: torch.Tensor, sj: torch.Tensor) -> torch.Tensor:
        """Pair energy (eV) per directed edge, already halved (each pair is listed twice)."""
        zi = self.z[si].to(r.dtype)
        zj = self.z[sj].to(r.dtype)
        a = 0.46850 / (zi.pow(0.23) + zj.pow(0.23))
        x = r / a
        phi = (
            0.18175 * torch.exp(-3.19980 * x)
            + 0.50986 * torch.exp(-0.94229 * x)
            + 0.28022 * torch.exp(-0.40290 * x)
            + 0.02817 * torch.exp(-0.20162 * x)
        )
        rc = self.scale * (self.rcov[si] + self.rcov[sj]).to(r.dtype)
        return 0.5 * self.k * zi * zj / r * phi * polynomial_envelope(r / rc, self.p)
