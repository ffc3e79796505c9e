"""Forward + backward time of openmlip's architectures at their default size (CPU, float32).

Prints a Markdown table (and JSON lines with --json).  Thread counts are set explicitly and
reported: on a 2-core machine thread settings swing timings by orders of magnitude.

    python benchmarks/model_speed.py --threads 1
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402  (torch before openmm)

import openmlip  # noqa: E402,F401
from openmlip.models import build_model  # noqa: E402
from openmlip.openmm import OpenMMPotential  # noqa: E402
from systems import alanine_dipeptide_vacuum, water_box  # noqa: E402


def median_ms(fn, warmup, repeats):
    """Median wall time of ``fn()`` in ms over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(ts)


def measure(arch, z, pos, box, warmup, repeats, dtype=torch.float32, overrides=None):
    torch.manual_seed(0)
    model = build_model(architecture=arch, dtype=dtype, **(overrides or {}))
    pot = OpenMMPotential(model, z.tolist(), periodic=box is not None, dtype=dtype)
    scripted = torch.jit.script(pot)
    positions = torch.tensor(pos / 10.0, dtype=dtype)
    boxv = torch.tensor(box / 10.0, dtype=dtype) if box is not None else None

    def step():  # what openmm-torch does each MD step: energy, then dE/dx by autograd
        p = positions.clone().requires_grad_(True)
        e, _ = scripted(p, boxv)
        torch.autograd.grad(e, p)

    ms = median_ms(step, warmup, repeats)
    # neighbour list alone (in-graph, same settings)
    nl = torch.jit.script(pot).ml_inputs
    ms_nl = median_ms(lambda: nl(positions, boxv), warmup, repeats)
    with torch.no_grad():
        data, _ = pot.ml_inputs(positions, boxv)
    edges = int(data["edge_index"].shape[1])  # the static list's capacity for regions up to BRUTE_FORCE_MAX_ATOMS
    return {"arch": arch, "atoms": len(z), "edges": edges, "ms_step": ms, "ms_neighbour_list": ms_nl,
            "cell_list": pot.use_cell_list, "dtype": str(dtype).replace("torch.", "")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--sizes", default="22,648,5184", help="atom counts: 22 = alanine dipeptide, others water boxes")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    systems = []
    for n in [int(s) for s in args.sizes.split(",")]:
        if n == 22:
            z, pos = alanine_dipeptide_vacuum()
            systems.append(("alanine dipeptide (vacuum)", z, pos, None))
        else:
            side = round((n / 3) ** (1 / 3))
            z, pos, box = water_box(side)
            systems.append((f"water box ({side**3} H2O)", z, pos, box))
    rows = []
    for name, z, pos, box in systems:
        for arch in ("allegro", "nequip"):
            r = measure(arch, z, pos, box, args.warmup if len(z) < 3000 else 2, args.repeats if len(z) < 3000 else 5)
            r["system"] = name
            r["threads"] = args.threads
            rows.append(r)
            if args.json:
                print(json.dumps(r), flush=True)
    print(f"\nCPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} torch thread(s), float32, default configurations, median of {args.repeats} (5 for > 3,000 atoms)\n")
    print("| system | atoms | edges | architecture | forward+backward ms | of which neighbour list ms | µs/atom |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['system']} | {r['atoms']} | {r['edges']} | {r['arch']} | {r['ms_step']:.2f} | {r['ms_neighbour_list']:.2f} | "
              f"{1000 * r['ms_step'] / r['atoms']:.1f} |")
    return rows


if __name__ == "__main__":
    main()
