"""MACE models (mace-torch 0.3.x) scripted with ``torch.jit.script`` / ``e3nn.util.jit.compile``.

Source: a TorchScript file of a MACE model (``MACE`` / ``ScaleShiftMACE``), as MACE's LAMMPS and OpenMM
exports script it.  Its ``forward(data, training, compute_force, ...)`` takes ``positions``, ``node_attrs``
(one-hot over the model's ``atomic_numbers`` buffer), ``edge_index`` (sender, receiver; vector
``positions[receiver] - positions[sender] + shifts``: openmlip's convention), Cartesian ``shifts``,
``unit_shifts``, ``cell``, ``batch``, ``ptr`` (and ``head``) and returns ``energy`` (with the E0s),
``node_energy`` and ``forces``.  The units are MACE's: Å and eV.  Loading needs torch only, not mace-torch
(its pinned e3nn 0.4.4 cannot share openmlip's environment).
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch

from .. import keys as K
from ..deploy import check_cutoff
from ..errors import ModelFileError
from .shell import ImportedModel, input_charges, integer_shifts, outputs, single_structure_inputs


class MACEModel(ImportedModel):
    """A scripted MACE model behind openmlip's model contract (Å, eV); ``elements`` in the order of the model's
    atomic_numbers buffer."""

    def __init__(self, model: torch.jit.ScriptModule, elements: List[str], cutoff: float, head: int = 0):
        super().__init__(model, elements, cutoff)
        self.num_elements = len(elements)
        self.register_buffer("head", torch.tensor([int(head)], dtype=torch.long))
        # follows the model through .to(dtype): MACE takes inputs in its parameters' dtype
        dtype = next(iter(model.parameters())).dtype
        self.register_buffer("dtype_probe", torch.zeros(0, dtype=dtype))

    def forward(self, data: Dict[str, torch.Tensor], compute_forces: bool = True) -> Dict[str, torch.Tensor]:
        pos, cell, edge_index, shift = single_structure_inputs(data, self.cutoff)
        n = pos.shape[0]
        dtype = self.dtype_probe.dtype
        with torch.no_grad():  # inputs without autograd history (not detach: see shell.energy_with_forces)
            p = pos.to(dtype)
            sh = shift.to(dtype)
            if cell is not None:
                unit_shifts = integer_shifts(shift, cell).to(dtype)
                c = cell.to(dtype)
            else:
                unit_shifts = torch.zeros((edge_index.shape[1], 3), dtype=dtype, device=pos.device)
                c = torch.zeros((3, 3), dtype=dtype, device=pos.device)
        inp: Dict[str, torch.Tensor] = {
            "positions": p,
            "node_attrs": torch.nn.functional.one_hot(self.species(data[K.ATOMIC_NUMBERS]), self.num_elements).to(dtype),
            "edge_index": edge_index,
            "shifts": sh,
            "unit_shifts": unit_shifts,
            "cell": c,
            "batch": torch.zeros(n, dtype=torch.long, device=pos.device),
            "ptr": torch.tensor([0, n], dtype=torch.long, device=pos.device),
            "head": self.head,
        }
        out = self.model(inp, False, True)
        e = out["energy"]
        f = out["forces"]
        a = out["node_energy"]
        assert e is not None and f is not None and a is not None
        return outputs(pos, e.reshape(-1), f, a.reshape(-1), input_charges(data, n, pos.dtype, pos.device), compute_forces)


def build(module: torch.jit.ScriptModule, path: str, head: Optional[str] = None):
    """``(wrapped module, metadata fields)`` for a scripted MACE model (``module`` as
    :func:`openmlip.imports.load_source` read it from ``path``)."""
    from ase.data import chemical_symbols

    names = dict(module.named_buffers())
    if "atomic_numbers" not in names or "r_max" not in names:
        raise ModelFileError(f"{path}: a TorchScript module without MACE's atomic_numbers/r_max buffers; give a "
                             "scripted MACE or ScaleShiftMACE model (a LAMMPS_MACE wrapper: its .model)")
    if "local_or_ghost" in str(module.forward.schema):
        raise ModelFileError(f"{path}: this is MACE's LAMMPS wrapper; script the MACE model itself "
                             "(e3nn.util.jit.compile(model)) and import that file")
    z = [int(v) for v in names["atomic_numbers"].tolist()]
    elements = [chemical_symbols[v] for v in z]
    heads = list(getattr(module, "heads", [None]) or [None])
    head_index = 0
    if head is not None:
        if head not in heads:
            raise ModelFileError(f"{path}: no head {head!r}; the model's heads are {heads}")
        head_index = heads.index(head)
    elif len(heads) > 1:
        head_index = len(heads) - 1  # MACE's own default (its calculators take the last head)
    dtype = next(iter(module.parameters())).dtype
    check_cutoff(float(names["r_max"]), f"{path}: r_max")
    wrapped = MACEModel(module, elements, float(names["r_max"]), head_index)
    fields = {
        "architecture": "imported-mace",
        "framework": "mace",
        "elements": elements,
        "cutoff": float(names["r_max"]),
        "dtype": str(dtype).replace("torch.", ""),
        "heads": [str(h) for h in heads],
        "head": str(heads[head_index]),
    }
    return wrapped, fields
