"""The seed's experiment: how pair energies are aggregated into atoms (sum / max / smoothmax /
charge-gated) and what that does to the N–H bond of NH4+.

    python benchmarks/ammonium_aggregation.py --epochs 30 --threads 1        # all stages, resumable
    python benchmarks/ammonium_aggregation.py --report-only                 # table + plot from results

Stages (each writes its result under ``--work`` and is skipped when already there, so a killed run
continues where it stopped):

1. data: the NH4+/water/amine part of the shipped dataset (GFN2-xTB), one file; validation molecule
   NH4+(H2O)8, test molecule NH4+(H2O)12 (a bigger solvation shell than any training cluster).
2. train: the same architecture (the shipped default, Allegro-style) with each aggregation, the same
   seed, data, epochs and settings; deploy each.
3. references: the N–H bond of NH4+ at its GFN2-xTB minimum (tblite + ASE BFGS) and its DFT minimum
   (PySCF, ωB97M-V/def2-TZVPP, Td-symmetric scan; SPICE's level is ωB97M-D3(BJ)/def2-TZVPPD).
4. per model: N–H at the BFGS minimum (ASE, fmax 1e-4 eV/Å); N–H averaged over 10 ps of MD of NH4+
   in TIP3P water (ML/MM, the shipped ammonium-water system, mechanical embedding); N–H averaged over
   5 ps of full-ML MD of NH4+(H2O)12 (every atom on the model, vacuum, 300 K Langevin); NVE energy
   drift of that cluster (Verlet, 0.5 fs, 2 ps after 0.5 ps of NVT).
5. report: docs/ammonium.md's table (written between markers) and docs/img/ammonium.png.

Threads: ``--threads`` torch and OpenMM threads per process (reported with every timing).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch  # noqa: F401  (before openmm, always)
import numpy as np

from openmlip.data import XTB_LABELS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT / "datasets" / "openmlip-xtb-v3.h5"
VARIANTS = ("sum", "max", "smoothmax", "charge-gated")
TRAIN = ["water", "water-dimer", "water-tetramer", "water-octamer", "water-16", "water-stretch", "ammonium",
         "ammonium-water1", "ammonium-water2", "ammonium-water4", "ammonium-stretch", "ammonium-water1-stretch",
         "ammonia", "methylammonium", "methylammonium-stretch", "ethylammonium"]
VALID, TEST = ["ammonium-water8"], ["ammonium-water12"]
KEYS = XTB_LABELS.kwargs()
MARK_BEGIN, MARK_END = "<!-- ammonium_aggregation.py: begin -->", "<!-- ammonium_aggregation.py: end -->"


def _json(path: Path, fn):
    """Cached stage: the result of ``fn()`` stored at ``path`` (written atomically)."""
    if path.is_file():
        return json.loads(path.read_text())
    res = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, path)
    return res


# ------------------------------------------------------------------------------------------- data
def make_data(work: Path) -> Path:
    from openmlip.data import read_spice, write_spice
    from openmlip.data.templates import TEMPLATES

    out = work / "data.h5"
    if not out.is_file():
        keep = set(TRAIN + VALID + TEST)
        structs = [s for s in read_spice(DATA, **KEYS) if s.name in keep]
        write_spice(out, structs, smiles={n: TEMPLATES[n].smiles for n in keep}, **KEYS)
    return out


def train(work: Path, variant: str, epochs: int, threads: int) -> Path:
    import yaml

    run = work / variant
    model = run / "model.pt"
    if model.is_file():
        return model
    cfg = {"data": [str(make_data(work))], "output": str(run / "train"), **KEYS,
           "model": {"architecture": "allegro", "aggregation": variant, "elements": ["H", "C", "N", "O"]},
           "valid_molecules": VALID, "test_molecules": TEST, "seed": 0, "batch_size": 8, "max_epochs": epochs,
           "lr": 0.005, "lr_min_factor": 0.02, "grad_clip": 10.0, "ema_decay": 0.99, "energy_weight": 100.0,
           "forces_weight": 10.0, "charges_weight": 1.0, "patience": 10**6, "checkpoint_every": 200, "dtype": "float32",
           "threads": threads, "reference_energies": "least_squares"}
    run.mkdir(parents=True, exist_ok=True)
    (run / "train.yaml").write_text(yaml.safe_dump(cfg))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "openmlip.cli", "train", str(run / "train.yaml"), "--quiet"], check=True)
    wall = time.perf_counter() - t0
    subprocess.run([sys.executable, "-m", "openmlip.cli", "deploy", str(run / "train"), "-o", str(model)], check=True)
    rep = json.loads((run / "train" / "report.json").read_text())
    (run / "train_summary.json").write_text(json.dumps({"wall_s": wall, "threads": threads, "epochs": epochs,
                                                        "test": rep["test"], "valid": rep["valid"]}, indent=1))
    return model


# ------------------------------------------------------------------------------------- references
def _nh(atoms) -> float:
    n = [a.index for a in atoms if a.symbol == "N"][0]
    h = [a.index for a in atoms if a.symbol == "H" and atoms.get_distance(n, a.index) < 1.6]
    return float(np.mean([atoms.get_distance(n, i) for i in h]))


def _nh4(r=1.03):
    from ase import Atoms

    d = r / np.sqrt(3.0)
    return Atoms("NH4", positions=[(0, 0, 0), (d, d, d), (-d, -d, d), (-d, d, -d), (d, -d, -d)])


def xtb_nh() -> dict:
    os.environ["OMP_NUM_THREADS"] = "1"
    from ase.optimize import BFGS
    from tblite.ase import TBLite

    a = _nh4(1.05)
    a.calc = TBLite(method="GFN2-xTB", charge=1, multiplicity=1, verbosity=0)
    BFGS(a, logfile=None).run(fmax=1e-4, steps=200)
    return {"method": "GFN2-xTB (tblite), ASE BFGS fmax 1e-4 eV/Å", "nh_A": _nh(a)}


def dft_nh(xc="wb97m-v", basis="def2-tzvpp") -> dict:
    from pyscf import dft, gto

    rs = np.array([0.995, 1.005, 1.015, 1.025, 1.035, 1.045])
    es = []
    for r in rs:
        a = _nh4(r)
        mol = gto.M(atom=[(s, tuple(p)) for s, p in zip(a.get_chemical_symbols(), a.positions)], unit="Angstrom",
                    basis=basis, charge=1, spin=0, verbose=0)
        mf = dft.RKS(mol)
        mf.xc = xc
        mf.nlc = False  # VV10 dispersion omitted: it leaves an intramolecular N–H length unchanged and costs 10x
        mf.grids.level = 3
        mf.conv_tol = 1e-10
        es.append(mf.kernel())
    c = np.polyfit(rs, es, 4)
    grid = np.linspace(rs[0], rs[-1], 20001)
    r_min = float(grid[np.argmin(np.polyval(c, grid))])
    return {"method": f"PySCF {xc} (no VV10)/{basis}, Td-symmetric scan {rs[0]}-{rs[-1]} Å, quartic fit", "nh_A": r_min,
            "scan_A": rs.tolist(), "scan_hartree": [float(e) for e in es]}


# ---------------------------------------------------------------------------------- model measures
def bfgs_nh(model: Path, formal: bool = True) -> dict:
    from ase.optimize import BFGS

    from openmlip.ase import Calculator

    a = _nh4(1.05)
    a.info["charge"] = 1
    if formal:
        a.arrays["formal_charges"] = np.array([1.0, 0, 0, 0, 0])
    a.calc = Calculator(model)
    BFGS(a, logfile=None).run(fmax=1e-4, steps=500)
    # the dissociation curve of one N–H (others fixed at the minimum), for the plot
    base = a.copy()
    curve = []
    for r in np.linspace(0.8, 3.0, 45):
        b = base.copy()
        b.info["charge"] = 1
        if formal:
            b.arrays["formal_charges"] = np.array([1.0, 0, 0, 0, 0])
        v = b.positions[1] - b.positions[0]
        b.positions[1] = b.positions[0] + v / np.linalg.norm(v) * r
        b.calc = a.calc
        curve.append([float(r), float(b.get_potential_energy())])
    e0 = min(e for _, e in curve)
    return {"nh_A": _nh(a), "fmax_eV_per_A": float(np.abs(a.get_forces()).max()),
            "stretch_curve_eV": [[r, e - e0] for r, e in curve]}


def mlmm_md(model: Path, out: Path, steps: int, threads: int) -> dict:
    from openmlip.md.system import run_system

    res = run_system(ROOT / "systems" / "ammonium-water" / "system.yaml", out, potential=str(model), threads=threads,
                     progress=False, steps=steps + 2000, equilibrate_steps=2000)
    nh = res["analysis"]["results"]["nh"]
    return {"nh_mean_A": nh["mean_A"], "nh_err_A": nh.get("sem_A"), "nh_max_A": nh["max_A"],
            "ms_per_step": res["run"]["ms_per_step"], "steps": res["run"]["steps"], "threads": threads,
            "checks_passed": res["passed"]}


def _cluster_spec(work: Path) -> Path:
    """NH4+(H2O)12 from the last GFN2-xTB MD conformer of the test molecule (never trained on)."""
    from ase import Atoms
    from ase.io import write

    from openmlip.data import read_spice

    spec = work / "cluster" / "system.yaml"
    if spec.is_file():
        return spec
    spec.parent.mkdir(parents=True, exist_ok=True)
    s = [s for s in read_spice(DATA, **KEYS) if s.name == TEST[0]][-1]
    write(spec.parent / "structure.xyz", Atoms(numbers=s.numbers, positions=s.positions))
    spec.write_text("""name: ammonium-water12
