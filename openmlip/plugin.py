"""Turn a model file into a small pip-installable potential plugin (``plugins/<name>/``).

The distribution holds the model file, a model card and two entry points:

* ``openmmml.potentials``: ``<name> = openmlip.openmm._factory:OpenMLIPPotentialImplFactory`` so that
  ``MLPotential('<name>')`` works in plain openmm-ml code once it is installed;
* ``openmlip.models``: ``<name> = <package>:model_path`` so openmlip finds the file.

The distribution is written into a temporary folder beside ``out_dir`` and swapped in, so a failure
leaves the old one; the model is read before anything is replaced, and a folder that holds the working
directory, the model (other than as the plugin's own ``model.pt``) or anything but a plugin is never replaced.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Optional, Union

from .deploy import load_model
from .errors import ConfigError, OutputError, PluginExistsError
from .markdown import markdown_table

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")


def _is_plugin(folder: Path) -> bool:
    toml = folder / "pyproject.toml"
    return toml.is_file() and 'name = "openmlip-plugin-' in toml.read_text(errors="replace")


def _check_out(out: Path, model: Path, own_model: Path, overwrite: bool) -> None:
    """Refuse an output folder whose replacement would delete the working folder, the input model or foreign files."""
    target, cwd = out.resolve(), Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise OutputError(f"output folder {out} is the working folder or holds it; replacing it would delete it: "
                          "choose a new folder (default ./openmlip-plugin-NAME)")
    if not out.exists():
        return
    if not overwrite:
        raise PluginExistsError(f"{out} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if not out.is_dir():
        raise OutputError(f"output folder {out} is a file: choose another --out")
    if any(out.iterdir()) and not _is_plugin(out):
        raise OutputError(f"{out} is not an openmlip plugin folder (no pyproject.toml of an openmlip-plugin-*), so "
                          "--overwrite will not replace it: choose another --out")
    if target in model.resolve().parents and model.resolve() != own_model.resolve():
        raise OutputError(f"the model {model} lies inside {out}, which --overwrite would replace: move the model out "
                          "of it first, or choose another --out")


def _evaluation_sections(folder: Path, sha256: str) -> Dict[str, object]:
    """The card's tables from an ``openmlip evaluate`` folder of this very model file (checked by sha256)."""
    from .evaluate import dissociation_markdown, tables_markdown

    sections: Dict[str, object] = {}
    errors = folder / "errors.json"
    if not errors.is_file():
        raise ConfigError(f"--evaluation {folder}: no errors.json there; write it with `openmlip evaluate MODEL DATA... "
                          f"--out {folder}`")
    for file in ("errors.json", "dissociation.json"):
        path = folder / file
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--evaluation {folder}: {file} is not readable JSON ({exc}); run openmlip evaluate again") from None
        items = data if file == "dissociation.json" and isinstance(data, list) else [data]
        if not all(isinstance(d, dict) for d in items) or (file == "errors.json") != isinstance(data, dict):
            raise ConfigError(f"--evaluation {folder}: {file} is not what openmlip evaluate writes; run it again")
        shas = {d.get("model_sha256") for d in items}
        if shas != {sha256}:
            raise ConfigError(f"--evaluation {folder}: {file} was written for another model file (sha256 "
                              f"{', '.join(sorted(map(str, shas)))}, this one is {sha256}); run `openmlip evaluate` on "
                              "this model file again")
        try:
            sections[file] = tables_markdown(data) if file == "errors.json" else dissociation_markdown(data)
        except (KeyError, TypeError, ValueError, IndexError):
            raise ConfigError(f"--evaluation {folder}: {file} lacks what openmlip evaluate writes; run it again") from None
    if (folder / "dissociation.json").is_file():
        if not (folder / "dissociation.png").is_file():
            raise ConfigError(f"--evaluation {folder}: dissociation.json without dissociation.png; run openmlip evaluate again")
        sections["dissociation.png"] = (folder / "dissociation.png").read_bytes()
    return sections


