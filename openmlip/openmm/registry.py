"""Installed openmlip potential plugins (entry-point group ``openmlip.models``: name -> model path)."""
from __future__ import annotations

import importlib.metadata as md
from typing import Dict

from ..errors import ModelFileError

ENTRY_POINT_GROUP = "openmlip.models"


def shipped_models() -> Dict[str, str]:
    """Names and model-file paths of installed openmlip potential plugins."""
    return {ep.name: str(ep.load()()) for ep in md.entry_points(group=ENTRY_POINT_GROUP)}


def unknown_potential(name: str) -> ModelFileError:
    """The error for a potential name that no installed plugin provides (lists the installed ones)."""
    installed = ", ".join(sorted(ep.name for ep in md.entry_points(group=ENTRY_POINT_GROUP))) or "none"
    return ModelFileError(f"no installed openmlip potential named {name!r}; installed: {installed} "
                          "(or use MLPotential('openmlip', modelPath='<model file>'))")


def model_path(name: str) -> str:
    """The model file of the installed potential ``name``, or :class:`ModelFileError` listing the installed ones."""
    for ep in md.entry_points(group=ENTRY_POINT_GROUP, name=name):
        return str(ep.load()())
    raise unknown_potential(name)
