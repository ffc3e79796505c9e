"""Electrostatic embedding: the ML region's *predicted* charges interact with the MM point charges.

The Torch module computes, in one graph,

    E = E_ML(x_ML; Q) + k_e Σ_{i∈ML} Σ_{j∈MM} q_i(x_ML) Q_j φ(r_ij)

with ``φ`` the erf-damped, shifted-force Coulomb kernel of :mod:`openmlip.nn.electrostatics` cut off at
the MM nonbonded cutoff (minimum image under PBC).  Because ``q_i`` depends on the ML geometry,
autograd differentiates the polarisation of the ML charges correctly; forces on MM atoms come from
the same graph.  The MM charges of ML atoms are set to zero in the MM ``NonbondedForce`` (so ML–MM
Coulomb is counted once, here), ML–MM Lennard-Jones stays MM.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from .. import keys as K
from .. import units
from ..errors import ConfigError, SelectionError
from ..nn.electrostatics import coulomb_kernel
from ..nn.neighbors import minimum_image
from .module import OpenMMPotential


class EmbeddedPotential(OpenMMPotential):
    """:class:`OpenMMPotential` plus the ML–MM electrostatic interaction.

    Parameters (beyond :class:`OpenMMPotential`)
    ----------
    mm_indices : sequence of int
        Particles carrying MM point charges (non-ML atoms with non-zero charge).
    mm_charges : sequence of float
        Their charges (e).
    embedding_cutoff : float
        Cutoff of the ML–MM Coulomb interaction in nm (shifted force; <= 0: none, open systems only).
    damping_length : float
        erf damping length of the Coulomb kernel in nm (> 0).
    charge_sites : sequence of int, optional
        For each ML atom, the ML atom (position in the ML list) at which its predicted charge meets the MM
        charges: itself by default; a link-atom cap's charge sits on the ML atom it caps
        (:mod:`openmlip.openmm.links`), so the ML region's whole charge is on real atoms.

    A periodic box must be at least twice ``max(model cutoff, embedding_cutoff)`` wide (minimum image);
    a narrower one raises :class:`~openmlip.errors.BoxError` at evaluation.
    """

    def __init__(self, model, atomic_numbers, mm_indices: Sequence[int], mm_charges: Sequence[float],
                 embedding_cutoff: float = 1.0, damping_length: float = 0.05,
                 charge_sites: Optional[Sequence[int]] = None, **kwargs):
        super().__init__(model, atomic_numbers, **kwargs)
        n_ml = len(atomic_numbers)
        sites = list(range(n_ml)) if charge_sites is None else [int(k) for k in charge_sites]
        if len(sites) != n_ml or any(k < 0 or k >= n_ml for k in sites):
            raise SelectionError(f"charge_sites must give one ML atom position (0..{n_ml - 1}) per ML atom, got {sites[:8]}")
        self.register_buffer("charge_sites", torch.tensor(sites, dtype=torch.long))
        dtype = kwargs.get("dtype", torch.float32)
        mm = [int(i) for i in mm_indices]
        if len(mm) != len(mm_charges):
            raise SelectionError(f"{len(mm)} MM indices but {len(mm_charges)} MM charges; give one charge per MM particle")
        ml = set(self.indices.tolist())
        bad = [i for i in mm if i < 0 or i >= self.num_particles or i in ml]
        if bad:
            raise SelectionError(f"MM particle indices {bad[:5]} are out of range (0..{self.num_particles - 1}) or ML atoms; "
                                 "list the non-ML particles that carry charges")
        self.register_buffer("mm_indices", torch.tensor(mm, dtype=torch.long))
        self.register_buffer("mm_charges", torch.tensor([float(q) for q in mm_charges], dtype=dtype))
        self.embedding_cutoff = float(embedding_cutoff) * units.NM_TO_ANGSTROM
        if self.embedding_cutoff > self.box_cutoff:
            self.box_cutoff = self.embedding_cutoff
            self.box_cutoff_name = "electrostatic embedding cutoff"
        if not damping_length > 0.0:
            raise ConfigError(f"damping_length={damping_length!r} must be > 0 nm")
        self.damping = float(damping_length) * units.NM_TO_ANGSTROM
        self.coulomb = units.COULOMB_EV_ANGSTROM
        if self.periodic and self.embedding_cutoff <= 0.0:
            raise ConfigError("a periodic electrostatic embedding needs a finite embedding cutoff (nm); pass embeddingCutoff > 0")

    def forward(self, positions: torch.Tensor, boxvectors: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        e_ml, e_emb, _ = self.embedding_energy_terms(positions, boxvectors)
        return (e_ml + e_emb).to(positions.dtype), torch.zeros(0, dtype=positions.dtype, device=positions.device)

    @torch.jit.export
    def embedding_energy_terms(self, positions: torch.Tensor, boxvectors: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(E_ML kJ/mol, E_embedding kJ/mol, predicted ML charges e) — for checks and analysis (NaN when a
        check failed in a capturable module)."""
        data, ok = self.ml_inputs(positions, boxvectors)
        out = self.model(data, False)
        q_ml = out[K.CHARGES]
        pos_mm = positions.index_select(0, self.mm_indices).to(self.dtype) * self.length_scale
        pos_q = data[K.POSITIONS].index_select(0, self.charge_sites)
        vec = (pos_mm.unsqueeze(0) - pos_q.unsqueeze(1)).reshape(-1, 3)
        if self.periodic and boxvectors is not None:
            vec = minimum_image(vec, boxvectors.to(self.dtype) * self.length_scale)
        r = torch.linalg.norm(vec, dim=-1)
        pair_q = (q_ml.unsqueeze(1) * self.mm_charges.unsqueeze(0)).reshape(-1)
        e_emb = self.coulomb * (pair_q * coulomb_kernel(r, self.damping, self.embedding_cutoff)).sum()
        return self.poison(out[K.ENERGY].sum() * self.energy_scale, ok), self.poison(e_emb * self.energy_scale, ok), q_ml
