"""The openmlip potential: graph construction, charge handling, energy assembly, autograd forces.

``Potential.forward(data)`` follows the atomic-data contract (:mod:`openmlip.keys`):

inputs
    ``pos`` [N,3] Å, ``atomic_numbers`` [N]; optional ``batch`` [N], ``total_charge`` [B] (e),
    ``spin_multiplicity`` [B], ``formal_charges`` [N] (e), ``cell`` [B,3,3] Å, ``pbc`` [B,3],
    ``edge_index`` [2,E] + ``edge_shift`` [E,3] (else the neighbour list is built in-graph).
outputs
    ``energy`` [B] eV, ``atomic_energies`` [N] eV, ``charges`` [N] e (Σ per structure = Q),
    ``forces`` [N,3] eV/Å (= −∂E/∂pos by autograd) when ``compute_forces``.

Charge awareness.  Each atom carries an input charge ``f_i``: its formal charge when given, else
``Q/N`` of its structure; ``f_i`` and ``(2S+1 − 1)/N`` enter the scalar node attributes, so the total
charge and spin are model inputs.  Partial charges are ``q_i = f_i + Σ_j (t_ij − t_ji)`` with learned
pair transfers ``t_ij`` (smoothly cut off): charge only moves between atoms within the cutoff, so
``Σ_i q_i = Σ_i f_i = Q`` exactly for every structure and every fragment keeps its formal charge —
which keeps the model local (E(A ∪ B) = E(A) + E(B) for distant A and B, plus their Coulomb energy
when electrostatics is on).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from .. import keys as K
from ..nn.aggregation import Aggregation
from ..nn.electrostatics import DampedCoulomb
from ..nn.embedding import SpeciesIndex
from ..nn.neighbors import cell_and_pbc, neighbor_list
from ..nn.radial import BesselBasis, PolynomialCutoff
from ..nn.zbl import ZBLRepulsion
from .config import ModelConfig, core_class


#: default edges per block of the chunked evaluation of large structures (:meth:`Potential._blocks`)
EDGE_CHUNK = 12288


class Potential(torch.nn.Module):
    """A charge-aware E(3)-equivariant interatomic potential (architecture chosen by config)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config_dict = config.to_dict()
        self.architecture = config.architecture
        self.elements: List[str] = list(config.elements)
        self.cutoff = float(config.cutoff)
        self.species = SpeciesIndex(config.elements)
        S = self.species.num_species
        self.num_species = S
        num_node_attr = S + 2
        self.radial = BesselBasis(config.cutoff, config.num_basis)
        self.envelope = PolynomialCutoff(config.cutoff, config.envelope_p)
        self.core = core_class(config.architecture)(config, num_node_attr)
        #: atomic energy from the edges centred on the atom only (evaluation in blocks of edges allowed)
        self.strictly_local = bool(getattr(self.core, "strictly_local", False))
        self.aggregation = Aggregation(config.aggregation, config.smoothmax_temperature)
        self.per_species_scale = torch.nn.Parameter(torch.ones(S))
        self.per_species_shift = torch.nn.Parameter(torch.zeros(S))
        self.use_zbl = bool(config.zbl)
        self.zbl = ZBLRepulsion(config.elements)
        self.use_charges = bool(config.charges)
        self.use_electrostatics = bool(config.electrostatics)
        self.coulomb = DampedCoulomb(config.coulomb_cutoff, config.coulomb_damping)
        #: set by the OpenMM module for CUDA graphs: the input is one structure with its neighbour list and total
        #: charge (nothing is filled in in-graph), so the frozen graph holds no host synchronisation and no
        #: data-dependent shape
        self.capturable = False
        #: evaluate structures with more than this many edges in blocks of about this many (forces, inference,
        #: Allegro without electrostatics: see :meth:`_blocks`); 0 turns it off
        self.edge_chunk = EDGE_CHUNK

    @torch.jit.export
    def get_elements(self) -> List[str]:
        return self.elements

    def forward(self, data: Dict[str, torch.Tensor], compute_forces: bool = True) -> Dict[str, torch.Tensor]:
        pos = data[K.POSITIONS]
        if compute_forces and not pos.requires_grad:
            pos.requires_grad_(True)
        n = pos.shape[0]
        z = data[K.ATOMIC_NUMBERS]
        if K.BATCH in data:
            batch = data[K.BATCH]
        else:
            batch = torch.zeros(n, dtype=torch.long, device=pos.device)
        if not self.capturable and K.TOTAL_CHARGE not in data:
            total_charge = torch.zeros(int(batch.max()) + 1 if n > 0 else 1, dtype=pos.dtype, device=pos.device)
        else:
            total_charge = data[K.TOTAL_CHARGE].to(pos.dtype)
        num_graphs = total_charge.shape[0]
        if K.SPIN_MULTIPLICITY in data:
            spin = data[K.SPIN_MULTIPLICITY].to(pos.dtype)
        else:
            spin = torch.ones(num_graphs, dtype=pos.dtype, device=pos.device)
        cell, pbc = cell_and_pbc(data, pos.dtype)

        counts = torch.zeros(num_graphs, dtype=pos.dtype, device=pos.device).index_add(
            0, batch, torch.ones(n, dtype=pos.dtype, device=pos.device)
        )
        if K.FORMAL_CHARGES in data:
            atom_charge = data[K.FORMAL_CHARGES].to(pos.dtype)
        else:
            atom_charge = (total_charge / counts.clamp(min=1.0))[batch]
        atom_spin = ((spin - 1.0) / counts.clamp(min=1.0))[batch]

        species = self.species(z)
        # one-hot by comparison: torch.nn.functional.one_hot checks its range with a host synchronisation
        onehot = (species.unsqueeze(-1) == torch.arange(self.num_species, device=pos.device)).to(pos.dtype)
        node_attr = torch.cat([onehot, atom_charge.unsqueeze(-1), atom_spin.unsqueeze(-1)], dim=1)

        if not self.capturable and K.EDGE_INDEX not in data:
            edge_index, shift = neighbor_list(pos, batch, self.cutoff, num_graphs, cell, pbc)
        else:
            edge_index = data[K.EDGE_INDEX]
            if K.EDGE_SHIFT in data:
                shift = data[K.EDGE_SHIFT].to(pos.dtype)
            else:
                shift = torch.zeros((edge_index.shape[1], 3), dtype=pos.dtype, device=pos.device)
        center = edge_index[0]
        neighbor = edge_index[1]
        chunked = (compute_forces and self.edge_chunk > 0 and center.shape[0] > self.edge_chunk and not self.training
                   and not self.capturable and not self.use_electrostatics and self.strictly_local
                   and bool((center[1:] >= center[:-1]).all()))
        atom_bounds: List[int] = [0, n]
        edge_bounds: List[int] = [0, center.shape[0]]
        if chunked:
            atom_bounds, edge_bounds = self._blocks(center, n)
        # one call site of the model body (TorchScript inlines it: a second would double the graph openmm-torch
        # stores); in blocks, fresh leaves and results under no_grad, not detach(): torch.jit.freeze (which
        # openmm-torch applies) drops detach(), and every block's graph would reach back into the shared one
        with torch.no_grad():
            forces = torch.zeros_like(pos)
            atomic_sum = torch.zeros(n, dtype=pos.dtype, device=pos.device)
            charge_sum = atom_charge.clone()
        atomic = atomic_sum
        transfer = torch.zeros(0, dtype=pos.dtype, device=pos.device)
        for k in range(len(atom_bounds) - 1):
            a0, a1, e0, e1 = atom_bounds[k], atom_bounds[k + 1], edge_bounds[k], edge_bounds[k + 1]
            p = pos
            if chunked:
                with torch.no_grad():
                    p = pos.clone()
                p.requires_grad_(True)
            c, nb = center[e0:e1], neighbor[e0:e1]
            atomic, transfer = self._local_energies(p, species, node_attr, atom_charge, c, nb, shift[e0:e1])
            if chunked:
                block = atomic[a0:a1]
                g = torch.autograd.grad([block.sum()], [p], allow_unused=True)[0]
                with torch.no_grad():
                    if g is not None:
                        forces = forces - g
                    atomic_sum[a0:a1] = block
                    if self.use_charges:
                        charge_sum = charge_sum.index_add(0, c, transfer).index_add(0, nb, -transfer)
        if chunked:
            energy = torch.zeros(num_graphs, dtype=pos.dtype, device=pos.device).index_add(0, batch, atomic_sum)
            return {K.ENERGY: energy, K.ATOMIC_ENERGIES: atomic_sum, K.CHARGES: charge_sum, K.FORCES: forces}

        if self.use_charges:
            charges = atom_charge.index_add(0, center, transfer).index_add(0, neighbor, -transfer)
        else:
            charges = atom_charge
        if self.use_electrostatics:
            atomic = atomic + self.coulomb(pos, charges, batch, cell, pbc, num_graphs, self.capturable)

        energy = torch.zeros(num_graphs, dtype=pos.dtype, device=pos.device).index_add(0, batch, atomic)
        out: Dict[str, torch.Tensor] = {K.ENERGY: energy, K.ATOMIC_ENERGIES: atomic, K.CHARGES: charges}
        if compute_forces:
            grads = torch.autograd.grad([energy.sum()], [pos], create_graph=self.training, allow_unused=True)
            g = grads[0]
            if g is None:
                g = torch.zeros_like(pos)
            out[K.FORCES] = -g
        return out

    def _local_energies(
        self, pos: torch.Tensor, species: torch.Tensor, node_attr: torch.Tensor, atom_charge: torch.Tensor,
        center: torch.Tensor, neighbor: torch.Tensor, shift: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Atomic energies [N] (eV, before electrostatics) and pair charge transfers [E] from the edges given."""
        edge_vec = pos[neighbor] - pos[center] + shift
        r = torch.linalg.norm(edge_vec, dim=-1)
        u = self.envelope(r)
        radial = self.radial(r) * u.unsqueeze(-1)
        pair_energy, transfer, node_energy = self.core(node_attr, center, neighbor, edge_vec, radial, u)
        atomic = self.aggregation(pair_energy, u, center, pos.shape[0], atom_charge) + node_energy
        atomic = atomic * self.per_species_scale[species] + self.per_species_shift[species]
        # the ZBL term is exactly zero beyond its range: skipped (about 40 operators and their backward, a sixth of
        # a small region's step) when no pair is that close, except in a CUDA graph, which cannot branch on data
        if self.use_zbl and (self.capturable or bool((r < self.zbl.range).any())):
            atomic = atomic.index_add(0, center, self.zbl(r, species[center], species[neighbor]))
        return atomic, transfer

    def _blocks(self, center: torch.Tensor, n: int) -> Tuple[List[int], List[int]]:
        """Atom and edge boundaries of consecutive blocks of about ``edge_chunk`` edges (inference of large
        structures, forces by block).

        A strictly local model's atomic energy E_i depends only on the edges centred on i, so the atoms are cut
        into consecutive blocks; each block runs forward and backward on its own and its per-edge tensors are
        freed before the next (they stay in cache instead of growing with the system).  The sum is the energy
        and force of one pass (edges sorted by centre, as every openmlip list is).
        """
        first = torch.searchsorted(center, torch.arange(n + 1, device=center.device))  # first edge of each atom
        marks = torch.arange(0, center.shape[0], self.edge_chunk, device=center.device)
        starts = torch.searchsorted(first[:n].contiguous(), marks.contiguous())
        atoms: List[int] = torch.unique_consecutive(torch.cat([starts, torch.tensor([n], device=center.device)])).tolist()
        if atoms[0] != 0:
            atoms.insert(0, 0)
        edge_starts: List[int] = first.tolist()
        return atoms, [edge_starts[a] for a in atoms]
