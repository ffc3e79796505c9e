"""Turn a model file into a small pip-installable potential plugin (``plugins/<name>/``).

The distribution holds the model file, a model card and two entry points:

* ``openmmml.potentials``: ``<name> = openmlip.openmm._factory:OpenMLIPPotentialImplFactory`` so that
  ``MLPotential('<name>')`` works in plain openmm-ml code once it is installed;
* ``openmlip.models``: ``<name> = <package>:model_path`` so openmlip finds the file.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Union

from .deploy import file_sha256, load_model

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")


def create_plugin(name: str, model_path: Union[str, Path], out_dir: Union[str, Path], description: str = "",
                  overwrite: bool = False) -> Path:
    """Write the plugin distribution for ``model_path`` into ``out_dir``; returns ``out_dir``."""
    if not _NAME_RE.match(name):
        raise ValueError(f"plugin name {name!r} must be lower-case letters, digits and '-', starting with a letter")
    _, meta = load_model(model_path)  # validates the file
    out = Path(out_dir)
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} exists; pass overwrite=True (CLI: --overwrite) to replace it")
        shutil.rmtree(out)
    package = "openmlip_plugin_" + name.replace("-", "_")
    pkg_dir = out / package
    pkg_dir.mkdir(parents=True)
    shutil.copy2(model_path, pkg_dir / "model.pt")
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
    card = [f"# Model card: `{name}`", "", description or "(no description given)", "",
            "| field | value |", "| --- | --- |",
            f"| architecture | {meta['architecture']} |", f"| elements | {', '.join(meta['elements'])} |",
            f"| cutoff | {meta['cutoff']} Å |", f"| dtype | {meta['dtype']} |",
            f"| partial charges | {meta['charges']} |", f"| electrostatics | {meta['electrostatics']} |",
            f"| model file sha256 | `{file_sha256(model_path)}` |", f"| openmlip format | {meta['format_version']} |", "",
            "## Provenance", "", "```json", json.dumps(meta.get("provenance", {}), indent=1), "```", "",
            "## Test metrics (from the run that produced the file)", "", "```json",
            json.dumps(meta.get("metrics", {}), indent=1), "```", "", "## Use", "", "```python",
            "import openmlip\nfrom openmmml import MLPotential\n"
            f"potential = MLPotential({name!r})\nsystem = potential.createSystem(topology, charge=0)", "```", ""]
    (out / "README.md").write_text("\n".join(card))
    return out
