"""Structures -> batched tensors in the atomic-data layout of :mod:`openmlip.keys`."""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch

from .. import keys as K
from ..data.structure import Structure


def collate(structures: Sequence[Structure], dtype: torch.dtype = torch.float32) -> Dict[str, torch.Tensor]:
    n = [s.num_atoms for s in structures]
    out = {
        K.POSITIONS: torch.tensor(np.concatenate([s.positions for s in structures]), dtype=dtype),
        K.ATOMIC_NUMBERS: torch.tensor(np.concatenate([s.numbers for s in structures]), dtype=torch.long),
        K.BATCH: torch.repeat_interleave(torch.arange(len(structures)), torch.tensor(n)),
        K.TOTAL_CHARGE: torch.tensor([s.total_charge for s in structures], dtype=dtype),
        K.SPIN_MULTIPLICITY: torch.tensor([s.spin_multiplicity for s in structures], dtype=dtype),
        K.NUM_ATOMS: torch.tensor(n, dtype=dtype),
    }
    if all(s.formal_charges is not None for s in structures):
        out[K.FORMAL_CHARGES] = torch.tensor(np.concatenate([s.formal_charges for s in structures]), dtype=dtype)
    if all(s.energy is not None for s in structures):
        out[K.ENERGY_REF] = torch.tensor([s.energy for s in structures], dtype=dtype)
    if all(s.forces is not None for s in structures):
        out[K.FORCES_REF] = torch.tensor(np.concatenate([s.forces for s in structures]), dtype=dtype)
    if all(s.charges is not None for s in structures):
        out[K.CHARGES_REF] = torch.tensor(np.concatenate([s.charges for s in structures]), dtype=dtype)
    return out


def model_inputs(batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: (batch[k].clone() if k == K.POSITIONS else batch[k]) for k in K.MODEL_INPUTS if k in batch}


def to_device(batch: Dict[str, torch.Tensor], device: torch.device) -> Dict[str, torch.Tensor]:
    """The batch on ``device`` (unchanged on the CPU)."""
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
