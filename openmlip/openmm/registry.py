"""Installed openmlip potential plugins (entry-point group ``openmlip.models``: name -> model path)."""
from __future__ import annotations

import importlib.metadata as md
from pathlib import Path
from typing import Dict, Optional, Union

from .. import DEFAULT_POTENTIAL
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


def resolve_potential(name: str, root: Optional[Union[str, Path]] = None) -> Path:
    """The model file meant by ``name``: an installed potential's file, else a file ``root/name`` (when ``root``
    is given) or ``name``.  The one resolver of the CLI, the demo and the MD specs.

    Raises :class:`ModelFileError` naming the installed potentials when ``name`` is neither.
    """
    for ep in md.entry_points(group=ENTRY_POINT_GROUP, name=name):
        return Path(ep.load()())
    for candidate in ([Path(root) / name] if root is not None else []) + [Path(name)]:
        if candidate.is_file():
            return candidate
    installed = ", ".join(sorted(ep.name for ep in md.entry_points(group=ENTRY_POINT_GROUP))) or "none installed"
    raise ModelFileError(f"{name!r} is neither an installed openmlip potential ({installed}) nor a model file; install the "
                         f"shipped one with `pip install -e plugins/{DEFAULT_POTENTIAL}` (make does) or give a model file")
