"""Write a dataset's README (method, sampling, counts per template, element, charge and template class) from its
manifest."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..markdown import markdown_table
from .templates import Template, templates_argument


def _templates_option(value: str, width: int = 110) -> str:
    """`` \\``-continued ``--templates VALUE`` lines of a shell command (none for "")."""
    if not value:
        return ""
    lines = ["--templates"]
    for word in value.split():
        if len(lines[-1]) + 1 + len(word) > width:
            lines.append("")
        lines[-1] = f"{lines[-1]} {word}".strip()
    return "".join(f" \\\n    {line}" for line in lines)


def dataset_readme(h5_path, regenerate: str = "", card: str = "README.md") -> str:
    """The README of a dataset written by ``openmlip data generate`` (``regenerate``: the commands that made it,
    default the one ``generate`` call with the most common conformer count and the manifest's ``--reuse`` sources;
    ``card``: the card's file name beside the dataset, for the command that rewrites it)."""
    from .spice import read_spice

    h5 = Path(h5_path)
    man = json.loads(h5.with_suffix(".json").read_text())
    keys = man["label_keys"]
    data = list(read_spice(h5, energy_key=keys["energy"], gradient_key=keys["gradient"], charges_key=keys["charges"]))
    f = np.concatenate([s.forces.ravel() for s in data])
    elements = sorted({int(z) for s in data for z in s.numbers})
    from ase.data import chemical_symbols

    tpl = man["templates"]
    c = [t["conformers"] for t in tpl.values()]
    lines = [f"# Shipped dataset `{h5.name}`", "",
             f"{man['conformers']} conformers of {len(tpl)} templates (molecules, ion–water clusters and X–H bond-stretch scans) "
             f"covering {', '.join(chemical_symbols[z] for z in elements)}, labelled with GFN2-xTB energies, forces and partial "
             f"charges at each template's total charge. SPICE HDF5 layout (`openmlip.data.read_spice` with "
             f"`energy_key='{keys['energy']}', gradient_key='{keys['gradient']}', charges_key='{keys['charges']}'`), "
             f"1 file of {h5.stat().st_size / 1e6:.1f} MB. Manifest: `{h5.with_suffix('.json').name}`.", "",
             "Regenerate (resumable: a killed run recomputes at most 10 conformers of one template):", "", "```bash",
             regenerate or (f"openmlip data generate --out datasets/{h5.name} --conformers "
                            f"{max(set(c), key=c.count)} --stride {man['sampling']['stride_steps']} --seed {man['sampling']['seed']}"
                            + _templates_option(templates_argument(man["templates"]))
                            + "".join(f" \\\n    --reuse datasets/{src}" for src in man.get("reused", {}))),
             "python -c \"from openmlip.data.card import dataset_readme as r; "
             f"open('datasets/{card}','w').write(r('datasets/{h5.name}'"
             + ("" if card == "README.md" else f", card='{card}'") + "))\"", "```", "",
             "## Method", "", f"- Labels: {man['method']}. Units in the file: bohr, hartree, hartree/bohr (gradient), e.",
             "- Templates: 3D structures from SMILES with RDKit (ETKDG + MMFF); clusters get waters placed on a sphere around "
             "the solute (O towards cations, H towards anions).",
             "- Per-atom formal charges (`formal_charges` dataset per group): the solute's from its SMILES (RDKit), 0 on "
             "waters — e.g. +1 on the N of NH4+. Models train with them and get them at run time (openmm-ml "
             "`formalCharges=`, inferred from the Topology's bonds when omitted).",
             f"- Sampling (`md`): {man['sampling']['optimisation']}; then {man['sampling']['md']} at the template temperature, "
             f"{man['sampling']['equilibration_steps']} equilibration steps, one conformer every {man['sampling']['stride_steps']} "
             f"steps (seed {man['sampling']['seed']}).",
             f"- Sampling (`stretch`): {man['sampling'].get('stretch', '')}.",
             "- Isolated GFN2-xTB atoms (eV): "
             + ", ".join(f"{k} {v:.4f}" for k, v in man.get("isolated_atom_energies_eV", {}).items()) + ".",
             f"- Force components: RMS {1000 * np.sqrt(np.mean(f**2)):.0f} meV/Å, max |F| {np.abs(f).max():.2f} eV/Å.", "",
             "## Counts", ""]
    atoms = {s.name: len(s.numbers) for s in data}
    rows = []
    for name, t in tpl.items():
        sampling = t.get("sampling", "md")
        if sampling == "stretch" and t.get("stretch_to", Template.stretch_to) != Template.stretch_to:
            sampling = f"stretch to {t['stretch_to']:g}×"
        rows.append((name, f"`{t['smiles']}`", f"{t['charge']:+d}", t["waters"], sampling, f"{t['temperature']:g}",
                     atoms[name], t["conformers"]))
    lines += markdown_table(["template", "SMILES", "total charge", "waters", "sampling", "T (K)", "atoms", "conformers"],
                            rows, align="llrrlrrr")
    rows = []
    for z in elements:
        having = [s for s in data if z in s.numbers]
        rows.append((chemical_symbols[z], len({s.name for s in having}), len(having),
                     sum(int(np.sum(s.numbers == z)) for s in having)))
    lines += ["", *markdown_table(["element", "templates", "conformers with it", "atoms in all conformers"], rows, align="lrrr")]
    for title, key in (("total charge", "charge"), ("template class", "subset")):
        groups: dict = {}
        for t in tpl.values():
            n, k = groups.get(t[key], (0, 0))
            groups[t[key]] = (n + 1, k + t["conformers"])
        lines += ["", *markdown_table([title, "templates", "conformers"],
                                      [(f"{g:+d}" if key == "charge" else g, n, k) for g, (n, k) in sorted(groups.items())],
                                      align="lrr")]
    return "\n".join(lines) + "\n"
