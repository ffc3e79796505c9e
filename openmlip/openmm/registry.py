"""Installed openmlip potential plugins (entry-point group ``openmlip.models``: name -> model path)."""
from __future__ import annotations

import importlib.metadata as md
from typing import Dict

ENTRY_POINT_GROUP = "openmlip.models"


def shipped_models() -> Dict[str, str]:
    """Names and model-file paths of installed openmlip potential plugins."""
    return {ep.name: str(ep.load()()) for ep in md.entry_points(group=ENTRY_POINT_GROUP)}
