"""Accuracy on the same data with the same wall-clock budget: openmlip vs MACE (MACE-OFF23-small architecture).

    bash benchmarks/peers/setup.sh mace
    python benchmarks/accuracy.py --budget-min 15 --threads 1     # both trainings run at once, 1 core each
    python benchmarks/accuracy.py --openmlip-run out/train-openmlip-xtb-v3   # MACE only, with the budget
                                                                  # (wall time) of the shipped training run

1. The shipped dataset (datasets/openmlip-xtb-v3.h5) is split by molecule exactly as
   ``openmlip train`` splits it (the shipped config's named validation and test molecules) and exported to extxyz (energy/forces in eV,
   eV/Å; ASE key conventions; total charge in ``info``).
2. openmlip trains with the shipped config's settings, MACE with its own ``mace_run_train`` (hidden
   96x0e, max_L 0, correlation 3, r_max 4.5, E0s from the training set average), both stopped by the
   same wall-clock budget: openmlip's ``max_epochs`` and MACE's ``max_num_epochs`` are set from one
   timed epoch each, so each finishes its cosine/plateau schedule inside the budget.
3. Both models are evaluated on the test split: energy MAE (meV/atom), force MAE/RMSE (meV/Å), and for
   openmlip the charge MAE (e); the table goes to docs/benchmarks_accuracy.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MACE = HERE / "peers" / ".venv-mace" / "bin"
DATA = ROOT / "datasets" / "openmlip-xtb-v3.h5"
SHIPPED_CFG = ROOT / "datasets" / "train-openmlip-xtb-v3.yaml"


def export(work: Path):
    import yaml
    from ase import Atoms
    from ase.io import write

    from openmlip.data import read_spice
    from openmlip.train import split_by_molecule

    cfg = yaml.safe_load(SHIPPED_CFG.read_text())
    structs = list(read_spice(DATA, energy_key=cfg["energy_key"], gradient_key=cfg["gradient_key"], charges_key=cfg["charges_key"]))
    parts = split_by_molecule(structs, cfg.get("valid_fraction", 0.1), cfg.get("test_fraction", 0.1), cfg["seed"],
                              cfg.get("valid_molecules"), cfg.get("test_molecules"))
    for name, part in zip(("train", "valid", "test"), parts):
        frames = []
        for s in part:
            a = Atoms(numbers=s.numbers, positions=s.positions)
            a.info.update({"REF_energy": s.energy, "total_charge": s.total_charge, "molecule": s.name})
            a.arrays["REF_forces"] = s.forces
            frames.append(a)
        write(work / f"{name}.xyz", frames, format="extxyz")
    return [len(p) for p in parts], sorted({s.name for s in parts[2]})


def _mace_args(work: Path, epochs: int, threads: int):
    return [str(MACE / "mace_run_train"), "--name", "mace_small", "--train_file", str(work / "train.xyz"),
            "--valid_file", str(work / "valid.xyz"), "--test_file", str(work / "test.xyz"), "--E0s", "average",
            "--model", "MACE", "--hidden_irreps", "96x0e", "--max_L", "0", "--correlation", "3", "--r_max", "4.5",
            "--num_interactions", "2", "--batch_size", "8", "--max_num_epochs", str(epochs), "--energy_key", "REF_energy",
            "--forces_key", "REF_forces", "--device", "cpu", "--default_dtype", "float32", "--seed", "0",
            "--num_workers", "0", "--eval_interval", "1", "--restart_latest"]


def _openmlip_cfg(work: Path, epochs: int, threads: int, out: str) -> Path:
    import yaml

    cfg = yaml.safe_load(SHIPPED_CFG.read_text())
    cfg.update(data=[str(DATA)], output=str(work / out), max_epochs=epochs, threads=threads, patience=10**6)
    path = work / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env(threads):
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")


def time_one_epoch(work: Path, threads: int):
    t0 = time.perf_counter()
    subprocess.run(_mace_args(work / "probe_mace", 1, threads), cwd=work / "probe_mace", env=_env(threads), check=True,
                   capture_output=True)
    t_mace = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "openmlip.cli", "train", str(_openmlip_cfg(work, 1, threads, "probe_openmlip")),
                    "--quiet"], env=_env(threads), check=True, capture_output=True)
    t_oml = time.perf_counter() - t0
    return t_mace, t_oml


def mace_test_errors(work: Path, threads: int):
    from ase.io import read

    from openmlip.metrics import error_metrics, residual_sums

    model = next((work / "mace").glob("mace_small*.model"))
    out = work / "mace_test_pred.xyz"
    subprocess.run([str(MACE / "mace_eval_configs"), "--configs", str(work / "test.xyz"), "--model", str(model),
                    "--output", str(out), "--device", "cpu", "--default_dtype", "float32"], env=_env(threads), check=True,
                   capture_output=True)
    ref = read(work / "test.xyz", ":")
    pred = read(out, ":")
    de = np.array([(p.info["MACE_energy"] - r.info["REF_energy"]) / len(r) for p, r in zip(pred, ref)])
    df = np.concatenate([(p.arrays["MACE_forces"] - r.arrays["REF_forces"]).ravel() for p, r in zip(pred, ref)])
    return {**error_metrics(residual_sums({"energy": de, "forces": df})), "parameters": None}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-min", type=float, default=15.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default=str(ROOT / "out" / "bench-accuracy"))
    ap.add_argument("--report", default=str(ROOT / "docs" / "benchmarks_accuracy.md"))
    ap.add_argument("--openmlip-run", help="a finished `openmlip train` run of the shipped config: reuse its report and "
                    "wall time (the budget MACE gets) instead of training openmlip here")
    args = ap.parse_args(argv)
    if not (MACE / "mace_run_train").exists():
        sys.exit("MACE venv missing: bash benchmarks/peers/setup.sh mace")
    work = Path(args.work)
    (work / "mace").mkdir(parents=True, exist_ok=True)
    (work / "probe_mace").mkdir(parents=True, exist_ok=True)
    sizes, test_mols = export(work)
    for d in ("mace", "probe_mace"):
        for f in ("train", "valid", "test"):
            if not (work / d / f"{f}.xyz").exists():
                os.symlink(work / f"{f}.xyz", work / d / f"{f}.xyz")
    if args.openmlip_run:
        run = Path(args.openmlip_run)
        if not (run / "report.json").is_file():
            sys.exit(f"{run / 'report.json'} not found: --openmlip-run needs a finished `openmlip train` run folder")
        rep = json.loads((run / "report.json").read_text())
        budget = rep["wall_s_this_run"]
        t0 = time.perf_counter()
        subprocess.run(_mace_args(work / "probe_mace", 1, args.threads), cwd=work / "probe_mace", env=_env(args.threads),
                       check=True, capture_output=True)
        t_mace = time.perf_counter() - t0
        e_mace, e_oml = max(1, int(budget / t_mace)), rep["epochs"]
        print(f"openmlip run {run}: {budget / 60:.1f} min, {e_oml} epochs; one MACE epoch incl. start-up {t_mace:.0f} s "
              f"-> {e_mace} epochs", flush=True)
        t0 = time.perf_counter()
        pm = subprocess.run(_mace_args(work, e_mace, args.threads), cwd=work / "mace", env=_env(args.threads),
                            stdout=open(work / "mace.log", "w"), stderr=subprocess.STDOUT)
        if pm.returncode != 0:
            sys.exit(f"mace training failed: see {work / 'mace.log'}")
        times = {"mace": time.perf_counter() - t0, "openmlip": budget}
        args.budget_min = budget / 60
    else:
        t_mace, t_oml = time_one_epoch(work, args.threads)
        budget = 60 * args.budget_min
        e_mace = max(1, int(budget / t_mace))
        e_oml = max(1, int(budget / t_oml))
        print(f"one epoch incl. start-up: MACE {t_mace:.0f} s, openmlip {t_oml:.0f} s -> epochs MACE {e_mace}, "
              f"openmlip {e_oml}", flush=True)
        t0 = time.perf_counter()
        pm = subprocess.Popen(_mace_args(work, e_mace, args.threads), cwd=work / "mace", env=_env(args.threads),
                              stdout=open(work / "mace.log", "w"), stderr=subprocess.STDOUT)
        po = subprocess.Popen([sys.executable, "-m", "openmlip.cli", "train", str(_openmlip_cfg(work, e_oml, args.threads, "openmlip")),
                               "--quiet"], env=_env(args.threads), stdout=open(work / "openmlip.log", "w"), stderr=subprocess.STDOUT)
        times = {}
        while len(times) < 2:
            for name, p in (("mace", pm), ("openmlip", po)):
                if name not in times and p.poll() is not None:
                    times[name] = time.perf_counter() - t0
                    if p.returncode != 0:
                        sys.exit(f"{name} training failed: see {work / (name + '.log')}")
            time.sleep(2)
        rep = json.loads((work / "openmlip" / "report.json").read_text())
    label = "openmlip (shipped config: Allegro-style, sum)" if args.openmlip_run else "openmlip (Allegro-style, shipped config)"
    rows = {label: {**rep["test"], "epochs": e_oml, "wall_s": times["openmlip"]},
            "MACE (MACE-OFF23-small architecture)": {**mace_test_errors(work, args.threads), "epochs": e_mace, "wall_s": times["mace"]}}
    how = (f"openmlip: the shipped training run ({args.openmlip_run}); MACE trained afterwards with {args.threads} thread for as "
           "many epochs as one timed epoch (incl. start-up and its final evaluation) said fit in that wall time"
           if args.openmlip_run else f"run concurrently with {args.threads} thread each")
    lines = ["<!-- written by benchmarks/accuracy.py -->", "",
             f"Budget {args.budget_min:.1f} min each on the same machine ({how}); "
             f"split by molecule (train/valid/test {sizes[0]}/{sizes[1]}/{sizes[2]} conformers; test molecules: "
             f"{', '.join(test_mols)}).", "",
             "| model | epochs | wall (min) | energy MAE (meV/atom) | force MAE (meV/Å) | force RMSE (meV/Å) | charge MAE (e) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        q = f"{r['charges_mae_e']:.4f}" if "charges_mae_e" in r else "– (no charges)"
        lines.append(f"| {name} | {r['epochs']} | {r['wall_s'] / 60:.1f} | {r['energy_mae_meV_per_atom']:.2f} | "
                     f"{r['forces_mae_meV_per_A']:.1f} | {r['forces_rmse_meV_per_A']:.1f} | {q} |")
    Path(args.report).write_text("\n".join(lines) + "\n")
    (work / "accuracy.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