description: NH4+(H2O)12 in vacuum, every atom ML (benchmarks/ammonium_aggregation.py)
structure: structure.xyz
ml: {selection: all, potential: openmlip-xtb-v7, embedding: none, charge: 1, formal_charges: [{selection: element N, charge: 1}]}
md: {temperature_K: 300, timestep_fs: 0.5, minimize_iterations: 100, equilibrate_steps: 1000, steps: 21000,
      report_interval: 20, checkpoint_interval: 1000}
analysis:
  bonds: [{name: nh, elements: N-H}, {name: oh, elements: O-H}]
expected:
  - {observable: nh.max_A, range: [0.9, 1.35], note: bound}
""")
    return spec


def cluster_md(model: Path, work: Path, out: Path, steps: int, threads: int) -> dict:
    from openmlip.md.system import run_system

    try:
        res = run_system(_cluster_spec(work), out, potential=str(model), threads=threads, progress=False, steps=steps // 2 + 1000)
    except Exception as exc:  # a blow-up is a result of the experiment, recorded as such
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    r = res["analysis"]["results"]
    return {"nh_mean_A": r["nh"]["mean_A"], "nh_err_A": r["nh"].get("sem_A"), "nh_max_A": r["nh"]["max_A"],
            "oh_mean_A": r["oh"]["mean_A"], "ms_per_step": res["run"]["ms_per_step"], "steps": res["run"]["steps"],
            "threads": threads}


def nve_drift(model: Path, work: Path, threads: int, steps: int = 4000, interval: int = 20) -> dict:
    import openmm as mm
    import openmm.unit as u

    from openmlip.md.build import build_system
    from openmlip.md.spec import load_spec

    torch.set_num_threads(threads)
    built = build_system(load_spec(_cluster_spec(work)), potential=str(model))
    plat = mm.Platform.getPlatformByName("CPU")
    nvt = mm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, 0.5 * u.femtosecond)
    nvt.setRandomNumberSeed(1)
    ctx = mm.Context(built["system"], nvt, plat, {"Threads": str(threads)})
    ctx.setPositions(built["positions"])
    mm.LocalEnergyMinimizer.minimize(ctx, 1.0, 200)
    ctx.setVelocitiesToTemperature(300 * u.kelvin, 1)
    nvt.step(1000)
    state = ctx.getState(getPositions=True, getVelocities=True)
    ver = mm.VerletIntegrator(0.5 * u.femtosecond)
    ctx2 = mm.Context(built["system"], ver, plat, {"Threads": str(threads)})
    ctx2.setPositions(state.getPositions())
    ctx2.setVelocities(state.getVelocities())
    t, e = [], []
    for k in range(steps // interval + 1):
        if k:
            ver.step(interval)
        st = ctx2.getState(getEnergy=True)
        etot = (st.getPotentialEnergy() + st.getKineticEnergy()).value_in_unit(u.kilojoule_per_mole)
        if not np.isfinite(etot):
            return {"error": f"non-finite energy after {k * interval} NVE steps"}
        t.append(k * interval * 0.5e-3)
        e.append(etot)
    n = built["system"].getNumParticles()
    mev = np.array(e) / 96.485 * 1000.0 / n  # kJ/mol -> meV per atom
    slope = np.polyfit(t, mev, 1)[0]
    return {"drift_meV_per_atom_per_ps": float(slope), "fluct_meV_per_atom": float(np.std(mev - np.polyval(np.polyfit(t, mev, 1), t))),
            "ps": float(t[-1]), "timestep_fs": 0.5, "atoms": n, "threads": threads}


# -------------------------------------------------------------------------------------------- report
def report(work: Path, doc: Path, img: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    refs = {k: json.loads((work / f"{k}.json").read_text()) for k in ("xtb", "dft") if (work / f"{k}.json").is_file()}
    rows = []
    for v in VARIANTS:
        d = work / v
        get = lambda name: json.loads((d / name).read_text()) if (d / name).is_file() else {}  # noqa: E731
        rows.append((v, get("train_summary.json"), get("bfgs.json"), get("mlmm.json"), get("cluster.json"), get("nve.json")))

    def f(x, fmt="{:.3f}"):
        return "—" if x is None else fmt.format(x)

    lines = [MARK_BEGIN, "",
             "| aggregation | test force MAE (meV/Å) | test energy MAE (meV/atom) | N–H BFGS (Å) | N–H ML/MM in TIP3P, 10 ps (Å) "
             "| N–H full-ML NH4+(H2O)12, 5 ps (Å) | max N–H full-ML (Å) | NVE drift (meV/atom/ps) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for v, tr, bf, mlmm, cl, nve in rows:
        te = tr.get("test", {})
        cl_mean = f(cl.get("nh_mean_A")) + (f" ± {cl['nh_err_A']:.3f}" if cl.get("nh_err_A") else "") if "error" not in cl else "blew up"
        lines.append(f"| {v} | {f(te.get('forces_mae_meV_per_A'), '{:.0f}')} | {f(te.get('energy_mae_meV_per_atom'), '{:.1f}')} "
                     f"| {f(bf.get('nh_A'))} | {f(mlmm.get('nh_mean_A'))}"
                     + (f" ± {mlmm['nh_err_A']:.3f}" if mlmm.get("nh_err_A") else "")
                     + f" | {cl_mean} | {f(cl.get('nh_max_A'))} | "
                     + ("fails: " + nve["error"] if "error" in nve else f(nve.get("drift_meV_per_atom_per_ps"), "{:+.3f}")) + " |")
    for k, r in refs.items():
        lines.append(f"| reference: {r['method']} | | | {r['nh_A']:.4f} | | | | |")
    abl = work.parent / (work.name + "-noformal")
    if any((abl / v / "bfgs.json").is_file() for v in VARIANTS):
        lines += ["", "Ablation, same data and budget but **without per-atom formal charges** in training and at use "
                  "(the ion's charge spread as Q/N over all atoms, as the data had it before this fix):", "",
                  "| aggregation | test force MAE (meV/Å) | test energy MAE (meV/atom) | N–H BFGS (Å) |", "| --- | --- | --- | --- |"]
        for v in VARIANTS:
            summary = abl / v / "train_summary.json"
            tr = json.loads(summary.read_text()).get("test", {}) if summary.is_file() else {}
            bf = json.loads((abl / v / "bfgs.json").read_text()) if (abl / v / "bfgs.json").is_file() else {}
            lines.append(f"| {v} | {f(tr.get('forces_mae_meV_per_A'), '{:.0f}')} | {f(tr.get('energy_mae_meV_per_atom'), '{:.1f}')} "
                         f"| {f(bf.get('nh_A'))} |")
    tr0 = rows[0][1]
    walls = ", ".join(f"{r[0]} {r[1]['wall_s'] / 60:.1f} min" for r in rows if r[1].get("wall_s"))
    speeds = ", ".join(f"{r[0]} {r[3]['ms_per_step']:.1f} / {r[4].get('ms_per_step', float('nan')):.1f}" for r in rows
                       if r[3].get("ms_per_step"))
    lines += ["", f"Training: {tr0.get('epochs', '?')} epochs each, {tr0.get('threads', '?')} torch thread; wall: {walls}.",
              f"MD speed (ms/step, ML/MM / full-ML cluster; OpenMM CPU, 1 torch + 1 OpenMM thread): {speeds}.",
              "", MARK_END]
    text = doc.read_text() if doc.is_file() else "# NH4+ and the aggregation of pair energies\n\n" + MARK_BEGIN + "\n" + MARK_END + "\n"
    head, _, rest = text.partition(MARK_BEGIN)
    _, _, tail = rest.partition(MARK_END)
    doc.write_text(head + "\n".join(lines) + tail)

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for v, tr, bf, *_ in rows:
        if bf.get("stretch_curve_eV"):
            c = np.array(bf["stretch_curve_eV"])
            ax[0].plot(c[:, 0], c[:, 1], label=v)
    ax[0].set_xlabel("one N–H distance (Å), others at the model's minimum")
    ax[0].set_ylabel("energy (eV)")
    ax[0].set_title("NH4+ N–H stretch")
    ax[0].legend()
    names = [r[0] for r in rows]
    x = np.arange(len(names))
    for k, (key, lab) in enumerate([(2, "BFGS"), (3, "ML/MM in water"), (4, "full-ML NH4+(H2O)12")]):
        vals = [r[key].get("nh_A" if key == 2 else "nh_mean_A", np.nan) if "error" not in r[key] else np.nan for r in rows]
        ax[1].bar(x + (k - 1) * 0.25, vals, 0.25, label=lab)
    for k, r in refs.items():
        ax[1].axhline(r["nh_A"], ls="--", color="k" if k == "xtb" else "r", label=f"{k.upper()} minimum")
    ax[1].set_xticks(x, names)
    ax[1].set_ylim(0.98, 1.12)
    ax[1].set_ylabel("N–H (Å)")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    img.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(img, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(ROOT / "out" / "ammonium"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--md-steps", type=int, default=20000, help="production steps of 0.5 fs (default 20000 = 10 ps)")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--stage", choices=["train", "refs", "measure", "all"], default="all")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--ablation", help="a work folder of models trained without formal charges: measure their BFGS N–H")
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    doc, img = ROOT / "docs" / "ammonium.md", ROOT / "docs" / "img" / "ammonium.png"
    if args.ablation:
        for v in VARIANTS:
            m = Path(args.ablation) / v / "model.pt"
            if m.is_file():
                _json(Path(args.ablation) / v / "bfgs.json", lambda: bfgs_nh(m, formal=False))
    if not args.report_only:
        if args.stage in ("train", "all"):
            for v in args.variants:
                print(f"[train] {v}", flush=True)
                train(work, v, args.epochs, args.threads)
        if args.stage in ("refs", "all"):
            print("[refs] GFN2-xTB", flush=True)
            _json(work / "xtb.json", xtb_nh)
            print("[refs] DFT", flush=True)
            _json(work / "dft.json", dft_nh)
        if args.stage in ("measure", "all"):
            for v in args.variants:
                model = work / v / "model.pt"
                print(f"[measure] {v}", flush=True)
                _json(work / v / "bfgs.json", lambda: bfgs_nh(model))
                _json(work / v / "nve.json", lambda: nve_drift(model, work, args.threads))
                _json(work / v / "mlmm.json", lambda: mlmm_md(model, work / v / "mlmm", args.md_steps, args.threads))
                _json(work / v / "cluster.json", lambda: cluster_md(model, work, work / v / "cluster", args.md_steps, args.threads))
                report(work, doc, img)
    report(work, doc, img)
    print(f"wrote {doc} and {img}")


if __name__ == "__main__":
    main()
