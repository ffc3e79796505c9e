"""What every imported model shares: the openmlip model contract around a foreign TorchScript module.

An imported model is an ``nn.Module`` with the contract of :class:`openmlip.models.Potential`
(``forward(data, compute_forces) -> {"energy", "atomic_energies", "charges", "forces"}`` in Å, eV, e) whose
energy comes from a framework's own deployed TorchScript module.  Those modules compute their forces
themselves (autograd inside, graph freed), so the shell returns an energy that is differentiable with the
framework's forces as its gradient (:func:`energy_with_forces`): openmm-torch (energy-only modules,
``lambda_interpolate``), the ASE calculator and every other openmlip path see an ordinary potential.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

from .. import keys as K
from ..errors import ConfigError
from ..nn.embedding import SpeciesIndex
from ..nn.neighbors import cell_and_pbc, neighbor_list


def energy_with_forces(pos: torch.Tensor, energy: torch.Tensor, forces: torch.Tensor) -> torch.Tensor:
    """``energy`` [B] whose gradient with respect to ``pos`` is ``-forces``, with no autograd history into the
    framework's (already freed) graph.

    ``c - Σ F·pos`` with the constant ``c = E + Σ F·pos`` computed without gradient, in float64 (the
    cancellation costs ~1e-16 relative to Σ|F·pos|).  Written with ``torch.no_grad()`` rather than
    ``.detach()``: ``torch.jit.freeze`` (which openmm-torch applies) drops ``detach`` calls, which would
    connect the result to the framework's freed graph (or make ``pos - pos.detach()`` plain zero).
    """
    with torch.no_grad():
        f = forces.to(torch.float64)
        value = energy.to(torch.float64).reshape(-1)
        c = value + (f * pos.to(torch.float64)).sum()
    if not pos.requires_grad:
        return value
    return (c - (f * pos.to(torch.float64)).sum()).reshape(-1)


class ImportedModel(torch.nn.Module):
    """The part every imported model shares: the wrapped TorchScript ``model``, its ``elements`` (openmlip's
    species contract, :meth:`get_elements`) and its ``cutoff`` (Å)."""

    def __init__(self, model: torch.jit.ScriptModule, elements: List[str], cutoff: float):
        super().__init__()
        self.model = model
        self.elements: List[str] = list(elements)
        self.species = SpeciesIndex(elements)
        self.cutoff = float(cutoff)

    @torch.jit.export
    def get_elements(self) -> List[str]:
        return self.elements


def single_structure_inputs(data: Dict[str, torch.Tensor], cutoff: float
                            ) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor, torch.Tensor]:
    """``(pos, cell [3,3] or None, edge_index, shift)`` of one structure, with openmlip's neighbour list
    (``edge_index[0]`` centre, ``edge_index[1]`` neighbour, vector ``pos[j] - pos[i] + shift``, shift in Å)
    unless the caller gave one.  Raises :class:`ConfigError` for a batch of several structures."""
    pos = data[K.POSITIONS]
    n = pos.shape[0]
    batch = torch.zeros(n, dtype=torch.long, device=pos.device)
    if K.BATCH in data:
        batch = data[K.BATCH]
        if n > 0 and bool((batch != 0).any()):
            raise ConfigError("imported models evaluate one structure at a time; call them per structure (batch 0)")
    cell, pbc = cell_and_pbc(data, pos.dtype)
    if cell is not None and pbc is None:
        pbc = torch.ones((1, 3), dtype=torch.bool, device=pos.device)
    if K.EDGE_INDEX in data:
        edge_index = data[K.EDGE_INDEX]
        if K.EDGE_SHIFT in data:
            shift = data[K.EDGE_SHIFT].to(pos.dtype)
        else:
            shift = torch.zeros((edge_index.shape[1], 3), dtype=pos.dtype, device=pos.device)
    else:
        edge_index, shift = neighbor_list(pos, batch, cutoff, 1, cell, pbc)
    periodic_cell: Optional[torch.Tensor] = None
    if cell is not None and pbc is not None and bool(pbc.any()):
        if not bool(pbc.all()):
            raise ConfigError("imported models take fully periodic boxes or none; this structure is periodic in "
                              "some directions only")
        periodic_cell = cell[0]
    return pos, periodic_cell, edge_index, shift


def integer_shifts(shift: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """Cartesian image shifts [E,3] (Å) as integer multiples of the cell vectors (rows of ``cell``)."""
    with torch.no_grad():
        return torch.round(shift.to(torch.float64) @ torch.linalg.inv(cell.to(torch.float64)))


def input_charges(data: Dict[str, torch.Tensor], n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The charges an imported model reports: the formal charges when given, else Q/N (it predicts none)."""
    if K.FORMAL_CHARGES in data:
        return data[K.FORMAL_CHARGES].to(dtype)
    q = torch.zeros(1, dtype=dtype, device=device)
    if K.TOTAL_CHARGE in data:
        q = data[K.TOTAL_CHARGE].to(dtype).reshape(-1)[:1]
    return q.expand(n) / float(max(n, 1))


def outputs(pos: torch.Tensor, energy: torch.Tensor, forces: torch.Tensor, atomic: torch.Tensor,
            charges: torch.Tensor, compute_forces: bool) -> Dict[str, torch.Tensor]:
    """The model contract's outputs; only ``energy`` carries gradient (to ``pos``), in ``pos``'s dtype."""
    with torch.no_grad():
        a = atomic.to(pos.dtype)
        f = forces.to(pos.dtype)
    out: Dict[str, torch.Tensor] = {
        K.ENERGY: energy_with_forces(pos, energy, forces).to(pos.dtype),
        K.ATOMIC_ENERGIES: a,
        K.CHARGES: charges,
    }
    if compute_forces:
        out[K.FORCES] = f
    return out


def symbols_for_types(type_names: List[str], type_map: Optional[Dict[str, str]], where: str) -> List[str]:
    """The element of each of a model's atom types: the type name itself when it is an element symbol,
    else ``type_map[name]``.  Raises :class:`ConfigError` for unmapped names or two types of one element
    (one atom type per element is what an OpenMM topology can choose from)."""
    from ase.data import atomic_numbers

    type_map = dict(type_map or {})
    unknown = [k for k in type_map if k not in type_names]
    if unknown:
        raise ConfigError(f"{where}: --type-map names {unknown} are not atom types of the model ({' '.join(type_names)})")
    for name, sym in type_map.items():
        if sym not in atomic_numbers or sym == "X":
            raise ConfigError(f"{where}: --type-map {name}={sym}: {sym!r} is not an element symbol (e.g. --type-map {name}=C)")
        if name in atomic_numbers and name != "X" and sym != name:
            raise ConfigError(f"{where}: --type-map {name}={sym}: the atom type {name!r} is the element {name} already, and "
                              f"mapping it to {sym} would relabel the model's elements (H=O O=H swaps them); map only "
                              "custom type names")
    out = []
    for name in type_names:
        sym = type_map.get(name, name)
        if sym not in atomic_numbers or sym == "X":
            raise ConfigError(
                f"{where}: atom type {name!r} is not an element symbol; map every custom type to an element, e.g. "
                f"--type-map {name}=C (types: {' '.join(type_names)})")
        out.append(sym)
    dup = sorted({s for s in out if out.count(s) > 1})
    if dup:
        raise ConfigError(
            f"{where}: several atom types map to {', '.join(dup)} ({' '.join(type_names)}); openmlip picks the type "
            "from the element, so each element needs exactly one type (leave the others out of --type-map is not "
            "possible: re-train with one type per element)")
    return out
