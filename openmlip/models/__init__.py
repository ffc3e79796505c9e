"""openmlip models: a registry of architectures built from :class:`ModelConfig`."""
from __future__ import annotations

from typing import Any, Dict, Union

import torch

from .config import ARCHITECTURES, ModelConfig
from .potential import Potential


def build_model(
    config: Union[ModelConfig, Dict[str, Any], None] = None, dtype: torch.dtype = torch.float32, **overrides: Any
) -> Potential:
    """Build a :class:`Potential` from a config (dataclass or dict) plus keyword overrides.

    The model is always constructed in float64 and then cast to ``dtype``: e3nn computes its
    Clebsch-Gordan/Wigner-3j constants in the default dtype at construction, and constants made in
    float32 would limit a float64 model's equivariance to float32 precision (docs/design.md, decision 3).

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
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = Potential(cfg)
    finally:
        torch.set_default_dtype(previous)
    return model.to(dtype)


def rebuild_model(module: torch.nn.Module, config: Dict[str, Any]) -> Potential:
    """A new eager :class:`Potential` with this openmlip version's code and ``module``'s weights.

    ``module`` is a model as loaded from a file (TorchScript, with the code of the version that wrote it; its
    config is ``metadata["config"]`` of :func:`openmlip.deploy.load_model`) or an eager ``Potential`` (config:
    ``model.config_dict``).  The result computes the same numbers and can be changed before scripting (e.g.
    made capturable for CUDA graphs) without touching ``module``.
    """
    params = [p for p in module.parameters() if p.is_floating_point()]
    model = build_model(config, dtype=params[0].dtype if params else torch.float32)
    # a TorchScript module's state_dict also holds its non-persistent buffers (values derived from the config, e.g. the
    # tensor product's compact rows): the new model derives its own
    derived = {name for name, _ in model.named_buffers()} - set(model.state_dict())
    model.load_state_dict({k: v for k, v in module.state_dict().items() if k not in derived})
    return model.eval()


def script_model(model: Potential) -> torch.jit.ScriptModule:
    """``torch.jit.script`` the model (plain TorchScript; no e3nn-specific compile step needed)."""
    return torch.jit.script(model)


__all__ = ["ARCHITECTURES", "ModelConfig", "Potential", "build_model", "rebuild_model", "script_model"]
