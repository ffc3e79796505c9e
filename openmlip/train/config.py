"""Training configuration (YAML <-> dataclass)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml

from ..models.config import ModelConfig


@dataclass
class TrainConfig:
    """Everything a training run needs.  Paths are relative to the YAML file's folder."""

    data: List[str] = field(default_factory=list)  # SPICE .h5/.hdf5 or extxyz files
    output: str = "training"
    model: Dict[str, Any] = field(default_factory=dict)  # ModelConfig fields
    energy_key: str = "dft_total_energy"  # SPICE label datasets
    gradient_key: str = "dft_total_gradient"
    charges_key: str = "mbis_charges"
    valid_fraction: float = 0.1  # of molecules (split by molecule name)
    test_fraction: float = 0.1
    seed: int = 0
    batch_size: int = 8
    max_epochs: int = 100
    max_steps: Optional[int] = None
    lr: float = 5e-3
    lr_min_factor: float = 0.02  # cosine schedule to lr * lr_min_factor
    weight_decay: float = 0.0
    grad_clip: float = 10.0
    ema_decay: float = 0.99
    energy_weight: float = 1.0  # on (E/N)^2 in eV^2
    forces_weight: float = 10.0  # on F^2 in (eV/Å)^2
    charges_weight: float = 1.0  # on q^2 in e^2
    patience: int = 20  # epochs without validation improvement before stopping
    checkpoint_every: int = 200  # steps
    dtype: str = "float32"
    threads: int = 1
    stop_after_steps: Optional[int] = None  # end this invocation early (simulates an interruption; resume continues)
    # per-element reference energies subtracted before fitting: "least_squares" (fit to the training
    # set), "gfn2-xtb-atoms" (isolated neutral atoms, GFN2-xTB: a model's dissociation limit is then the
    # atoms' energy sum), or a mapping {element: eV}
    reference_energies: Any = "least_squares"
    # held-out molecules by name (instead of drawing valid_fraction/test_fraction of them at random)
    valid_molecules: Optional[List[str]] = None
    test_molecules: Optional[List[str]] = None

    def __post_init__(self):
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if not self.data:
            raise ValueError("training config needs data: [list of SPICE .h5 or extxyz files]")
        if not 0 <= self.valid_fraction < 1 or not 0 <= self.test_fraction < 1:
            raise ValueError("valid_fraction and test_fraction must be in [0, 1)")
        ModelConfig.from_dict(dict(self.model))  # validate early
        ref = self.reference_energies
        if not (ref in ("least_squares", "gfn2-xtb-atoms") or (isinstance(ref, dict) and all(
                isinstance(v, (int, float)) for v in ref.values()))):
            raise ValueError(f"reference_energies must be 'least_squares', 'gfn2-xtb-atoms' or a mapping element -> eV, got {ref!r}")

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "TrainConfig":
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise FileNotFoundError(f"training config {str(path)!r} not found") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown} in {path}; known: {sorted(known)}")
        base = path.parent
        raw["data"] = [str((base / p).resolve()) if not Path(p).is_absolute() else p for p in raw.get("data", [])]
        if "output" in raw and not Path(raw["output"]).is_absolute():
            raw["output"] = str((base / raw["output"]).resolve())
        return cls(**raw)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)
