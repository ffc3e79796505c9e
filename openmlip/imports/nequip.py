"""NequIP and Allegro models of the nequip framework (0.19 / nequip-allegro 0.8).

Source: the TorchScript file ``nequip-compile --mode torchscript`` writes (``*.nequip.pth``: a scripted
``GraphModel`` with metadata ``r_max``, ``type_names``, ``model_dtype``, ``per_edge_type_cutoff`` in its
extra files).  Its ``forward`` takes nequip's ``AtomicDataDict`` — ``pos``, ``atom_types``, ``edge_index``
and, for periodic structures, ``cell`` and integer ``edge_cell_shift`` — and returns ``total_energy``,
``atomic_energy`` and ``forces`` (autograd inside).  openmlip builds the neighbour list (its in-graph one)
and passes it in, as nequip's ASE calculator and LAMMPS pair style do with theirs.  Loading needs torch
only, not nequip.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch

from .. import keys as K
from ..deploy import check_cutoff
from ..errors import ConfigError, ModelFileError
from .shell import ImportedModel, input_charges, integer_shifts, outputs, single_structure_inputs, symbols_for_types

METADATA_KEYS = ("r_max", "type_names", "model_dtype", "per_edge_type_cutoff", "allow_tf32")


class NequIPFrameworkModel(ImportedModel):
    """A compiled nequip-framework model behind openmlip's model contract (Å, eV).

    ``length_scale``: model length units per Å; ``energy_scale``: eV per model energy unit.
    """

    def __init__(self, model: torch.jit.ScriptModule, elements: List[str], types: List[int], cutoff: float,
                 length_scale: float = 1.0, energy_scale: float = 1.0):
        super().__init__(model, elements, cutoff)
        self.register_buffer("types", torch.tensor(types, dtype=torch.long))
        self.length_scale = float(length_scale)
        self.energy_scale = float(energy_scale)

    def forward(self, data: Dict[str, torch.Tensor], compute_forces: bool = True) -> Dict[str, torch.Tensor]:
        pos, cell, edge_index, shift = single_structure_inputs(data, self.cutoff)
        n = pos.shape[0]
        # inputs without autograd history (no_grad, not detach: see shell.energy_with_forces); nequip's own
        # calculators pass float64 positions and the model casts to its dtype inside
        with torch.no_grad():
            p = pos.to(torch.float64) * self.length_scale
            c = torch.zeros((1, 3, 3), dtype=torch.float64, device=pos.device)
            s = torch.zeros((edge_index.shape[1], 3), dtype=torch.float64, device=pos.device)
            if cell is not None:
                c = (cell.to(torch.float64) * self.length_scale).reshape(1, 3, 3)
                s = integer_shifts(shift, cell)
        if cell is None and bool((shift != 0).any()):
            raise ConfigError("edge shifts without a cell: pass 'cell' and 'pbc' for a periodic structure")
        inp: Dict[str, torch.Tensor] = {
            "pos": p,
            "atom_types": self.types.index_select(0, self.species(data[K.ATOMIC_NUMBERS])),
            "edge_index": edge_index,
        }
        if cell is not None:
            inp["cell"] = c
            inp["edge_cell_shift"] = s
        out = self.model(inp)
        with torch.no_grad():
            energy = out["total_energy"].reshape(-1) * self.energy_scale
            forces = out["forces"] * (self.energy_scale * self.length_scale)
            atomic = out["atomic_energy"].reshape(-1) * self.energy_scale
        return outputs(pos, energy, forces, atomic, input_charges(data, n, pos.dtype, pos.device), compute_forces)


def build(module: torch.jit.ScriptModule, meta: Dict[str, str], path: str, type_map: Optional[Dict[str, str]] = None,
          length_unit_to_angstrom: float = 1.0, energy_unit_to_ev: float = 1.0):
    """``(wrapped module, metadata fields)`` for a compiled nequip/Allegro model (``module`` and its extra files
    ``meta`` as :func:`openmlip.imports.load_source` read them)."""
    if not meta["r_max"] or not meta["type_names"]:
        raise ModelFileError(f"{path}: TorchScript without nequip metadata (r_max, type_names): compile the model "
                             "with `nequip-compile --mode torchscript` (a checkpoint or .nequip.zip needs that step)")
    type_names = meta["type_names"].split()
    elements = symbols_for_types(type_names, type_map, path)
    order = sorted(range(len(elements)), key=lambda k: elements[k])
    dtype = meta.get("model_dtype") or "float32"
    if dtype not in ("float32", "float64"):
        raise ModelFileError(f"{path}: model_dtype {dtype!r} is neither float32 nor float64")
    try:
        r_max = float(meta["r_max"])
    except (TypeError, ValueError):
        r_max = float("nan")
    cutoff_A = check_cutoff(r_max * length_unit_to_angstrom, f"{path}: r_max ({meta['r_max']!r} in the length unit)")
    wrapped = NequIPFrameworkModel(module, [elements[k] for k in order], order, cutoff_A,
                                   length_scale=1.0 / length_unit_to_angstrom, energy_scale=energy_unit_to_ev)
    packages = {m._c.qualified_name.split(".")[1] for m in module.modules()}  # __torch__.<package>.<...>
    architecture = "allegro" if "allegro" in packages else "nequip"
    fields = {
        "architecture": f"imported-{architecture}",
        "framework": "nequip",
        "elements": wrapped.elements,
        "cutoff": cutoff_A,
        "dtype": dtype,
        "type_names": type_names,
        "per_edge_type_cutoff": meta.get("per_edge_type_cutoff") or None,
        "allow_tf32": meta.get("allow_tf32") or None,
    }
    return wrapped, fields
