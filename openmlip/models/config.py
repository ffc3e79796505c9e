"""Model configuration: one dataclass for both architectures, YAML/JSON friendly."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List

from ..errors import ConfigError
from ..nn.aggregation import AGGREGATIONS
from ..nn.embedding import normalize_elements

#: The architecture registry: name -> "module:class" of its core (imported when a model is built, so that reading
#: a config stays light).  A new architecture is one module with a core class plus one line here; the core's
#: ``forward(node_attr, center, neighbor, edge_vec, radial, u)`` returns (pair energies, pair charge transfers,
#: node energies), and a class attribute ``strictly_local = True`` (energy of atom i from the edges centred on i
#: only) lets large structures be evaluated in blocks of edges.
ARCHITECTURES: Dict[str, str] = {
    "allegro": "openmlip.models.allegro:AllegroCore",
    "nequip": "openmlip.models.nequip:NequIPCore",
}


def core_class(architecture: str) -> type:
    """The core class registered for ``architecture`` (see :data:`ARCHITECTURES`)."""
    import importlib

    module, _, name = ARCHITECTURES[architecture].partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass
class ModelConfig:
    """Hyperparameters of an openmlip potential.

    Lengths in Å, energies in eV, charges in e.
    """

    architecture: str = "allegro"
    elements: List[str] = field(default_factory=lambda: ["H", "C", "N", "O", "Na", "Cl"])
    # Defaults chosen for speed on CPUs (benchmarks/model_speed.py; the cost of larger sizes: docs/model_speed.md,
    # docs/training.md "What was measured").
    cutoff: float = 4.5
    num_channels: int = 8  # tensor-track multiplicity per irrep
    latent_dim: int = 32  # scalar-track width (allegro pair latent / nequip scalars use num_channels)
    l_max: int = 1
    parity: bool = False  # True: carry both parities per l (full O(3) irreps), False: only (-1)^l
    num_layers: int = 2
    radial_mlp: List[int] = field(default_factory=lambda: [32])
    num_basis: int = 8
    envelope_p: int = 6
    avg_num_neighbors: float = 12.0
    # charge-gated: sum on neutral atoms, smoothmax on charged ones; chosen by the NH4+ experiment
    # (docs/ammonium.md: most accurate on an unseen solvation shell, smooth, NVE-conserving)
    aggregation: str = "charge-gated"
    smoothmax_temperature: float = 0.1
    zbl: bool = True
    charges: bool = True  # partial-charge head (charge transfer along pairs, exactly conserving)
    electrostatics: bool = False  # add damped Coulomb energy between predicted charges
    coulomb_cutoff: float = 10.0  # Å; <= 0: no cutoff (open boundaries only)
    coulomb_damping: float = 1.0  # Å

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"unknown architecture {self.architecture!r}; choose one of {tuple(ARCHITECTURES)}")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"unknown aggregation {self.aggregation!r}; choose one of {AGGREGATIONS}")
        self.elements = normalize_elements(self.elements)
        for name in ("cutoff", "coulomb_damping", "smoothmax_temperature", "avg_num_neighbors"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("num_channels", "latent_dim", "num_layers", "num_basis"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.l_max <= 3:
            raise ConfigError(f"l_max must be in 0..3, got {self.l_max}")
        if self.electrostatics and not self.charges:
            raise ConfigError("electrostatics needs the charge head: set charges: true")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown model option(s) {unknown}; known options: {sorted(known)}")
        return cls(**d)
