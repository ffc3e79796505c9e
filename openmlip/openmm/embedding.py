r"""Electrostatic embedding: the ML region's *predicted* charges interact with the MM point charges, long range included.

The ML–MM electrostatic energy is that of the charges :math:`q_i(\mathbf{x}_{ML})` the model predicts (they sum
to the region's integer charge :math:`Q`) in the field of the MM charges :math:`Q_j`, with the Coulomb kernel
damped at short range (Gaussian-smeared ML charges, :math:`\mathrm{erf}(r/a)/r`) and, in a periodic System,
summed over the periodic images with the neutralising background of a charged cell, as OpenMM's PME does for
the MM charges.  Two ways to compute it (``long_range``):

``"split"`` (default): fixed reference charges in OpenMM's PME, the rest in the graph
    Each ML atom gets a fixed reference charge :math:`q^{\mathrm{ref}}_i` (its MM charge, shifted so that the
    region sums to :math:`Q`), which stays in OpenMM's own ``NonbondedForce`` (PME, images, background; ML–ML
    pairs excluded).  This module adds

    .. math::

        E_{\mathrm{emb}} = k_e \sum_{i \in ML} \sum_{j \in MM} \Big[ \Delta q_i\, Q_j\, \phi_{\mathrm{sf}}(r_{ij})
        + q^{\mathrm{ref}}_i Q^{\mathrm{nb}}_j \frac{\mathrm{erf}(r_{ij}/a) - 1}{r_{ij}} \Big],
        \qquad \Delta q_i = q_i(\mathbf{x}_{ML}) - q^{\mathrm{ref}}_i,

    with :math:`\phi_{\mathrm{sf}}` the damped shifted-force kernel cut off at the embedding cutoff
    (:func:`openmlip.nn.electrostatics.coulomb_kernel`).  :math:`\sum_i \Delta q_i = 0`, so the truncated
    term is the field of a neutral charge distribution (it decays like a dipole's), while the monopole's long
    range is exact; the second term turns OpenMM's bare :math:`q^{\mathrm{ref}} Q / r` into the damped kernel
    (it vanishes beyond a few damping lengths, and it skips pairs the force field treats as exceptions).
    Costs no extra PME.
``"pme"``: the predicted charges in a PME inside the graph (the exact mode, and the test oracle)
    The ML atoms carry no charge in the ``NonbondedForce``; this module adds

    .. math::

        E_{\mathrm{emb}} = k_e \sum_{i \in ML} q_i \Big[ \phi^{\mathrm{lr,MM}}_i + \sum_{j \in MM, r_{ij} < r_c}
        Q_j \frac{\mathrm{erf}(r_{ij}/a) - \mathrm{erf}(\alpha r_{ij})}{r_{ij}}
        + \tfrac12 \Big( \phi^{\mathrm{lr,ML}}_i - \sum_{j \in ML, j \ne i} q_j \frac{\mathrm{erf}(\alpha r_{ij})}{r_{ij}} \Big) \Big]

    with :math:`\phi^{\mathrm{lr,MM}}` and :math:`\phi^{\mathrm{lr,ML}}` the reciprocal-space Ewald potentials
    of the MM and of the ML charges at the ML atoms (:class:`openmlip.nn.mesh_ewald.MeshEwald`, two channels of
    one mesh pass, the NonbondedForce's α, a mesh fixed when the force is built) and the real-space sum cut off
    at the MM cutoff.  The last term is the ML region's interaction with its own periodic images and the
    neutralising background (−89 kJ/mol for a +1 region in a 2.2 nm box), which OpenMM's PME gives the MM
    charges and the reference charges of ``"split"`` too (the model computes the direct ML–ML pairs).  Costs a
    second PME of all MM charges per step.

Because :math:`q_i` depends on the ML geometry, autograd differentiates the polarisation of the ML charges;
forces on MM atoms come from the same graph.  ML–MM Lennard-Jones stays MM.
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

#: the two ways of computing the ML–MM electrostatics (see the module docstring)
LONG_RANGE = ("split", "pme")


class _NoMesh(torch.nn.Module):
    """Stands where :class:`~openmlip.nn.mesh_ewald.MeshEwald` would, with ``long_range="split"`` (not called)."""

    def forward(self, charges: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(charges)


class EmbeddedPotential(OpenMMPotential):
    """:class:`OpenMMPotential` plus the ML–MM electrostatic interaction (module docstring).

    Parameters (beyond :class:`OpenMMPotential`)
    ----------
    mm_indices : sequence of int
        MM particles that carry a charge (non-ML atoms).
    mm_charges : sequence of float
        The charges (e) the predicted ML charges see (:func:`openmlip.openmm.links.embedding_charges`).
    embedding_cutoff : float
        nm: the cutoff of the shifted-force kernel of ``Δq`` (``"split"``) or of the real-space sum (``"pme"``);
        <= 0: none (open systems only).
    damping_length : float
        erf damping length ``a`` of the Coulomb kernel in nm (> 0).
    charge_sites : sequence of int, optional
        For each ML atom, the ML atom (position in the ML list) at which its predicted charge meets the MM
        charges: itself by default; a link-atom cap's charge sits on the ML atom it caps
        (:mod:`openmlip.openmm.links`), so the ML region's whole charge is on real atoms.
    long_range : {"split", "pme"}
    reference_charges : sequence of float, optional
        ``"split"``: :math:`q^{\\mathrm{ref}}` per ML atom (0 on link-atom caps), summing to the total charge —
        the charges the ML atoms carry in the System's NonbondedForce.  None: 0 (the ML atoms carry no charge
        there, and the cut-off kernel carries the whole predicted charge: open systems without a NonbondedForce).
    reference_mm_charges : sequence of float, optional
        ``"split"``: the NonbondedForce charges of ``mm_indices`` (default ``mm_charges``).
    reference_exceptions : sequence of (int, int), optional
        ``"split"``: (ML position, MM particle) pairs that the NonbondedForce treats as exceptions: no damping
        correction for them.
    ewald_alpha : float
        ``"pme"``: Ewald splitting parameter (1/nm) — the NonbondedForce's.
    ewald_mesh : sequence of 3 int
        ``"pme"``: mesh points per box vector.

    A periodic box must be at least twice ``max(model cutoff, embedding_cutoff)`` wide (minimum image);
    a narrower one raises :class:`~openmlip.errors.BoxError` at evaluation.
    """

    def __init__(self, model, atomic_numbers, mm_indices: Sequence[int], mm_charges: Sequence[float],
                 embedding_cutoff: float = 1.0, damping_length: float = 0.05,
                 charge_sites: Optional[Sequence[int]] = None, long_range: str = "split",
                 reference_charges: Optional[Sequence[float]] = None,
                 reference_mm_charges: Optional[Sequence[float]] = None,
                 reference_exceptions: Sequence[Tuple[int, int]] = (),
                 ewald_alpha: Optional[float] = None, ewald_mesh: Optional[Sequence[int]] = None, **kwargs):
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
        if long_range not in LONG_RANGE:
            raise ConfigError(f"long_range={long_range!r} is not one of {', '.join(map(repr, LONG_RANGE))}")
        self.use_mesh = long_range == "pme"
        self.long_range = long_range
        ref = [0.0] * n_ml if reference_charges is None else [float(q) for q in reference_charges]
        if len(ref) != n_ml:
            raise SelectionError(f"{len(ref)} reference charges for {n_ml} ML atoms; give one per ML atom (0 on caps)")
        if reference_charges is not None and not self.use_mesh and abs(sum(ref) - float(self.total_charge)) > 1e-6:
            raise ConfigError(f"the reference charges sum to {sum(ref):+.6f} e, not the ML region's total charge "
                              f"{float(self.total_charge):+g} e; shift them to sum to it")
        self.register_buffer("reference_charges", torch.tensor(ref, dtype=dtype))
        nb = list(mm_charges) if reference_mm_charges is None else [float(q) for q in reference_mm_charges]
        if len(nb) != len(mm):
            raise SelectionError(f"{len(nb)} reference MM charges for {len(mm)} MM indices; give one per MM particle")
        self.register_buffer("reference_mm_charges", torch.tensor(nb, dtype=dtype))
        keep = torch.ones((n_ml, len(mm)), dtype=dtype)
        column = {j: k for k, j in enumerate(mm)}
        for a, j in reference_exceptions:
            if int(j) in column:
                keep[int(a), column[int(j)]] = 0.0
        self.register_buffer("reference_pairs", keep)
        self.alpha = 0.0
        self.mesh: torch.nn.Module = _NoMesh()
        if self.use_mesh:
            from ..nn.mesh_ewald import MeshEwald

            if not self.periodic:
                raise ConfigError("long_range='pme' needs a periodic System (PME); an open System's NonbondedForce "
                                  "(NoCutoff) is exact with the default long_range='split'")
            if ewald_alpha is None or ewald_mesh is None:
                raise ConfigError("long_range='pme' needs ewald_alpha (1/nm) and ewald_mesh (points per box vector)")
            self.alpha = float(ewald_alpha) / units.NM_TO_ANGSTROM
            self.mesh = MeshEwald(self.alpha, ewald_mesh, dtype=dtype)

    def forward(self, positions: torch.Tensor, boxvectors: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        e_ml, e_emb, _ = self.embedding_energy_terms(positions, boxvectors)
        return (e_ml + e_emb).to(positions.dtype), torch.zeros(0, dtype=positions.dtype, device=positions.device)

    @torch.jit.export
    def embedding_energy_terms(self, positions: torch.Tensor, boxvectors: Optional[torch.Tensor] = None
                               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(E_ML kJ/mol, E_embedding kJ/mol, predicted ML charges e) — for checks and analysis (NaN when a
        check failed in a capturable module).  E_embedding is what this force adds to the ML–MM electrostatics of
        the System's NonbondedForce (module docstring)."""
        data, ok = self.ml_inputs(positions, boxvectors)
        out = self.model(data, False)
        q_ml = out[K.CHARGES]
        q_site = torch.zeros_like(q_ml).index_add(0, self.charge_sites, q_ml)  # caps' charges on the atoms they cap
        pos_mm = (positions.index_select(0, self.mm_indices) - self.origin(positions)).to(self.dtype) * self.length_scale
        pos_q = data[K.POSITIONS]
        vec = (pos_mm.unsqueeze(0) - pos_q.unsqueeze(1)).reshape(-1, 3)
        box: Optional[torch.Tensor] = None
        if self.periodic and boxvectors is not None:
            box = boxvectors.to(self.dtype) * self.length_scale
            vec = minimum_image(vec, box)
        r = torch.linalg.norm(vec, dim=-1).reshape(q_ml.shape[0], -1)
        damped = torch.erf(r / self.damping) / r
        if self.use_mesh and box is not None:
            n_q = q_site.shape[0]
            zeros_ml, zeros_mm = torch.zeros_like(q_site), torch.zeros_like(self.mm_charges)
            channels = torch.stack([torch.cat([q_site, zeros_mm]), torch.cat([zeros_ml, self.mm_charges])], dim=1)
            phi = self.mesh(channels, torch.cat([pos_q, pos_mm]), box)[:n_q]  # [ML, (own images, MM)]
            within = (r < self.embedding_cutoff).to(r.dtype)
            phi_sr = ((damped - torch.erf(self.alpha * r) / r) * within * self.mm_charges.unsqueeze(0)).sum(1)
            # the ML region's own periodic images (and background): its mesh potential without the direct pairs,
            # which the model computes (OpenMM's exclusions do the same for the reference charges)
            d = pos_q.unsqueeze(0) - pos_q.unsqueeze(1)
            d = minimum_image(d.reshape(-1, 3), box).reshape(n_q, n_q, 3)
            eye = torch.eye(n_q, dtype=d.dtype, device=d.device)
            r_ml = torch.sqrt((d * d).sum(-1) + eye)  # 1 on the diagonal: no 0/0
            direct = (torch.erf(self.alpha * r_ml) / r_ml * (1.0 - eye) * q_site.unsqueeze(0)).sum(1)
            e_emb = self.coulomb * (q_site * (phi[:, 1] + phi_sr + 0.5 * (phi[:, 0] - direct))).sum()
        else:
            dq = q_site - self.reference_charges
            kernel = coulomb_kernel(r, self.damping, self.embedding_cutoff, damped)
            e_delta = (dq.unsqueeze(1) * self.mm_charges.unsqueeze(0) * kernel).sum()
            correction = (damped - 1.0 / r) * self.reference_pairs
            e_ref = (self.reference_charges.unsqueeze(1) * self.reference_mm_charges.unsqueeze(0) * correction).sum()
            e_emb = self.coulomb * (e_delta + e_ref)
        return self.poison(out[K.ENERGY].sum() * self.energy_scale, ok), self.poison(e_emb * self.energy_scale, ok), q_ml
