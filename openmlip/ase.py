"""ASE calculator for any deployed openmlip model.

Total charge from ``atoms.info["charge"]`` (default 0), spin multiplicity from
``atoms.info.get("spin", 1)``, optional per-atom formal charges from ``atoms.arrays["formal_charges"]``
(as the model was trained with, e.g. +1 on the N of NH4+); periodic cells are honoured.  Results:
``energy`` (eV), ``forces`` (eV/Å), ``charges`` (e), ``energies`` (per atom, eV).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from ase.calculators.calculator import Calculator as _ASECalculator, all_changes

from .deploy import load_model
from .nn.embedding import SpeciesIndex


class Calculator(_ASECalculator):
    implemented_properties = ["energy", "free_energy", "forces", "charges", "energies"]

    def __init__(self, model_path: Union[str, Path], device: str = "cpu", dtype: Optional[torch.dtype] = None, **kwargs):
        super().__init__(**kwargs)
        self.model, self.metadata = load_model(model_path, device=device)
        if dtype is None:
            dtype = torch.float64 if self.metadata["dtype"] == "float64" else torch.float32
        self.model = self.model.to(dtype)
        self.dtype = dtype
        self.device = device
        self.species = SpeciesIndex(self.metadata["elements"])

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self.species.check(atoms.numbers)
        t = dict(dtype=self.dtype, device=self.device)
        data = {
            "pos": torch.tensor(atoms.positions, **t),
            "atomic_numbers": torch.tensor(atoms.numbers, dtype=torch.long, device=self.device),
            "total_charge": torch.tensor([float(atoms.info.get("charge", 0.0))], **t),
            "spin_multiplicity": torch.tensor([float(atoms.info.get("spin", 1.0))], **t),
        }
        if "formal_charges" in atoms.arrays:  # per-atom formal charges (e), as the model was trained with
            data["formal_charges"] = torch.tensor(np.asarray(atoms.arrays["formal_charges"], dtype=float), **t)
        if np.any(atoms.pbc):
            data["cell"] = torch.tensor(np.asarray(atoms.cell[:]), **t).unsqueeze(0)
            data["pbc"] = torch.tensor(np.asarray(atoms.pbc), dtype=torch.bool, device=self.device).unsqueeze(0)
        out = self.model(data, True)
        energy = float(out["energy"].detach().sum())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out["forces"].detach().cpu().double().numpy(),
            "charges": out["charges"].detach().cpu().double().numpy(),
            "energies": out["atomic_energies"].detach().cpu().double().numpy(),
        }
