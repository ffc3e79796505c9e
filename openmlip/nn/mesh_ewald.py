r"""The long-range (reciprocal-space) part of the Ewald potential of point charges on a fixed mesh (torch-pme).

:class:`MeshEwald` returns, at every particle, the potential of all charges in a periodic cell from
the smooth half of the Ewald split (Gaussian width :math:`\sigma = 1/(\sqrt{2}\alpha)`) — periodic images and
the neutralising background of a charged cell included, each particle's own Gaussian removed:

.. math::

    \phi^{\mathrm{lr}}_i = \sum_{j, \mathbf{n}} c_j \frac{\mathrm{erf}(\alpha |\mathbf{r}_{ij} + \mathbf{n}|)}
    {|\mathbf{r}_{ij} + \mathbf{n}|} - c_i \frac{2\alpha}{\sqrt{\pi}} - \frac{\pi C}{V \alpha^2},
    \qquad C = \sum_j c_j

(in units of 1/length: multiply by the Coulomb constant).  Adding the real-space part
:math:`\sum_j c_j\,\mathrm{erfc}(\alpha r_{ij})/r_{ij}` (minimum image, within a cutoff) gives the Ewald
potential whose energy :math:`\tfrac12\sum_i c_i \phi_i` is OpenMM's PME energy of the same charges.

The mesh has a fixed number of points per axis (chosen when the module is built: a CUDA graph cannot
change its shape); the cell may change (a barostat).  The algorithm is torch-pme's mesh Ewald (cubic Lagrange
interpolation, as classic PME, no influence-function correction), which needs about twice OpenMM's mesh
points per axis for the same accuracy (:func:`mesh_points`).
"""
from __future__ import annotations

import math
from typing import List, Sequence

import torch

from ..errors import ConfigError


def ewald_alpha(cutoff: float, tolerance: float) -> float:
    """OpenMM's Ewald splitting parameter α (1/length of ``cutoff``) for an error tolerance (NonbondedForce)."""
    return math.sqrt(-math.log(2.0 * tolerance)) / cutoff


def mesh_points(alpha: float, widths: Sequence[float], tolerance: float, refinement: float = 2.0) -> List[int]:
    """Mesh points per axis: OpenMM's PME rule ``ceil(2 α L / (3 δ^(1/5)))`` times ``refinement`` (torch-pme's
    Lagrange interpolation needs about 2× OpenMM's B-spline mesh for the same error)."""
    return [max(8, int(math.ceil(refinement * math.ceil(2.0 * alpha * w / (3.0 * tolerance ** 0.2))))) for w in widths]


def _lagrange4(x: torch.Tensor) -> torch.Tensor:
    """Cubic Lagrange weights [4, ...] of the four mesh points around a particle at offset ``x`` in [-1/2, 1/2)
    from the midpoint of its two nearest points (Hockney & Eastwood; torch-pme's ``interpolation_nodes=4``)."""
    x2 = x * x
    x3 = x2 * x
    return torch.stack([(-3.0 + 2.0 * x + 12.0 * x2 - 8.0 * x3) / 48.0,
                        (27.0 - 54.0 * x - 12.0 * x2 + 24.0 * x3) / 48.0,
                        (27.0 + 54.0 * x - 12.0 * x2 - 24.0 * x3) / 48.0,
                        (-3.0 - 2.0 * x + 12.0 * x2 + 8.0 * x3) / 48.0])


