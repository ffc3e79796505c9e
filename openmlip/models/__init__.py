"""openmlip models: a registry of architectures built from :class:`ModelConfig`."""
from __future__ import annotations

from typing import Any, Dict, Union

import torch

from .config import ARCHITECTURES, ModelConfig
from .potential import Potential


def build_model(config: Union[ModelConfig, Dict[str, Any], None] = None, **overrides: Any) -> Potential:
    """Build a :class:`Potential` from a config (dataclass or dict) plus keyword overrides.

    Examples
    --------
    >>> model = build_model(architecture="nequip", aggregation="smoothmax")
    """
    if config is None:
        cfg = ModelConfig(**overrides)
    elif isinstance(config, ModelConfig):
        cfg = ModelConfig.from_dict({**config.to_dict(), **overrides})
    else:
        cfg = ModelConfig.from_dict({**dict(config), **overrides})
    return Potential(cfg)


def script_model(model: Potential) -> torch.jit.ScriptModule:
    """``torch.jit.script`` the model (plain TorchScript; no e3nn-specific compile step needed)."""
    return torch.jit.script(model)


__all__ = ["ARCHITECTURES", "ModelConfig", "Potential", "build_model", "script_model"]
