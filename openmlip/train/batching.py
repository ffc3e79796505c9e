"""Structures -> batched tensors in the atomic-data layout of :mod:`openmlip.keys`."""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch

from ..data.structure import Structure


def collate(structures: Sequence[Structure], dtype: torch.dtype = torch.float32) -> Dict[str, torch.Tensor]:
    n = [s.num_atoms for s in structures]
    out = {
        "pos": torch.tensor(np.concatenate([s.positions for s in structures]), dtype=dtype),
        "atomic_numbers": torch.tensor(np.concatenate([s.numbers for s in structures]), dtype=torch.long),
        "batch": torch.repeat_interleave(torch.arange(len(structures)), torch.tensor(n)),
        "total_charge": torch.tensor([s.total_charge for s in structures], dtype=dtype),
        "spin_multiplicity": torch.tensor([s.spin_multiplicity for s in structures], dtype=dtype),
        "num_atoms": torch.tensor(n, dtype=dtype),
    }
    if all(s.formal_charges is not None for s in structures):
        out["formal_charges"] = torch.tensor(np.concatenate([s.formal_charges for s in structures]), dtype=dtype)
    if all(s.energy is not None for s in structures):
        out["energy_ref"] = torch.tensor([s.energy for s in structures], dtype=dtype)
    if all(s.forces is not None for s in structures):
        out["forces_ref"] = torch.tensor(np.concatenate([s.forces for s in structures]), dtype=dtype)
    if all(s.charges is not None for s in structures):
        out["charges_ref"] = torch.tensor(np.concatenate([s.charges for s in structures]), dtype=dtype)
    return out


def model_inputs(batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    keys = ("pos", "atomic_numbers", "batch", "total_charge", "spin_multiplicity", "formal_charges")
    return {k: (batch[k].clone() if k == "pos" else batch[k]) for k in keys if k in batch}


def to_device(batch: Dict[str, torch.Tensor], device: torch.device) -> Dict[str, torch.Tensor]:
    """The batch on ``device`` (unchanged on the CPU)."""
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
