"""Model files: a TorchScript ``.pt`` with metadata in ``_extra_files["openmlip.json"]``.

``save_model`` scripts a :class:`~openmlip.models.Potential` and writes it atomically (temporary file +
rename: a crash never leaves a half-written model).  ``load_model`` validates the file and its
metadata and fails with a :class:`~openmlip.errors.ModelFileError` that says what to do.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from . import MODEL_FORMAT_VERSION, __version__
from ._io import atomic_path
from .errors import ConfigError, ModelFileError, first_line

METADATA_NAME = "openmlip.json"
UNITS = {"length": "Angstrom", "energy": "eV", "charge": "e", "forces": "eV/Angstrom"}


def model_metadata(model: torch.nn.Module, **extra: Any) -> Dict[str, Any]:
    cfg = dict(model.config_dict)
    dtype = next(model.parameters()).dtype
    meta = {
        "format_version": MODEL_FORMAT_VERSION,
        "openmlip_version": __version__,
        "architecture": cfg["architecture"],
        "config": cfg,
        "elements": list(cfg["elements"]),
        "cutoff": float(cfg["cutoff"]),
        "units": UNITS,
        "charges": bool(cfg["charges"]),
        "electrostatics": bool(cfg["electrostatics"]),
        "dtype": str(dtype).replace("torch.", ""),
    }
    meta.update(extra)
    return meta


#: precision names -> torch dtypes (model files and training configs say float32/float64, OpenMM single/double)
DTYPES = {"float32": torch.float32, "single": torch.float32, "float64": torch.float64, "double": torch.float64}


# The longest cutoff (Å) a model file may have: an equivariant potential's is 4-7 Å, a long-range one's ~12 Å, a
# model trained in nm but compiled as if in Å 10x that; beyond this a neighbour list outgrows any memory (r_max 1e6
# asked for 24 PB).
MAX_CUTOFF_A = 50.0


def check_cutoff(value, what: str) -> float:
    """``value`` as a model cutoff in Å (finite, > 0, at most :data:`MAX_CUTOFF_A`), or :class:`ModelFileError`
    naming ``what`` (the file and its field)."""
    try:
        cutoff = float(value)
    except (TypeError, ValueError):
        cutoff = float("nan")
    if not math.isfinite(cutoff) or not 0.0 < cutoff <= MAX_CUTOFF_A:
        raise ModelFileError(f"{what} is {value!r}, not a cutoff in (0, {MAX_CUTOFF_A:g}] Å; the model cannot be used "
                             "as it is: re-train or re-compile it with its real cutoff (for nequip, r_max in the "
                             "length unit given to --length-unit)")
    return cutoff


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a precision name (``float32``/``single``, ``float64``/``double``)."""
    if name not in DTYPES:
        raise ConfigError(f"precision {name!r} is not one of {', '.join(map(repr, DTYPES))}")
    return DTYPES[name]


def cast_model(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``model`` in ``dtype``: cast only when its parameters are in another dtype, so that a model that keeps
    some buffers in float64 on purpose (nequip's per-type energy shifts, say) is left as it was built."""
    for p in model.parameters():
        if p.is_floating_point():
            if p.dtype == dtype:
                return model
            break
    with warnings.catch_warnings():  # torch reads .grad of the buffers of e3nn's scripted submodules while casting
        warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor that is not a leaf")
        return model.to(dtype)


def save_model(model: torch.nn.Module, path: Union[str, Path], **metadata: Any) -> Dict[str, Any]:
    """Script ``model`` and write it with its metadata to ``path`` (atomically).

    Extra keyword arguments (e.g. ``provenance``, ``metrics``) go into the metadata.
    """
    path = Path(path)
    meta = model_metadata(model, **metadata)
    scripted = torch.jit.script(model.eval())
    with atomic_path(path) as tmp:
        torch.jit.save(scripted, tmp, _extra_files={METADATA_NAME: json.dumps(meta, indent=1)})
    return meta


def load_model(path: Union[str, Path], device: Optional[Union[str, torch.device]] = "cpu") -> Tuple[torch.jit.ScriptModule, Dict[str, Any]]:
    """Load a model file.  Returns ``(scripted_model, metadata)``.

    Raises
    ------
    ModelFileError
        missing file, corrupt/truncated file, no openmlip metadata, or a newer format version.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"model file {str(path)!r} does not exist; pass the path of a file written by `openmlip deploy` "
            "(or a shipped potential's name)"
        )
    extra = {METADATA_NAME: ""}
    try:
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError / ValueError variants for bad archives
        first = first_line(exc)
        raise ModelFileError(
            f"model file {str(path)!r} is corrupt or not a TorchScript archive ({first}); "
            "re-create it with `openmlip deploy` or re-install the potential"
        ) from None
    if not extra[METADATA_NAME]:
        raise ModelFileError(
            f"model file {str(path)!r} has no openmlip metadata ({METADATA_NAME}); it was not written by "
            "openmlip — deploy the model with `openmlip deploy`"
        )
    try:
        meta = json.loads(extra[METADATA_NAME])
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"model file {str(path)!r} has unreadable metadata ({exc}); re-deploy it") from None
    version = meta.get("format_version")
    if not isinstance(version, int) or version > MODEL_FORMAT_VERSION or version < 1:
        raise ModelFileError(
            f"model file {str(path)!r} uses openmlip model format {version!r}; this openmlip "
            f"({__version__}) reads formats 1..{MODEL_FORMAT_VERSION}: upgrade openmlip "
            "(pip install -U openmlip) or re-deploy the model with this version"
        )
    for key in ("elements", "cutoff", "dtype", "architecture"):
        if key not in meta:
            raise ModelFileError(f"model file {str(path)!r} metadata lacks {key!r}; re-deploy it with `openmlip deploy`")
    check_cutoff(meta["cutoff"], f"model file {str(path)!r}: cutoff")
    return module, meta
