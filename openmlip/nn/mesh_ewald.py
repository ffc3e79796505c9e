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
change its shape); the cell may change (a barostat).  It uses torch-pme's ``MeshInterpolator`` (Lagrange
interpolation, as classic PME) and ``KSpaceFilter``; Lagrange interpolation needs about twice OpenMM's
mesh points per axis for the same accuracy (:func:`mesh_points`).
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


class MeshEwald(torch.nn.Module):
    """Reciprocal-space Ewald potential :math:`\\phi^{\\mathrm{lr}}` of charges in a periodic cell, on a fixed mesh.

    Parameters
    ----------
    alpha : float
        Ewald splitting parameter (1/length, in the units of the positions).
    mesh : sequence of 3 int
        Mesh points along each cell vector.
    interpolation_nodes : int
        Lagrange interpolation order + 1 (3..7; 4 is cubic, as OpenMM's default B-splines of order 5 are close to).
    dtype : torch.dtype
    """

    def __init__(self, alpha: float, mesh: Sequence[int], interpolation_nodes: int = 4, dtype: torch.dtype = torch.float64):
        super().__init__()
        from torchpme import CoulombPotential
        from torchpme.lib import KSpaceFilter, MeshInterpolator

        if not alpha > 0.0 or not math.isfinite(alpha):
            raise ConfigError(f"Ewald alpha={alpha!r} must be a positive number (1/length)")
        ns = [int(n) for n in mesh]
        if len(ns) != 3 or min(ns) < 2:
            raise ConfigError(f"mesh={list(mesh)!r} must be three numbers of mesh points (each >= 2)")
        self.alpha = float(alpha)
        self.register_buffer("ns", torch.tensor(ns, dtype=torch.long))
        self.kernel = CoulombPotential(smearing=1.0 / (math.sqrt(2.0) * self.alpha))
        cell = torch.eye(3, dtype=torch.float64) * 10.0
        self.interpolator = MeshInterpolator(cell, self.ns, interpolation_nodes, "Lagrange")
        self.filter = KSpaceFilter(cell, self.ns, kernel=self.kernel, fft_norm="backward", ifft_norm="forward")
        self.self_term = 2.0 * self.alpha / math.sqrt(math.pi)
        self.background = math.pi / self.alpha ** 2
        self.to(dtype)

    def forward(self, charges: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """:math:`\\phi^{\\mathrm{lr}}` [N, C] at ``positions`` [N, 3] of ``charges`` [N, C] (C independent sets of
        charges, one mesh pass) in ``cell`` [3, 3] (rows are the cell vectors), in 1/length."""
        self.interpolator.update(cell, self.ns)
        self.filter.update(cell, self.ns)
        self.interpolator.compute_weights(positions)
        rho = self.interpolator.points_to_mesh(particle_weights=charges)
        volume = torch.abs(torch.linalg.det(cell))
        phi = self.interpolator.mesh_to_points(self.filter.forward(rho)) / volume
        return phi - self.self_term * charges - self.background * charges.sum(0, keepdim=True) / volume
