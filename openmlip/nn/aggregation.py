r"""Folding pair (edge) energies into atomic energies.

Every mode receives raw pair energies :math:`v_{ij}` and smooth cutoff weights
:math:`w_{ij} = u(r_{ij})` (``u`` = :class:`~openmlip.nn.radial.PolynomialCutoff`, C² at :math:`r_c`).

=================  =====================================================================  ===================
mode               atomic energy :math:`E_i`                                              continuity
=================  =====================================================================  ===================
``sum``            :math:`\sum_j w_{ij} v_{ij}` (Allegro)                                  E, F smooth
``max``            :math:`\max(0, \max_j w_{ij} v_{ij})` (the seed's max; 0 = no pair)     E continuous; F jumps
                                                                                          where the argmax switches
``smoothmax``      :math:`T \log\frac{1 + \sum_j w_{ij} e^{v_{ij}/T}}{1 + \sum_j w_{ij}}`  E, F smooth
                   (weighted log-mean-exp with a phantom zero pair; learnable :math:`T>0`;
                   :math:`T\to 0` gives ``max``)
``charge-gated``   :math:`(1-g_i)\,E_i^{sum} + g_i\,E_i^{smoothmax}`, with                  E, F smooth
                   :math:`g_i = 1 - e^{-(f_i/0.1)^2}` of the atom's input charge
                   :math:`f_i` (formal charge, or Q/N when none is given)
=================  =====================================================================  ===================

The weights make a neighbour that enters the cutoff contribute nothing at first, so ``smoothmax``
and ``charge-gated`` keep energies and forces continuous everywhere; ``max`` cannot (its force is
discontinuous wherever two pair energies swap rank), which ``tests/test_models_physics.py`` records.
The gate :math:`g_i` depends only on input charges (constant along a trajectory), so it never
breaks smoothness.
"""
from __future__ import annotations

import math

import torch

AGGREGATIONS = ("sum", "max", "smoothmax", "charge-gated")
_MODE_ID = {name: k for k, name in enumerate(AGGREGATIONS)}


class Aggregation(torch.nn.Module):
    """Aggregate pair energies into atoms (see module docstring).

    Parameters
    ----------
    mode : str
        One of :data:`AGGREGATIONS`.
    temperature : float
        Initial smoothmax temperature in eV (learnable, kept positive with softplus).
    gate_width : float
        Charge scale (e) of the ``charge-gated`` switch.
    """

    def __init__(self, mode: str = "sum", temperature: float = 0.1, gate_width: float = 0.1):
        super().__init__()
        if mode not in _MODE_ID:
            raise ValueError(f"unknown aggregation {mode!r}; choose one of {AGGREGATIONS}")
        self.mode = mode
        self.mode_id = _MODE_ID[mode]
        # softplus^-1(T - T_min)
        t_min = 1e-3
        raw = math.log(math.expm1(max(temperature - t_min, 1e-6)))
        self.raw_temperature = torch.nn.Parameter(torch.tensor(raw, dtype=torch.get_default_dtype()))
        self.t_min = t_min
        self.gate_width = float(gate_width)
        #: set for CUDA graphs (no data-dependent branch): see :meth:`forward`
        self.capturable = False

    def temperature(self) -> torch.Tensor:
        return torch.nn.functional.softplus(self.raw_temperature) + self.t_min

    def forward(
        self,
        values: torch.Tensor,
        weights: torch.Tensor,
        center: torch.Tensor,
        num_atoms: int,
        atom_charge: torch.Tensor,
    ) -> torch.Tensor:
        """
        Parameters
        ----------
        values : Tensor [E]
            Pair energies (eV).
        weights : Tensor [E]
            Cutoff weights in [0, 1].
        center : Tensor [E] int64
            Index of the atom each pair belongs to.
        num_atoms : int
        atom_charge : Tensor [N]
            Input charge per atom (only ``charge-gated`` reads it).

        Returns
        -------
        Tensor [N]
            Atomic energies (eV).
        """
        zeros = torch.zeros(num_atoms, dtype=values.dtype, device=values.device)
        if self.mode_id == 0:
            return zeros.index_add(0, center, weights * values)
        if self.mode_id == 1:
            return zeros.scatter_reduce(0, center, weights * values, reduce="amax", include_self=True)
        if self.mode_id == 2:
            return self._smoothmax(values, weights, center, zeros)
        summed = zeros.index_add(0, center, weights * values)
        gate = 1.0 - torch.exp(-(atom_charge / self.gate_width) ** 2)
        # every atom neutral (gate exactly 0): the smoothmax term is multiplied by 0 and skipped (a CPU-side
        # check; inside a CUDA graph, which cannot branch on data, it is always computed)
        if not self.capturable and not bool((gate != 0.0).any()):
            return summed
        return (1.0 - gate) * summed + gate * self._smoothmax(values, weights, center, zeros)

    def _smoothmax(
        self, values: torch.Tensor, weights: torch.Tensor, center: torch.Tensor, zeros: torch.Tensor
    ) -> torch.Tensor:
        t = self.temperature().to(values.dtype)
        # stabilise: m_i = max(0, max_j v_ij) over pairs inside the cutoff (constant shift, detached: the result
        # does not depend on it); a pair of weight 0 (beyond the cutoff, e.g. a padding slot of a static list)
        # gets exp(-1e4 eV / T) = 0 (finite, so no 0 x inf in a gradient), so an arbitrary v_ij there can
        # neither overflow nor move m_i
        inside = weights > 0.0
        m = zeros.scatter_reduce(0, center, torch.where(inside, values.detach(), torch.zeros_like(values)),
                                 reduce="amax", include_self=True)
        expo = torch.exp(torch.where(inside, values - m[center], torch.full_like(values, -1.0e4)) / t)
        s = torch.exp(-m / t).index_add(0, center, weights * expo)
        norm = (1.0 + zeros.index_add(0, center, weights)).log()
        return t * torch.log(s) + m - t * norm
