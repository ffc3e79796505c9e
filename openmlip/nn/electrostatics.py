r"""Damped, smoothly cut-off Coulomb energy between predicted partial charges.

Kernel (Å, e -> eV): :math:`g(r) = \mathrm{erf}(r/a)/r` (Gaussian-smeared charges: finite at r = 0),
and with a cutoff :math:`r_c` the shifted-force form
:math:`\phi(r) = g(r) - g(r_c) - g'(r_c)(r - r_c)` for :math:`r < r_c` (energy and force vanish
continuously at :math:`r_c`; Fennell & Gezelter 2006).  ``cutoff <= 0`` means no cutoff (isolated
molecules).  Periodic structures use the minimum image, which needs ``cutoff <= half the box width``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..errors import BoxError, ConfigError
from ..units import COULOMB_EV_ANGSTROM
from .neighbors import minimum_image


def coulomb_cutoff_of(model: torch.nn.Module) -> Optional[float]:
    """The cutoff (Å) of a model's own Coulomb term between its predicted charges (``electrostatics: true``), eager or
    scripted; ``0.0`` when that term has no cutoff, None when the model has no such term."""
    if not bool(getattr(model, "use_electrostatics", False)):
        return None
    return float(model.coulomb.cutoff)


def check_coulomb_cell(cutoff: Optional[float], widths, what: str = "periodic cell") -> None:
    """:class:`BoxError` unless every perpendicular width (Å) of a periodic cell is at least twice the Coulomb
    ``cutoff`` (the minimum image would otherwise drop pairs between half the cell and the cutoff, silently)."""
    if cutoff is None:
        return
    if cutoff <= 0.0:
        raise ConfigError(f"this model's Coulomb term between predicted charges has no cutoff (coulomb_cutoff <= 0), "
                          f"which a {what} cannot hold: use it without periodic boundaries, or train with a coulomb_cutoff")
    if min(float(w) for w in widths) < 2.0 * cutoff:
        raise BoxError(f"{what} widths {[round(float(w), 3) for w in widths]} Å are shorter than twice the model's Coulomb "
                       f"cutoff ({2 * cutoff:g} Å); use a larger cell (more solvent) or a model with a shorter coulomb_cutoff")


def coulomb_kernel(r: torch.Tensor, damping: float, cutoff: float, damped: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:math:`\\phi(r)` in 1/Å (multiply by ``q_i q_j * COULOMB_EV_ANGSTROM`` for eV); ``damped``: ``erf(r/a)/r`` when
    the caller has it already."""
    g = torch.erf(r / damping) / r if damped is None else damped
    if cutoff <= 0.0:
        return g
    gc = math.erf(cutoff / damping) / cutoff
    dgc = 2.0 / (damping * math.sqrt(math.pi)) * math.exp(-((cutoff / damping) ** 2)) / cutoff - gc / cutoff
    phi = g - gc - dgc * (r - cutoff)
    return phi * (r < cutoff).to(r.dtype)


class DampedCoulomb(torch.nn.Module):
    """Electrostatic energy of partial charges within each structure, split half/half onto atoms.

    Parameters
    ----------
    cutoff : float
        Shifted-force cutoff in Å; ``<= 0`` for none (open boundaries only).
    damping : float
        Gaussian smearing length ``a`` in Å.
    """

    def __init__(self, cutoff: float = 10.0, damping: float = 1.0):
        super().__init__()
        self.cutoff = float(cutoff)
        self.damping = float(damping)
        self.k = COULOMB_EV_ANGSTROM

    def forward(
        self,
        pos: torch.Tensor,
        charges: torch.Tensor,
        batch: torch.Tensor,
        cell: Optional[torch.Tensor],
        pbc: Optional[torch.Tensor],
        num_graphs: int,
        single_structure: bool = False,
    ) -> torch.Tensor:
        """Per-atom electrostatic energies (eV) [N] of ``num_graphs`` structures (``single_structure``: known to be
        one, so that the frozen graph holds only the static-shape path)."""
        n = pos.shape[0]
        ij = torch.triu_indices(n, n, 1, device=pos.device)
        if single_structure or num_graphs == 1:  # static shapes, no host synchronisation (CUDA graphs)
            i = ij[0]
            j = ij[1]
            vec = pos[j] - pos[i]
            if cell is not None and pbc is not None:
                periodic = pbc.reshape(-1).any()
                safe = torch.where(periodic, cell.reshape(3, 3), torch.eye(3, dtype=pos.dtype, device=pos.device))
                vec = torch.where(periodic, minimum_image(vec, safe), vec)
        else:
            same = batch[ij[0]] == batch[ij[1]]
            i = ij[0][same]
            j = ij[1][same]
            vec = pos[j] - pos[i]
            if cell is not None and pbc is not None and bool(pbc.any()):
                periodic = pbc[batch[i]].any(dim=1)
                if bool(periodic.any()):
                    vec_p = minimum_image(vec, cell[batch[i]])
                    vec = torch.where(periodic.unsqueeze(-1), vec_p, vec)
        r = torch.linalg.norm(vec, dim=-1)
        e = self.k * charges[i] * charges[j] * coulomb_kernel(r, self.damping, self.cutoff)
        out = torch.zeros(n, dtype=pos.dtype, device=pos.device)
        return out.index_add(0, i, 0.5 * e).index_add(0, j, 0.5 * e)
