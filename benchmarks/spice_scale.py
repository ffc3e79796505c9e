"""Training memory and throughput at SPICE scale (issue #17): a synthetic file in SPICE's layout, then
`openmlip train` for one epoch on it, peak RSS and conformers per second.

    python benchmarks/spice_scale.py --conformers 20000 200000 --out /tmp/spice-scale

writes ``spice-<N>.h5`` (molecules of 5-60 atoms of H C N O F S Cl, ~50 conformers each, charges -1/0/+1 in
the SMILES, labels in SPICE's units: bohr, hartree, hartree/bohr, MBIS-like charges), trains the shipped
model (or a small one) for one epoch on each (1 torch thread, OMP_NUM_THREADS=1, loader in the training process) and
prints a table: file size, index pass, peak RSS of the training process, conformers/s and the share of each
step spent reading and collating data (the trainer's own clock, ``report.json``).  The labels are random
but shaped like real ones, so the training is meaningless and the timing real.
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

ELEMENTS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9, "S": 16, "Cl": 17}
HARTREE_PER_ATOM = {1: -0.5, 6: -37.8, 7: -54.6, 8: -75.0, 9: -99.7, 16: -398.1, 17: -460.1}


def grow_molecule(rng, n: int) -> np.ndarray:
    """n positions (Å) grown like a branched molecule: each atom 1.1-1.6 Å from a random earlier one and no
    closer than 1.0 Å to any (a 30-atom one has ~17 neighbours within 4.5 Å per atom, as drug-like molecules do)."""
    pos = [np.zeros(3)]
    while len(pos) < n:
        d = rng.normal(size=3)
        cand = pos[int(rng.integers(len(pos)))] + d / np.linalg.norm(d) * rng.uniform(1.1, 1.6)
        if np.min(np.linalg.norm(np.array(pos) - cand, axis=1)) >= 1.0:
            pos.append(cand)
    return np.array(pos)


def write_synthetic(path: Path, conformers: int, per_molecule: int = 50, seed: int = 0) -> None:
    """A SPICE-layout HDF5 file with ``conformers`` conformers, written group by group (bounded memory)."""
    import h5py

    rng = np.random.default_rng(seed)
    heavy = np.array([6, 6, 6, 7, 8, 9, 16, 17])
    tmp = path.with_suffix(".tmp.h5")
    with h5py.File(tmp, "w") as fh:
        done, g = 0, 0
        while done < conformers:
            m = min(per_molecule, conformers - done)
            n = int(rng.integers(5, 61))
            n_heavy = max(1, int(round(n * rng.uniform(0.35, 0.55))))
            z = np.concatenate([rng.choice(heavy, n_heavy), np.ones(n - n_heavy, dtype=np.int64)]).astype(np.int16)
            charge = int(rng.choice([-1, 0, 0, 0, 1]))
            smiles = {-1: "CC(=O)[O-]", 0: "CCO", 1: "C[NH3+]"}[charge]  # the reader takes the charge from the SMILES
            base = grow_molecule(rng, n)
            conf = (base[None] + rng.normal(scale=0.1, size=(m, n, 3))) / 0.529177  # bohr
            e0 = sum(HARTREE_PER_ATOM[int(a)] for a in z)
            grp = fh.create_group(f"mol{g:07d}")
            grp.create_dataset("atomic_numbers", data=z)
            grp.create_dataset("smiles", data=np.array([smiles], dtype=h5py.string_dtype()))
            grp.create_dataset("subset", data=np.array(["synthetic"], dtype=h5py.string_dtype()))
            grp.create_dataset("conformations", data=conf.astype(np.float32))
            grp.create_dataset("dft_total_energy", data=e0 + rng.normal(scale=0.02, size=m))
            grp.create_dataset("dft_total_gradient", data=rng.normal(scale=0.02, size=(m, n, 3)).astype(np.float32))
            q = rng.normal(scale=0.2, size=(m, n, 1))
            q += (charge - q.sum(axis=1, keepdims=True)) / n
            grp.create_dataset("mbis_charges", data=q.astype(np.float32))
            done += m
            g += 1
    os.replace(tmp, path)


MODELS = {"shipped": {},  # the default (shipped) model size
          "small": {"num_layers": 1, "latent_dim": 16, "num_channels": 4, "radial_mlp": [16]}}


def train_one_epoch(data: Path, out: Path, batch_size: int, model: str) -> dict:
    """`openmlip train` for one epoch in a child process: its report (with its peak RSS) and the wall time."""
    import yaml

    cfg = {"data": [str(data)], "output": str(out), "max_epochs": 1, "batch_size": batch_size, "threads": 1,
           "valid_fraction": 0.01, "test_fraction": 0.0, "checkpoint_every": 100000,
           "model": {"elements": list(ELEMENTS), "charges": True, **MODELS[model]}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "openmlip"), "train", str(out / "train.yaml"), "--quiet"],
                   check=True, env=env)
    wall = time.perf_counter() - t0
    report = json.loads((out / "report.json").read_text())
    report["wall_s"] = wall
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conformers", type=int, nargs="+", default=[20000, 200000])
    ap.add_argument("--out", type=Path, default=Path("/tmp/openmlip-spice-scale"))
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--model", choices=sorted(MODELS), default="small",
                    help="model size: small (1 layer; the data path's share is largest) or shipped")
    ap.add_argument("--record", type=Path, help="append the rows as JSON lines to this file")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in sorted(args.conformers):
        data = args.out / f"spice-{n}.h5"
        if not data.exists():
            t0 = time.perf_counter()
            write_synthetic(data, n)
            print(f"wrote {data} ({data.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s", flush=True)
        for index in data.parent.glob(data.name + ".openmlip-index.json"):
            index.unlink()  # measure the index pass too
        rep = train_one_epoch(data, args.out / f"train-{n}-{args.model}", args.batch_size, args.model)
        tp = rep["throughput"]
        rows.append({"conformers": n, "file_MB": data.stat().st_size / 1e6, "train_conformers": rep["split"]["train"],
                     "steps": rep["steps"], "wall_s": rep["wall_s"], "peak_rss_MB": rep["throughput"]["peak_rss_MB_process0"],
                     "conformers_per_s": tp["conformers_per_s"], "data_loading_fraction": tp["data_loading_fraction"],
                     "threads": 1, "OMP_NUM_THREADS": 1, "batch_size": args.batch_size, "model": args.model,
                     "device": rep["device"]})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| conformers | file (MB) | steps | wall (s) | peak RSS (MB) | conformers/s | data loading / step |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['conformers']:,} | {r['file_MB']:.0f} | {r['steps']:,} | {r['wall_s']:.0f} | {r['peak_rss_MB']:.0f} | "
              f"{r['conformers_per_s']:.1f} | {100 * r['data_loading_fraction']:.1f} % |")
    if args.record:
        with open(args.record, "a") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
