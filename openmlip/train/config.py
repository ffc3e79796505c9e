"""Training configuration (YAML <-> dataclass), validated when it is made.

Every setting, including the embedded model section, is checked for its type and range when the config
is built (:class:`TrainConfig` or :meth:`TrainConfig.from_yaml`); a bad one is a
:class:`~openmlip.errors.ConfigError` naming the key, the value and what is allowed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml

from ..data.spice import SPICE_LABELS
from ..errors import ConfigError, ModelFileError, first_line
from ..models.config import ARCHITECTURES, ModelConfig
from ..nn.aggregation import AGGREGATIONS
from ..settings import Rule, any_value, check_value, is_kind, str_list

DATA_SUFFIXES = (".h5", ".hdf5", ".xyz", ".extxyz")

TRAIN_RULES: Dict[str, Rule] = {
    "output": ("str", "a folder path", lambda v: v.strip() != ""),
    "energy_key": ("str", "a dataset name", lambda v: v != ""),
    "gradient_key": ("str", "a dataset name", lambda v: v != ""),
    "charges_key": ("str", "a dataset name", lambda v: v != ""),
    "valid_fraction": ("number", "in [0, 1)", lambda v: 0 <= v < 1),
    "test_fraction": ("number", "in [0, 1)", lambda v: 0 <= v < 1),
    "seed": ("int", ">= 0", lambda v: v >= 0),
    "batch_size": ("int", ">= 1", lambda v: v >= 1),
    "max_epochs": ("int", ">= 1", lambda v: v >= 1),
    "max_steps": ("int", ">= 1 (or null: max_epochs decides)", lambda v: v >= 1),
    "lr": ("number", "> 0", lambda v: v > 0),
    "lr_min_factor": ("number", "in [0, 1]", lambda v: 0 <= v <= 1),
    "weight_decay": ("number", ">= 0", lambda v: v >= 0),
    "grad_clip": ("number", "> 0", lambda v: v > 0),
    "ema_decay": ("number", "in [0, 1)", lambda v: 0 <= v < 1),
    "energy_weight": ("number", ">= 0", lambda v: v >= 0),
    "forces_weight": ("number", ">= 0", lambda v: v >= 0),
    "charges_weight": ("number", ">= 0", lambda v: v >= 0),
    "patience": ("int", ">= 1", lambda v: v >= 1),
    "checkpoint_every": ("int", ">= 1", lambda v: v >= 1),
    "dtype": ("str", "'float32' or 'float64'", lambda v: v in ("float32", "float64")),
    "threads": ("int", ">= 1", lambda v: v >= 1),
    "stop_after_steps": ("int", ">= 1 (or null)", lambda v: v >= 1),
    "device": ("str", "'auto', 'cpu', 'cuda' or 'cuda:N'",
               lambda v: v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit())),
    "loader_workers": ("int", ">= 0", lambda v: v >= 0),
    "matmul_precision": ("str", "'highest' (full float32) or 'high' (TF32 matrix products on NVIDIA GPUs)",
                         lambda v: v in ("highest", "high")),
}
# settings a resumed run may change: they do not change which batches it sees or what it computes
RESUMABLE_CHANGES = ("stop_after_steps", "device", "loader_workers")
OPTIONAL = {"max_steps", "stop_after_steps", "valid_molecules", "test_molecules", "init_model"}
MODEL_RULES: Dict[str, Rule] = {
    "architecture": ("str", " or ".join(repr(a) for a in ARCHITECTURES), lambda v: v in ARCHITECTURES),
    "cutoff": ("number", "> 0 (Å)", lambda v: v > 0),
    "num_channels": ("int", ">= 1", lambda v: v >= 1),
    "latent_dim": ("int", ">= 1", lambda v: v >= 1),
    "l_max": ("int", "in 0..3", lambda v: 0 <= v <= 3),
    "parity": ("bool", "true or false", any_value),
    "num_layers": ("int", ">= 1", lambda v: v >= 1),
    "num_basis": ("int", ">= 1", lambda v: v >= 1),
    "envelope_p": ("int", ">= 1", lambda v: v >= 1),
    "avg_num_neighbors": ("number", "> 0", lambda v: v > 0),
    "aggregation": ("str", " or ".join(repr(a) for a in AGGREGATIONS), lambda v: v in AGGREGATIONS),
    "smoothmax_temperature": ("number", "> 0 (eV)", lambda v: v > 0),
    "zbl": ("bool", "true or false", any_value),
    "charges": ("bool", "true or false", any_value),
    "electrostatics": ("bool", "true or false", any_value),
    "coulomb_cutoff": ("number", "a length in Å (<= 0: no cutoff)", any_value),
    "coulomb_damping": ("number", "> 0 (Å)", lambda v: v > 0),
}


def validate_model_section(model: Any) -> Dict[str, Any]:
    """Type- and range-check the ``model:`` section (fields of :class:`~openmlip.models.config.ModelConfig`)."""
    if not isinstance(model, dict):
        raise ConfigError(f"model={model!r} is not a mapping; write model: {{architecture: allegro, elements: [H, O], ...}}")
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(model) - known)
    if unknown:
        raise ConfigError(f"unknown model option(s) {unknown}; known options: {sorted(known)}")
    out = dict(model)
    for key, rule in MODEL_RULES.items():
        if key in out:
            out[key] = check_value(f"model.{key}", out[key], rule)
    if "elements" in out:
        elements = out["elements"]
        if not isinstance(elements, (list, tuple)) or not elements or not all(
                isinstance(e, str) or (isinstance(e, int) and not isinstance(e, bool)) for e in elements):
            raise ConfigError(f"model.elements={elements!r} is not a list of element symbols; write elements: [H, C, N, O]")
    if "radial_mlp" in out:
        mlp = out["radial_mlp"]
        if not isinstance(mlp, (list, tuple)) or not all(is_kind(w, "int") and w >= 1 for w in mlp):
            raise ConfigError(f"model.radial_mlp={mlp!r} is not a list of integer widths >= 1; write radial_mlp: [32]")
    try:
        ModelConfig.from_dict(dict(out))
    except ValueError as exc:
        raise ConfigError(f"model section: {exc}") from None
    return out


@dataclass
class TrainConfig:
    """Everything a training run needs.  Paths are relative to the YAML file's folder."""

    data: List[str] = field(default_factory=list)  # SPICE .h5/.hdf5 or extxyz files (one path: a string)
    output: str = "training"
    model: Dict[str, Any] = field(default_factory=dict)  # ModelConfig fields
    energy_key: str = SPICE_LABELS.energy  # label datasets of HDF5 data (openmlip's xTB data: XTB_LABELS)
    gradient_key: str = SPICE_LABELS.gradient
    charges_key: str = SPICE_LABELS.charges
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
    device: str = "auto"  # GPU when torch sees one (under torchrun: GPU LOCAL_RANK), else CPU
    loader_workers: int = 0  # background processes reading and collating batches (0: in the training process)
    # 'high' lets CUDA matrix products use TF32 (10-bit mantissa) in training: faster on Ampere+, forces
    # within ~1e-3 relative; the deployed model always runs in full precision.  Lower precisions (bf16,
    # float16 autocast) are not offered: forces are derivatives and lose their accuracy there.
    matmul_precision: str = "highest"
    # per-element reference energies subtracted before fitting: "least_squares" (fit to the training
    # set), "gfn2-xtb-atoms" (isolated neutral atoms, GFN2-xTB: a model's dissociation limit is then the
    # atoms' energy sum), or a mapping {element: eV}
    reference_energies: Any = "least_squares"
    # held-out molecules by name (instead of drawing valid_fraction/test_fraction of them at random)
    valid_molecules: Optional[List[str]] = None
    test_molecules: Optional[List[str]] = None
    # fine-tuning: start from this model (a file written by `openmlip deploy`, or an installed potential's name),
    # its architecture and weights; the per-element energy shifts are refitted to the new labels (least squares
    # of label − model over the training molecules), so a model trained on xTB can be tuned on DFT energies
    init_model: Optional[str] = None

    def __post_init__(self):
        if isinstance(self.data, (str, Path)):  # one file
            self.data = [str(self.data)]
        if isinstance(self.data, (list, tuple)):
            self.data = [str(p) if isinstance(p, Path) else p for p in self.data]
        if isinstance(self.output, Path):
            self.output = str(self.output)
        if not self.data:
            raise ConfigError("training config needs data: [list of SPICE .h5 or extxyz files] (or data: one-file.h5)")
        self.data = str_list("data", self.data, "data file paths")
        for p in self.data:
            if Path(p).suffix.lower() not in DATA_SUFFIXES:
                raise ConfigError(f"data file {p!r} has an unknown format {Path(p).suffix!r}; use SPICE .h5/.hdf5 or extxyz .xyz/.extxyz")
        for key, rule in TRAIN_RULES.items():
            value = getattr(self, key)
            if not (key in OPTIONAL and value is None):
                setattr(self, key, check_value(key, value, rule))
        if self.valid_fraction + self.test_fraction >= 1:
            raise ConfigError(f"valid_fraction + test_fraction = {self.valid_fraction + self.test_fraction:g} leaves no "
                              "training data; make their sum < 1")
        if self.energy_weight == 0 and self.forces_weight == 0:
            raise ConfigError("energy_weight and forces_weight are both 0: nothing would be fitted; make one > 0")
        for key in ("valid_molecules", "test_molecules"):
            if getattr(self, key) is not None:
                setattr(self, key, str_list(key, getattr(self, key), "molecule names"))
        if self.init_model is not None:
            self.model = self._init_model_section()
        self.model = validate_model_section(self.model)
        ref = self.reference_energies
        if not (ref in ("least_squares", "gfn2-xtb-atoms") or (isinstance(ref, dict) and all(
                isinstance(k, str) and is_kind(v, "number") for k, v in ref.items()))):
            raise ConfigError(f"reference_energies must be 'least_squares', 'gfn2-xtb-atoms' or a mapping element -> eV "
                              f"(finite numbers), got {ref!r}")

    def _init_model_section(self) -> Dict[str, Any]:
        """The ``model:`` section of ``init_model``'s file (a config must not give its own)."""
        from ..deploy import load_model
        from ..openmm.registry import resolve_potential

        if not isinstance(self.init_model, str):
            raise ConfigError(f"init_model={self.init_model!r} is not a model file path or a potential name")
        if self.reference_energies != "least_squares":
            raise ConfigError("init_model refits the per-element energy shifts to the new labels: leave "
                              "reference_energies at least_squares")
        try:
            self.init_model = str(Path(resolve_potential(self.init_model)).resolve())
        except ModelFileError:
            if self.model:  # a saved run's config (resume, deploy) holds the file's section: the file is not needed
                return self.model
            raise
        of_file = dict(load_model(self.init_model)[1]["config"])
        if self.model and validate_model_section(self.model) != validate_model_section(of_file):
            raise ConfigError("init_model takes the architecture from its model file, and this model: section differs "
                              "from it: remove the model: section")
        return of_file

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "TrainConfig":
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"training config {str(path)!r} not found; pass the path of a training YAML") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            first = first_line(exc)
            raise ConfigError(f"training config {str(path)!r} is not readable YAML ({first}); fix the file") from None
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise ConfigError(f"training config {str(path)!r} is not a mapping of options (it holds a "
                              f"{type(raw).__name__}); write one 'option: value' per line")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(map(str, raw)) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s) {unknown} in {path}; known: {sorted(known)}")
        base = path.parent
        data = raw.get("data", [])
        if isinstance(data, str):
            data = [data]
        if isinstance(data, list) and all(isinstance(p, str) for p in data):
            raw["data"] = [p if Path(p).is_absolute() else str((base / p).resolve()) for p in data]
        init = raw.get("init_model")
        if isinstance(init, str) and not Path(init).is_absolute() and (base / init).is_file():
            raw["init_model"] = str((base / init).resolve())
        if isinstance(raw.get("output"), str) and not Path(raw["output"]).is_absolute():
            raw["output"] = str((base / raw["output"]).resolve())
        return cls(**raw)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)
