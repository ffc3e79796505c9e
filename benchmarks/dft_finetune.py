"""xTB-only vs DFT-tuned on held-out DFT labels (issue #19, point 2): one table from one run.

Input: the DFT-relabelled subset of the v3 data (``openmlip data relabel``, ωB97M-D3BJ/def2-TZVPPD) and the
fine-tuning config ``datasets/finetune-openmlip-xtb-v3-dft.yaml`` (held out: its test molecules).
On the held-out conformers this reports, against the DFT labels:

* ``GFN2-xTB`` — the teacher itself (its labels for the same conformers, taken from the v3 data file);
* ``BASE (xTB-only)`` — the xTB-trained potential (``--base``, default the shipped openmlip-xtb-v7; the recorded
  results/dft-finetune.json and -v4.json used v3 and v4, which are no longer installed: their cards are in
  docs/cards/), forces only (its energies are on the xTB scale);
* ``BASE, shifts refitted`` — BASE with only its per-element energy shifts refitted on the DFT training molecules
  (the fine-tuning run's step 0: ``lr`` 1e-12, one epoch), so its energies can be compared;
* ``BASE fine-tuned on DFT`` — the config's run with ``init_model: BASE``.

    OMP_NUM_THREADS=1 python benchmarks/dft_finetune.py --out benchmarks/results/dft-finetune.json
    OMP_NUM_THREADS=1 python benchmarks/dft_finetune.py --base openmlip-xtb-v4 --out benchmarks/results/dft-finetune-v4.json

Training runs resume when rerun (their folders are under ``out/``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIG = ROOT / "datasets/finetune-openmlip-xtb-v3-dft.yaml"


def xtb_errors(dft_file: Path, xtb_file: Path, molecules) -> dict:
    """GFN2-xTB's force errors against DFT on the same conformers (matched by their coordinates), per molecule."""
    from openmlip.data import DFT_LABELS, XTB_LABELS, read_spice
    from openmlip.metrics import error_metrics, residual_sums

    xtb = {(s.name, np.round(s.positions, 6).tobytes()): s for s in read_spice(xtb_file, **XTB_LABELS.kwargs())
           if s.name in molecules}
    diffs = {m: [] for m in molecules}
    for s in read_spice(dft_file, **DFT_LABELS.kwargs()):
        if s.name in molecules:
            diffs[s.name].append((xtb[(s.name, np.round(s.positions, 6).tobytes())].forces - s.forces).ravel())
    out = {}
    for m, d in diffs.items():
        out[m] = {"conformers": len(d), **error_metrics(residual_sums({"forces": np.concatenate(d)})),
                  "energy_mae_meV_per_atom": None}
    return out


def config_for(base: Path, tag: str, shifts_only: bool = False):
    """The fine-tuning config with ``init_model: base`` (a file), its run folder named after ``tag``; ``shifts_only``:
    one epoch at lr 1e-12, so only the per-element energy shifts (refitted by least squares at the start) change."""
    import yaml

    from openmlip.train import TrainConfig

    raw = yaml.safe_load(CONFIG.read_text())
    raw["data"] = [str((CONFIG.parent / d).resolve()) for d in raw["data"]]
    raw["init_model"] = str(base)
    run = f"finetune-{tag}-dft" + ("-shifts-only" if shifts_only else "")
    raw["output"] = str((CONFIG.parent / raw["output"]).parent.resolve() / run)
    if shifts_only:
        raw.update(lr=1e-12, max_epochs=1)
    path = Path(raw["output"] + ".yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return TrainConfig.from_yaml(path)


def trained_elements(cfg) -> set:
    from openmlip.data import DFT_LABELS, read_spice

    held = set(cfg.test_molecules) | set(cfg.valid_molecules or ())
    return {int(z) for s in read_spice(cfg.data[0], **DFT_LABELS.kwargs()) if s.name not in held for z in s.numbers}


def train(cfg, out_model: Path) -> float:
    from openmlip.train import Trainer, deploy_run

    t0 = time.process_time()
    Trainer(cfg, progress=False).run()
    deploy_run(cfg.output, out_model)
    return time.process_time() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/results/dft-finetune.json")
    p.add_argument("--base", default="openmlip-xtb-v7", help="xTB-trained potential to fine-tune: installed name or file")
    a = p.parse_args(argv)

    import torch

    from openmlip.data import DFT_LABELS
    from openmlip.deploy import file_sha256
    from openmlip.evaluate import error_tables
    from openmlip.openmm.registry import resolve_potential

    torch.set_num_threads(1)
    base = resolve_potential(a.base)
    tag = Path(a.base).stem if base == Path(a.base) else a.base  # a file: its stem; else the potential's name
    label = tag.replace("openmlip-xtb-", "")
    cfg = config_for(base, tag)
    dft_file = Path(cfg.data[0])
    held_out = list(cfg.test_molecules)
    out_dir = Path(cfg.output).parent
    rows = {"GFN2-xTB": xtb_errors(dft_file, ROOT / "datasets/openmlip-xtb-v3.h5", held_out)}
    rows[f"{label} (xTB-only)"] = error_tables(base, [dft_file], DFT_LABELS, held_out)["molecules"]
    aligned = config_for(base, tag, shifts_only=True)
    cost = {"shifts refitted": train(aligned, out_dir / f"{tag}-dft-shifts-only.pt")}
    rows[f"{label}, shifts refitted"] = error_tables(out_dir / f"{tag}-dft-shifts-only.pt", [dft_file], DFT_LABELS,
                                                     held_out)["molecules"]
    cost["fine-tuned"] = train(cfg, out_dir / f"finetune-{tag}-dft.pt")
    rows[f"{label} fine-tuned on DFT"] = error_tables(out_dir / f"finetune-{tag}-dft.pt", [dft_file], DFT_LABELS,
                                                      held_out)["molecules"]
    # energies only where they mean something: the xTB-scale model has no DFT energy scale, and a molecule with an
    # element that no DFT training molecule has keeps an unfitted reference energy (the trainer warns)
    from openmlip.data import read_spice

    seen = trained_elements(cfg)
    covered = {s.name for s in read_spice(dft_file, **DFT_LABELS.kwargs()) if set(map(int, s.numbers)) <= seen}
    for name, per in rows.items():
        for m, r in per.items():
            if name in ("GFN2-xTB", f"{label} (xTB-only)") or m not in covered:
                r["energy_mae_meV_per_atom"] = None
    result = {"base": tag, "base_sha256": file_sha256(base), "held_out": held_out,
              "labels": "wB97M-D3BJ/def2-TZVPPD (PySCF, density fitting)", "rows": rows,
              "train_cpu_seconds": cost, "threads": {"torch": 1, "OMP": os.environ.get("OMP_NUM_THREADS")},
              "train_conformers": "DFT subset less the held-out and validation molecules"}
    print(f"held out: {', '.join(held_out)}; against DFT labels (energy: — where not comparable)")
    print("| model | molecule | conformers | energy MAE (meV/atom) | force MAE (meV/Å) | force RMSE (meV/Å) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, per in rows.items():
        for m, r in per.items():
            e = r.get("energy_mae_meV_per_atom")
            print(f"| {name} | {m} | {r['conformers']} | {'—' if e is None else f'{e:.1f}'} | "
                  f"{r['forces_mae_meV_per_A']:.0f} | {r['forces_rmse_meV_per_A']:.0f} |")
    print(f"training CPU time (1 thread): {', '.join(f'{k} {v:.0f} s' for k, v in cost.items())}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