class MeshEwald(torch.nn.Module):
    """Reciprocal-space Ewald potential :math:`\\phi^{\\mathrm{lr}}` of charges in a periodic cell, on a fixed mesh.

    torch-pme's mesh Ewald (cubic Lagrange interpolation, Coulomb kernel
    :math:`4\\pi e^{-\\sigma^2 k^2/2}/k^2`, unnormalised FFTs), written with the mesh size as Python integers so that
    a step makes no host synchronisation and has fixed shapes (CUDA graphs); tests/test_embedding_long_range.py
    checks it against torch-pme itself.

    Parameters
    ----------
    alpha : float
        Ewald splitting parameter (1/length, in the units of the positions).
    mesh : sequence of 3 int
        Mesh points along each cell vector.
    dtype : torch.dtype
    """

    def __init__(self, alpha: float, mesh: Sequence[int], dtype: torch.dtype = torch.float64):
        super().__init__()
        if not alpha > 0.0 or not math.isfinite(alpha):
            raise ConfigError(f"Ewald alpha={alpha!r} must be a positive number (1/length)")
        ns = [int(n) for n in mesh]
        if len(ns) != 3 or min(ns) < 4:
            raise ConfigError(f"mesh={list(mesh)!r} must be three numbers of mesh points (each >= 4)")
        self.alpha = float(alpha)
        self.nx, self.ny, self.nz = ns
        self.smearing = 1.0 / (math.sqrt(2.0) * self.alpha)
        self.register_buffer("ns", torch.tensor(ns, dtype=dtype))
        self.register_buffer("ns_long", torch.tensor(ns, dtype=torch.long))
        self.register_buffer("shifts", torch.arange(-1, 3, dtype=torch.long).view(4, 1, 1))  # the 4 points per axis
        # integer wave numbers of the FFT grid (the real FFT keeps the non-negative half along z)
        self.register_buffer("fx", torch.fft.fftfreq(ns[0], 1.0 / ns[0], dtype=dtype))
        self.register_buffer("fy", torch.fft.fftfreq(ns[1], 1.0 / ns[1], dtype=dtype))
        self.register_buffer("fz", torch.fft.rfftfreq(ns[2], 1.0 / ns[2], dtype=dtype))
        self.self_term = 2.0 * self.alpha / math.sqrt(math.pi)
        self.background = math.pi / self.alpha ** 2

    def forward(self, charges: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """:math:`\\phi^{\\mathrm{lr}}` [N, C] at ``positions`` [N, 3] of ``charges`` [N, C] (C independent sets of
        charges, one mesh pass) in ``cell`` [3, 3] (rows are the cell vectors), in 1/length."""
        n, c = positions.shape[0], charges.shape[1]
        nx, ny, nz = self.nx, self.ny, self.nz
        inverse = torch.linalg.inv_ex(cell)[0]  # no error check: no host synchronisation
        scaled = torch.matmul(positions, inverse) * self.ns  # mesh units
        base = torch.floor(scaled)
        w = _lagrange4(scaled - (base + 0.5))  # [4, N, 3]
        idx = torch.remainder(base.long().unsqueeze(0) + self.shifts, self.ns_long)  # [4, N, 3]
        wx, wy, wz = w[:, :, 0].t(), w[:, :, 1].t(), w[:, :, 2].t()  # [N, 4]
        ix, iy, iz = idx[:, :, 0].t(), idx[:, :, 1].t(), idx[:, :, 2].t()
        weights = (wx[:, :, None, None] * wy[:, None, :, None] * wz[:, None, None, :]).reshape(n, 64)
        flat = ((ix[:, :, None, None] * ny + iy[:, None, :, None]) * nz + iz[:, None, None, :]).reshape(-1)
        spread = (charges.t().unsqueeze(-1) * weights.unsqueeze(0)).reshape(c, -1)
        rho = torch.zeros((c, nx * ny * nz), dtype=charges.dtype, device=charges.device).index_add(1, flat, spread)
        reciprocal = 2.0 * math.pi * inverse.t()
        k = (self.fx[:, None, None, None] * reciprocal[0] + self.fy[None, :, None, None] * reciprocal[1]
             + self.fz[None, None, :, None] * reciprocal[2])
        k_sq = (k * k).sum(-1)
        safe = torch.where(k_sq == 0.0, torch.ones_like(k_sq), k_sq)
        kernel = torch.where(k_sq == 0.0, torch.zeros_like(k_sq),
                             4.0 * math.pi * torch.exp(-0.5 * self.smearing ** 2 * safe) / safe)
        mesh_hat = torch.fft.rfftn(rho.reshape(c, nx, ny, nz), dim=[1, 2, 3], norm="backward")
        potential = torch.fft.irfftn(mesh_hat * kernel, s=[nx, ny, nz], dim=[1, 2, 3], norm="forward").reshape(c, -1)
        phi = (potential.index_select(1, flat).reshape(c, n, 64) * weights.unsqueeze(0)).sum(-1).t()
        volume = torch.abs(torch.linalg.det(cell))
        return phi / volume - self.self_term * charges - self.background * charges.sum(0, keepdim=True) / volume
