"""A model file against reference data: errors by molecule, element and total charge, and X–H dissociation curves.

``openmlip evaluate MODEL DATA...`` writes ``errors.json`` / ``errors.md`` (and, with ``--scan``,
``dissociation.json`` / ``dissociation.png``): the tables of a model card.  Errors are model minus reference on
the conformers of the named molecules (default: all): energy per atom (meV/atom), force components (meV/Å, of the
atoms of each element for the element table) and partial charges (e).  A scan pulls one X–H bond of a template's
GFN2-xTB-optimised structure from 0.8× to 3× its length and compares the model's energy profile with GFN2-xTB's
(both relative to the optimised structure).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ._io import atomic_path, writable_dir
from .data.dataset import ConformerSet
from .data.spice import LabelKeys
from ._io import file_sha256
from .deploy import load_model, torch_dtype
from .errors import ConfigError
from .markdown import markdown_table
from .metrics import error_metrics, residual_sums, residuals
from .train.batching import collate, model_inputs


def _summary(rows: List[dict]) -> dict:
    """The conformers and their errors (:func:`~openmlip.metrics.error_metrics`) over per-conformer residual rows
    (``e`` eV/atom, ``f`` [n,3] eV/Å, ``q`` [n] e or None)."""
    res = {"energy": np.array([r["e"] for r in rows], dtype=float),
           "forces": np.concatenate([r["f"].ravel() for r in rows]) if rows else np.zeros(0)}
    q = [r["q"] for r in rows if r["q"] is not None]
    if q:
        res["charges"] = np.concatenate(q)
    return {"conformers": len(rows), **error_metrics(residual_sums(res))}


def error_tables(model_path, data_paths: Sequence, keys: LabelKeys, molecules: Optional[Sequence[str]] = None,
                 batch_size: int = 16) -> Dict[str, object]:
    """Errors of a model file on the conformers of ``molecules`` (all by default) of ``data_paths``: overall, per
    molecule, per element (force and charge errors of that element's atoms; energy per atom of conformers
    containing it) and per total charge."""
    model, meta = load_model(model_path)
    dtype = torch_dtype(meta["dtype"])
    data = ConformerSet([Path(p) for p in data_paths], keys, progress=False)
    names = [g.header.name for g in data.groups]
    wanted = list(dict.fromkeys(molecules or names))
    missing = sorted(set(wanted) - set(names))
    if missing:
        raise ConfigError(f"molecule(s) {', '.join(missing)} are not in {', '.join(map(str, data_paths))}; "
                          f"choose from {', '.join(sorted(set(names)))}")
    rows = []
    for g in [k for k, n in enumerate(names) if n in wanted]:
        idx = data.conformers_of([g])
        for start in range(0, len(idx), batch_size):
            structs = [data[int(i)] for i in idx[start:start + batch_size]]
            batch = collate(structs, dtype)
            r = residuals(model(model_inputs(batch), True), batch)
            cut = np.cumsum([0] + [len(s.numbers) for s in structs])
            for k, s in enumerate(structs):
                a, b = cut[k], cut[k + 1]
                rows.append({"name": s.name, "charge": int(round(s.total_charge)), "z": np.asarray(s.numbers),
                             "e": float(r["energy"][k].detach()), "f": r["forces"][a:b].detach().double().numpy(),
                             "q": r["charges"][a:b].detach().double().numpy() if "charges" in r else None})
    data.close()
    from ase.data import chemical_symbols

    by_element = {}
    for z in sorted({int(v) for r in rows for v in r["z"]}):
        having = [r for r in rows if z in r["z"]]
        only = [{"e": r["e"], "f": r["f"][r["z"] == z], "q": None if r["q"] is None else r["q"][r["z"] == z]}
                for r in having]
        by_element[chemical_symbols[z]] = _summary(only)
    return {"model": Path(model_path).name, "model_sha256": file_sha256(model_path),
            "data": [Path(p).name for p in data_paths], "label_keys": vars(keys),
            "all": _summary(rows),
            "molecules": {n: _summary([r for r in rows if r["name"] == n]) for n in wanted},
            "elements": by_element,
            "total_charge": {f"{q:+d}": _summary([r for r in rows if r["charge"] == q])
                             for q in sorted({r["charge"] for r in rows})}}


def tables_markdown(t: Dict[str, object]) -> str:
    """The error tables as Markdown."""
    def block(title: str, rows: Dict[str, dict]) -> List[str]:
        return ["", *markdown_table(
            [title, "conformers", "energy MAE (meV/atom)", "force MAE (meV/Å)", "force RMSE (meV/Å)", "charge MAE (e)"],
            [(name, s["conformers"], f"{s['energy_mae_meV_per_atom']:.1f}", f"{s['forces_mae_meV_per_A']:.1f}",
              f"{s['forces_rmse_meV_per_A']:.1f}", f"{s['charges_mae_e']:.3f}" if "charges_mae_e" in s else "–")
             for name, s in rows.items()], align="lrrrrr")]

    lines = [f"Errors of `{t['model']}` against {', '.join(t['data'])} (labels {t['label_keys']['energy']}); per element: "
             "forces and charges of that element's atoms, energy per atom of the conformers containing it."]
    lines += block("all", {"all": t["all"]}) + block("molecule", t["molecules"]) + block("element", t["elements"])
    lines += block("total charge", t["total_charge"])
    return "\n".join(lines) + "\n"


def dissociation_curve(model_path, template: str, element: str, factors=np.linspace(0.8, 3.0, 23)) -> Dict[str, object]:
    """Energy (eV, relative to the optimised structure) of the model and of GFN2-xTB along one X–H bond of
    ``template`` with X = ``element``, scaled by ``factors`` (other atoms fixed at the xTB-optimised structure);
    ``r0_A`` is that bond in GFN2-xTB's optimised structure, ``r_model_opt_A`` in the model's (optimised from it)."""
    from ase import Atoms
    from ase.data import atomic_numbers
    from ase.optimize import BFGS

    from .ase import Calculator
    from .data.geometry import build_template
    from .data.templates import TEMPLATES
    from .data.xtb import xtb_calculator

    if template not in TEMPLATES:
        raise ConfigError(f"--scan {template}:{element}: unknown template; choose from {', '.join(sorted(TEMPLATES))}")
    if atomic_numbers.get(element, 1) == 1:
        raise ConfigError(f"--scan {template}:{element} is not TEMPLATE:ELEMENT; give the heavy atom of the X-H bond, "
                          "e.g. methanol:O")
    t = TEMPLATES[template]
    z, pos = build_template(t)
    atoms = Atoms(numbers=z, positions=pos, info={"charge": t.charge, "spin": t.multiplicity})
    atoms.calc = xtb_calculator(t)
    BFGS(atoms, logfile=None).run(fmax=0.01, steps=300)
    ref_pos = atoms.positions.copy()
    target = atomic_numbers.get(element)
    bond = next(((i, j) for i in range(len(z)) if z[i] == target for j in range(len(z))
                 if z[j] == 1 and np.linalg.norm(ref_pos[i] - ref_pos[j]) < 1.45), None)
    if bond is None:
        raise ConfigError(f"--scan {template}:{element}: {template} has no {element}–H bond")
    i, j = bond
    r0 = float(np.linalg.norm(ref_pos[j] - ref_pos[i]))
    model = Calculator(model_path)
    relaxed = Atoms(numbers=z, positions=ref_pos, info=dict(atoms.info))  # the model's own minimum, from xTB's
    relaxed.calc = model
    BFGS(relaxed, logfile=None).run(fmax=0.001, steps=500)
    r_model = float(np.linalg.norm(relaxed.positions[j] - relaxed.positions[i]))
    curves = {"model": [], "xtb": []}
    for factor in [1.0, *factors]:
        p = ref_pos.copy()
        p[j] = p[i] + (ref_pos[j] - ref_pos[i]) * factor
        for name, calc in (("model", model), ("xtb", xtb_calculator(t))):
            a = Atoms(numbers=z, positions=p, info=dict(atoms.info))
            a.calc = calc
            curves[name].append(float(a.get_potential_energy()))
    return {"template": template, "bond": f"{element}–H", "model_sha256": file_sha256(model_path),
            "atoms": [int(i), int(j)], "r0_A": r0, "r_model_opt_A": r_model,
            "r_A": [r0 * f for f in factors],
            **{name: [e - c[0] for e in c[1:]] for name, c in curves.items()}}


def plot_dissociation(curves: List[Dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 3.0), squeeze=False)
    for ax, c in zip(axes[0], curves):
        ax.plot(c["r_A"], c["xtb"], "k-", label="GFN2-xTB")
        ax.plot(c["r_A"], c["model"], "o", ms=3, label="model")
        ax.set(title=f"{c['template']} {c['bond']}", xlabel="r (Å)", ylabel="E − E(opt) (eV)")
    axes[0][0].legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def dissociation_markdown(curves: List[Dict[str, object]]) -> str:
    """One row per scan: the bond in GFN2-xTB's and in the model's optimised structure, their energies at the
    stretched end, the largest model − xTB difference near the minimum (≤ 1.5 r0) and over the whole scan, and
    whether the model's curve turns down anywhere past its minimum (a spurious well: xTB's rises or levels off)."""
    rows = []
    for c in curves:
        r, m, x = np.asarray(c["r_A"]), np.asarray(c["model"]), np.asarray(c["xtb"])
        near = r <= 1.5 * c["r0_A"] + 1e-9
        k = int(np.argmin(m))
        falls = np.diff(m[k:]) < -0.05  # eV per scan step: more than noise
        where = f"yes, from {r[k + int(np.argmax(falls))]:.2f} Å" if falls.any() else "no"
        opt = f"{c['r_model_opt_A']:.4f}" if "r_model_opt_A" in c else "–"
        rows.append((f"{c['template']} {c['bond']}", f"{c['r0_A']:.4f}", opt, f"{x[-1]:.2f} / {m[-1]:.2f}",
                     f"{np.max(np.abs(m - x)[near]):.3f}", f"{np.max(np.abs(m - x)):.2f}", where))
    lines = markdown_table(["scan", "r xTB-optimised (Å)", "r model-optimised (Å)", "E(3 r0) xTB / model (eV)",
                            "max abs ΔE ≤ 1.5 r0 (eV)", "max abs ΔE (eV)", "model falls past its minimum"], rows, align="lrrrrrl")
    return "\n".join(lines) + "\n"


def write_evaluation(model_path, data_paths: Sequence, keys: LabelKeys, out, molecules=None,
                     scans: Sequence[str] = ()) -> Dict[str, object]:
    """:func:`error_tables` (and :func:`dissociation_curve` for each ``template:element`` of ``scans``) into ``out``."""
    out = writable_dir(out, "evaluation output")  # before the evaluation, not after it
    tables = error_tables(model_path, data_paths, keys, molecules)
    curves = [dissociation_curve(model_path, *scan.partition(":")[::2]) for scan in scans]
    files = {"errors.json": json.dumps(tables, indent=1), "errors.md": tables_markdown(tables)}
    if curves:
        files["dissociation.json"] = json.dumps(curves, indent=1)
        files["dissociation.md"] = dissociation_markdown(curves)
        tables["dissociation"] = curves
    for name, text in files.items():  # each file whole or not at all; a failed scan writes nothing
        with atomic_path(out / name) as tmp:
            Path(tmp).write_text(text)
    if curves:
        with atomic_path(out / "dissociation.png") as tmp:
            plot_dissociation(curves, Path(tmp))
    return tables
