"""Make openmm-torch's TorchForce work whatever the user imported first.

openmmtorch 1.5's Reference/CPU plugin (``libOpenMMTorchReference.so``) needs ``libnvrtc.so.12``,
which only becomes resolvable once ``torch`` (and its bundled CUDA libraries) is loaded.  OpenMM
loads all plugins once, when ``openmm`` is first imported.  If that happened before ``import torch``
the Torch plugins failed silently and every ``TorchForce`` later dies with
"No registered implementation for kernel CalcTorchForce".

:func:`ensure_torch_plugins` (run by ``import openmlip``) imports torch, then re-loads every Torch
plugin library that OpenMM recorded as failed.  It is idempotent.  Plugins that fail for a reason
torch cannot fix (e.g. ``libOpenCL.so.1`` or a CUDA driver missing) are reported as unavailable.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict, List

import torch  # noqa: F401  -- must be imported before openmm loads its plugins

import openmm  # noqa: E402

_FAILURE_RE = re.compile(r"Error loading library (?P<path>\S*libOpenMMTorch\w*\.(?:so|dylib|dll)\S*): (?P<why>.*)")


@dataclass
class PluginStatus:
    """Load state of one openmm-torch plugin library."""

    library: str
    state: str  # "loaded", "repaired" or "unavailable"
    detail: str = ""


_STATUS: Dict[str, PluginStatus] = {}
_DONE = False


def torch_plugin_dir() -> str:
    """Directory that holds OpenMM's plugin libraries (where openmm-torch installs its own)."""
    from openmm import version

    return os.path.join(version.openmm_library_path, "plugins")


def ensure_torch_plugins() -> Dict[str, PluginStatus]:
    """Load every openmm-torch plugin library that failed because torch came too late.

    Returns
    -------
    dict
        library file name -> :class:`PluginStatus`.
    """
    global _DONE
    if _DONE:
        return dict(_STATUS)
    failed = {}
    for message in openmm.Platform.getPluginLoadFailures():
        match = _FAILURE_RE.match(message)
        if match:
            failed[match.group("path")] = match.group("why")
    plugin_dir = torch_plugin_dir()
    names = sorted(f for f in os.listdir(plugin_dir) if f.startswith("libOpenMMTorch")) if os.path.isdir(plugin_dir) else []
    for name in names:
        path = os.path.join(plugin_dir, name)
        if path not in failed:
            _STATUS[name] = PluginStatus(name, "loaded")
            continue
        try:
            openmm.Platform.loadPluginLibrary(path)
        except Exception as exc:  # OpenMMException: a dependency torch cannot provide
            _STATUS[name] = PluginStatus(name, "unavailable", str(exc).strip())
        else:
            _STATUS[name] = PluginStatus(name, "repaired", f"re-loaded after torch (first attempt: {failed[path]})")
    _DONE = True
    return dict(_STATUS)


def import_openmmtorch():
    """Import openmmtorch without the root-logger 'simtk.openmm is deprecated' warning it triggers."""
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        import openmmtorch
    finally:
        logging.disable(previous)
    return openmmtorch


def torch_plugin_status() -> List[PluginStatus]:
    """Status of each openmm-torch plugin library after :func:`ensure_torch_plugins`."""
    return list(ensure_torch_plugins().values())
