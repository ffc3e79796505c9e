"""Bring your own model: turn a trained model of another framework into an openmlip model file.

    openmlip import model.nequip.pth imported.pt            # nequip / Allegro (nequip-compile --mode torchscript)
    openmlip import mace.pt imported.pt                     # MACE scripted with torch.jit.script

The model file wraps the framework's own TorchScript module (:mod:`.nequip`, :mod:`.mace`) in openmlip's
model contract (:mod:`.shell`): Å/eV at the boundary, openmlip's in-graph neighbour list (periodic boxes
included), species from the framework's type names / atomic numbers, its cutoff.  It then works wherever an
openmlip model does (``openmlip plugin``, ``MLPotential``, ``createMixedSystem`` with the mechanical
embedding, ``openmlip md``/``run``, the ASE calculator), with no Python per MD step.  The metadata records
the provenance (framework, its version where known, source file and sha256, units).  Imported models
predict no partial charges: the total charge is checked as for any model and then unused, and the
electrostatic embedding refuses them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from .. import MODEL_FORMAT_VERSION, __version__
from .._io import atomic_path, check_not_input, writable_file
from .._io import file_sha256
from ..deploy import METADATA_NAME, UNITS, load_model
from ..errors import ConfigError, ModelFileError, first_line
from ..units import energy_to_ev, length_to_angstrom

FRAMEWORKS = ("nequip", "mace")


def load_source(path: Union[str, Path]):
    """``(module, nequip metadata)`` of a foreign TorchScript file, loaded once (CPU); the metadata dict holds
    nequip's extra files (empty strings for other frameworks).  :class:`ModelFileError` if it is no such file."""
    from .nequip import METADATA_KEYS

    path = str(path)
    if not Path(path).is_file():
        raise ModelFileError(f"{path}: no such file")
    extra = {k: "" for k in METADATA_KEYS}
    try:
        module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
    except Exception as exc:
        raise ModelFileError(
            f"{path}: not a TorchScript archive ({first_line(exc)}); openmlip imports TorchScript files: nequip-compile "
            "--mode torchscript output (*.nequip.pth) or a MACE model saved with torch.jit.save(torch.jit.script(model)). "
            "Checkpoints and pickled models are never loaded (unpickling runs arbitrary code)") from None
    return module, {k: (v.decode() if isinstance(v, bytes) else v) for k, v in extra.items()}


def detect_framework(module, meta: Dict[str, str], path: str) -> str:
    """``"nequip"`` for a file with nequip's metadata (``r_max``, ``type_names``), ``"mace"`` for a scripted
    module with MACE's ``atomic_numbers``/``r_max`` buffers; :class:`ModelFileError` otherwise."""
    if meta["r_max"] and meta["type_names"]:
        return "nequip"
    buffers = dict(module.named_buffers())
    if "atomic_numbers" in buffers and "r_max" in buffers:
        return "mace"
    raise ModelFileError(f"{path}: a TorchScript module of no known framework (neither nequip metadata nor MACE "
                         f"buffers); supported: {', '.join(FRAMEWORKS)}")


def _framework_version(framework: str) -> Optional[str]:
    from importlib import metadata

    name = {"nequip": "nequip", "mace": "mace-torch"}[framework]
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def import_model(source: Union[str, Path], output: Union[str, Path], framework: Optional[str] = None,
                 length_unit: str = "Angstrom", energy_unit: str = "eV", type_map: Optional[Dict[str, str]] = None,
                 head: Optional[str] = None, name: Optional[str] = None) -> Dict[str, Any]:
    """Write ``output``, an openmlip model file wrapping the foreign model ``source``; returns its metadata.

    ``length_unit`` / ``energy_unit``: the units the model was trained in (nequip models carry none; MACE
    works in Å and eV); ``type_map``: element of each custom nequip atom type; ``head``: MACE head.
    """
    source = Path(source)
    check_not_input(output, [source], "output")
    writable_file(output, "model file")
    module, source_meta = load_source(source)
    framework = framework or detect_framework(module, source_meta, str(source))
    if framework not in FRAMEWORKS:
        raise ConfigError(f"unknown framework {framework!r}; choose one of {', '.join(FRAMEWORKS)}")
    try:
        l_scale, e_scale = length_to_angstrom(length_unit), energy_to_ev(energy_unit)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if framework == "nequip":
        from .nequip import build

        wrapped, fields = build(module, source_meta, str(source), type_map, l_scale, e_scale)
    else:
        from .mace import build

        if (length_unit, energy_unit) != ("Angstrom", "eV"):
            raise ConfigError("MACE models work in Å and eV; drop --length-unit/--energy-unit")
        if type_map:
            raise ConfigError("--type-map is for nequip models; MACE types are atomic numbers")
        wrapped, fields = build(module, str(source), head)
    meta: Dict[str, Any] = {
        "format_version": MODEL_FORMAT_VERSION,
        "openmlip_version": __version__,
        "architecture": fields.pop("architecture"),
        "config": {},
        "elements": fields.pop("elements"),
        "cutoff": float(fields.pop("cutoff")),
        "units": UNITS,
        "charges": False,
        "electrostatics": False,
        "dtype": fields.pop("dtype"),
        "imported": dict(
            fields,
            framework_version=_framework_version(framework),
            source=str(source.resolve()),
            source_sha256=file_sha256(source),
            length_unit=length_unit,
            energy_unit=energy_unit,
        ),
        "provenance": {"imported_from": source.name, "framework": framework},
    }
    if name:
        meta["name"] = name
    scripted = torch.jit.script(wrapped.eval())
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        torch.jit.save(scripted, tmp, _extra_files={METADATA_NAME: json.dumps(meta, indent=1)})
    load_model(output)  # the file reads back
    return meta

