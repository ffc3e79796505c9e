"""Model size vs accuracy vs speed: held-out force MAE against ms per MD-step evaluation at 22 and 375 atoms.

    python benchmarks/model_sizes.py --config datasets/train-openmlip-xtb-v4.yaml --epochs 20
    python benchmarks/model_sizes.py ... --sizes "small:num_channels=4,latent_dim=16" "default:" \\
        "large:num_channels=16,latent_dim=64" "large-es:num_channels=16,latent_dim=64,electrostatics=true"

Each size trains with the config's data, split and settings (only ``model`` overridden and ``max_epochs`` set,
patience off) into ``out/model-sizes/NAME`` with ``openmlip train`` (resumable: rerunning the command continues
unfinished trainings and skips finished ones), is deployed, and is then measured:

* accuracy: ``openmlip.evaluate.error_tables`` on the config's test molecules (energy meV/atom, force meV/Å);
* speed: what openmm-torch does per MD step for alanine dipeptide in vacuum (22 atoms, the shipped Amber file;
  overhead-bound) and for 125 waters in a periodic box (375 atoms, about the full-ML specs; compute-bound):
  energy then forces by autograd of the deployed TorchScript model inside ``OpenMMPotential``, float32, median
  of --repeats (375 atoms: a fifth of them) after --warmup, ``--threads`` torch threads (stated in the table).

The table goes to stdout, JSON lines to ``benchmarks/results/model-sizes.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402  (torch before openmm)

import openmlip  # noqa: E402,F401
from model_speed import median_ms  # noqa: E402
from systems import alanine_dipeptide_vacuum, water_box  # noqa: E402

DEFAULT_SIZES = ["small:num_channels=4,latent_dim=16", "default:", "large:num_channels=16,latent_dim=64"]


def parse_size(text: str):
    name, _, spec = text.partition(":")
    overrides = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        value = value.strip()
        if value.lower() in ("true", "false"):
            overrides[key.strip()] = value.lower() == "true"
        else:
            overrides[key.strip()] = int(value) if value.lstrip("-").isdigit() else float(value)
    return name, overrides


def size_config(base: Path, name: str, overrides: dict, epochs: int, threads: int, out_root: Path) -> Path:
    import yaml

    cfg = yaml.safe_load(base.read_text())
    cfg["data"] = [str((base.parent / d).resolve()) for d in cfg["data"]]
    cfg["model"] = {**cfg["model"], **overrides}
    cfg.update(output=str(out_root / name), max_epochs=epochs, threads=threads, patience=10**6)
    out_root.mkdir(parents=True, exist_ok=True)
    path = out_root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def ms_per_step(model_file: Path, threads: int, warmup: int, repeats: int, system: str = "ala2") -> float:
    """What openmm-torch does per MD step with the deployed model: energy, then forces by autograd (float32).

    ``system``: ``ala2`` (alanine dipeptide in vacuum, 22 atoms: overhead-bound) or ``water375`` (125 waters in a
    periodic box, 375 atoms, about the size of the shipped full-ML specs: compute-bound)."""
    if system not in ("ala2", "water375"):
        raise ValueError(f"unknown speed system {system!r}; choose ala2 or water375")
    from openmlip.deploy import load_model
    from openmlip.openmm import OpenMMPotential

    torch.set_num_threads(threads)
    model, meta = load_model(model_file)
    if system == "ala2":
        z, pos = alanine_dipeptide_vacuum()
        box = None
    else:
        z, pos, box = water_box(5)
    pot = torch.jit.script(OpenMMPotential(model, z.tolist(), periodic=box is not None, dtype=torch.float32))
    positions = torch.tensor(pos / 10.0, dtype=torch.float32)
    boxv = torch.tensor(box / 10.0, dtype=torch.float32) if box is not None else None

    def step():
        p = positions.clone().requires_grad_(True)
        torch.autograd.grad(pot(p, boxv)[0], p)

    return median_ms(step, warmup, repeats)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "datasets" / "train-openmlip-xtb-v4.yaml")
    ap.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, help="NAME:key=value,... model overrides")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "model-sizes")
    ap.add_argument("--results", type=Path, default=HERE / "results" / "model-sizes.jsonl")
    args = ap.parse_args(argv)
    from openmlip.data.spice import LabelKeys
    from openmlip.evaluate import error_tables
    from openmlip.train.config import TrainConfig
    from openmlip.train.trainer import deploy_run

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    rows = []
    for text in args.sizes:
        name, overrides = parse_size(text)
        cfg_path = size_config(args.config, name, overrides, args.epochs, args.threads, args.out)
        run = args.out / name
        t0 = time.time()
        if not (run / "report.json").exists():
            subprocess.run([sys.executable, "-m", "openmlip.cli", "train", str(cfg_path), "--quiet"], env=env, check=True)
        report = json.loads((run / "report.json").read_text())
        model_file = args.out / f"{name}.pt"
        deploy_run(run, model_file)
        cfg = TrainConfig.from_yaml(cfg_path)
        keys = LabelKeys(cfg.energy_key, cfg.gradient_key, cfg.charges_key)
        tables = error_tables(model_file, cfg.data, keys, cfg.test_molecules)
        errors = tables["all"]
        params = sum(p.numel() for p in torch.jit.load(str(model_file)).parameters())
        row = {"size": name, "overrides": overrides, "parameters": params, "epochs": report["epochs"],
               "train_wall_s": report.get("wall_s_this_run"), "wall_s_this_invocation": time.time() - t0,
               "test": errors, "test_molecules": tables["molecules"],
               "ms_per_step_22_atoms": ms_per_step(model_file, args.threads, args.warmup, args.repeats),
               "ms_per_step_375_atoms": ms_per_step(model_file, args.threads, args.warmup, max(1, args.repeats // 5), "water375"),
               "threads": args.threads, "data": [Path(d).name for d in cfg.data],
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
        rows.append(row)
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with args.results.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
    print(f"\n{rows[0]['machine']}; torch {torch.__version__}; {args.threads} torch thread(s), OMP_NUM_THREADS="
          f"{args.threads}; {args.epochs} epochs each; speed: alanine dipeptide (22 atoms, median of {args.repeats}) and "
          f"125 waters in a periodic box (375 atoms, median of {max(1, args.repeats // 5)}), energy + autograd forces, float32\n")
    print("| size | overrides | parameters | test force MAE (meV/Å) | test energy MAE (meV/atom) | ms/step (22 atoms) "
          "| ms/step (375 atoms) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['size']} | {r['overrides'] or 'config'} | {r['parameters']:,} | {r['test']['forces_mae_meV_per_A']:.1f} | "
              f"{r['test']['energy_mae_meV_per_atom']:.1f} | {r['ms_per_step_22_atoms']:.2f} | {r['ms_per_step_375_atoms']:.1f} |")
    return rows


if __name__ == "__main__":
    main()
