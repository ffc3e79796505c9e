"""Radial basis and smooth cutoff envelope."""
from __future__ import annotations

import math

import torch


class BesselBasis(torch.nn.Module):
    r"""Bessel radial basis :math:`b_n(r) = \sqrt{2/r_c}\,\sin(n\pi r/r_c)/r` (NequIP, DimeNet).

    Parameters
    ----------
    r_max : float
        Cutoff radius in Å.
    num_basis : int
        Number of basis functions.
    trainable : bool
        Learn the frequencies :math:`n\pi`.
    """

    def __init__(self, r_max: float, num_basis: int = 8, trainable: bool = True):
        super().__init__()
        self.r_max = float(r_max)
        self.prefactor = math.sqrt(2.0 / self.r_max)
        freqs = torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * math.pi
        if trainable:
            self.freqs = torch.nn.Parameter(freqs)
        else:
            self.register_buffer("freqs", freqs)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """``r`` [E] in Å -> basis [E, num_basis]."""
        x = r.unsqueeze(-1) / self.r_max
        return self.prefactor * torch.sin(self.freqs * x) / r.unsqueeze(-1)


class PolynomialCutoff(torch.nn.Module):
    r"""Polynomial envelope :math:`u(x)` of degree ``p`` (Klicpera et al. 2020), :math:`x = r/r_c`.

    :math:`u(1) = u'(1) = u''(1) = 0`: energies, forces and their first derivatives go to zero
    continuously at the cutoff.  Zero for ``r >= r_max``.
    """

    def __init__(self, r_max: float, p: int = 6):
        super().__init__()
        self.r_max = float(r_max)
        self.p = float(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return polynomial_envelope(r / self.r_max, self.p)


def polynomial_envelope(x: torch.Tensor, p: float) -> torch.Tensor:
    """Functional form of :class:`PolynomialCutoff` for a reduced distance ``x = r / r_c``."""
    out = (
        1.0
        - 0.5 * (p + 1.0) * (p + 2.0) * torch.pow(x, p)
        + p * (p + 2.0) * torch.pow(x, p + 1.0)
        - 0.5 * p * (p + 1.0) * torch.pow(x, p + 2.0)
    )
    return out * (x < 1.0).to(out.dtype)