def create_plugin(name: str, model_path: Union[str, Path], out_dir: Union[str, Path], description: str = "",
                  overwrite: bool = False, evaluation: Optional[Union[str, Path]] = None, notes: str = "") -> Path:
    """Write the plugin distribution for ``model_path`` into ``out_dir``; returns ``out_dir``.

    ``model_path`` may be the ``model.pt`` of the plugin being replaced (re-packaging in place).
    ``evaluation``: an ``openmlip evaluate`` output folder of this model file (``errors.json``, optionally the
    ``--scan`` files): its tables and dissociation plot go into the card. ``notes``: Markdown for the card's
    "Known failures and limits" section.
    """
    if not _NAME_RE.match(name):
        raise ConfigError(f"plugin name {name!r} must be lower-case letters, digits and '-', starting with a letter")
    _, meta = load_model(model_path)  # validates the file
    out = Path(out_dir)
    package = "openmlip_plugin_" + name.replace("-", "_")
    from .openmm.registry import shipped_models

    installed = shipped_models().get(name)
    if installed is not None and Path(installed).resolve() != (out / package / "model.pt").resolve():
        raise ConfigError(f"the potential name {name!r} is taken by an installed plugin ({installed}): installing this "
                          f"one (distribution openmlip-plugin-{name}) would replace it, and MLPotential({name!r}) would "
                          f"change meaning; choose another name (e.g. {name}-custom), or re-package that plugin in place "
                          f"(--out {Path(installed).parent.parent})")
    _check_out(out, Path(model_path), out / package / "model.pt", overwrite)
    data = Path(model_path).read_bytes()  # before anything is replaced
    sections = _evaluation_sections(Path(evaluation), hashlib.sha256(data).hexdigest()) if evaluation else {}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; the plugin folder gets normal permissions
    except OSError as exc:
        raise OutputError(f"cannot write the plugin folder {out} ({exc.strerror or exc}): choose another --out") from None
    try:
        _write_plugin(tmp, name, package, data, meta, description, sections, notes)
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old."))
            out.rename(old / out.name)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_plugin(out: Path, name: str, package: str, data: bytes, meta: dict, description: str,
                  sections: Dict[str, object], notes: str) -> None:
    pkg_dir = out / package
    pkg_dir.mkdir(parents=True)
    (pkg_dir / "model.pt").write_bytes(data)
    (pkg_dir / "__init__.py").write_text(
        f'"""openmlip potential plugin {name!r}."""\nfrom pathlib import Path\n\nNAME = {name!r}\n\n\n'
        "def model_path() -> Path:\n    \"\"\"Path of the shipped model file.\"\"\"\n"
        "    return Path(__file__).resolve().parent / \"model.pt\"\n"
    )
    (out / "pyproject.toml").write_text(
        f"""[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "openmlip-plugin-{name}"
version = "{meta.get('openmlip_version', '0.0.0')}"
description = "openmlip potential {name}: {meta['architecture']} model for {', '.join(meta['elements'])}"
requires-python = ">=3.11"
dependencies = ["openmlip"]

[project.entry-points."openmmml.potentials"]
{name} = "openmlip.openmm._factory:OpenMLIPPotentialImplFactory"

[project.entry-points."openmlip.models"]
{name} = "{package}:model_path"

[tool.setuptools]
packages = ["{package}"]

[tool.setuptools.package-data]
{package} = ["model.pt"]
"""
    )
    fields = [("architecture", meta["architecture"]),
              ("imported from", f"{' '.join(filter(None, [meta['imported']['framework'], meta['imported'].get('framework_version')]))}: "
                                f"`{Path(meta['imported']['source']).name}` (sha256 `{meta['imported']['source_sha256']}`), "
                                f"trained in {meta['imported']['length_unit']}/{meta['imported']['energy_unit']}")
              if "imported" in meta else ("aggregation", meta.get("config", {}).get("aggregation", "not recorded")),
              ("elements", ", ".join(meta["elements"])), ("cutoff", f"{meta['cutoff']} Å"), ("dtype", meta["dtype"]),
              ("partial charges", meta["charges"]), ("electrostatics", meta["electrostatics"]),
              ("model file sha256", f"`{hashlib.sha256(data).hexdigest()}`"), ("openmlip format", meta["format_version"])]
    card = [f"# Model card: `{name}`", "", description or "(no description given)", "",
            *markdown_table(["field", "value"], fields), "",
            "## Provenance", "", "```json", json.dumps(meta.get("provenance", {}), indent=1), "```", "",
            "## Test metrics (from the run that produced the file)", "", "```json",
            json.dumps(meta.get("metrics", {}), indent=1), "```", ""]
    if "errors.json" in sections:
        card += ["## Errors by molecule, element and total charge (`openmlip evaluate` of this file)", "",
                 sections["errors.json"].strip(), ""]
    if "dissociation.json" in sections:
        (out / "dissociation.png").write_bytes(sections["dissociation.png"])
        card += ["## X–H dissociation curves (`openmlip evaluate --scan` of this file)", "",
                 "One X–H bond of each GFN2-xTB-optimised template stretched from 0.8× to 3× (other atoms fixed); "
                 "energies relative to the optimised structure.", "", sections["dissociation.json"].strip(), "",
                 "![dissociation curves](dissociation.png)", ""]
    if notes.strip():
        card += ["## Known failures and limits", "", notes.strip(), ""]
    card += ["## Use", "", "```python",
            "import openmlip\nfrom openmmml import MLPotential\n"
            f"potential = MLPotential({name!r})\nsystem = potential.createSystem(topology, charge=0)", "```", ""]
    (out / "README.md").write_text("\n".join(card))
