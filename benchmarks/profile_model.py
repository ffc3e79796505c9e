"""Where the time goes: torch.profiler on openmlip's default model (what one OpenMM step runs).

    python benchmarks/profile_model.py --system water-648 --threads 1

Scripted OpenMMPotential with in-graph forces (the TorchForce default), float32; prints the top ops by
self CPU time and the neighbour-list share.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import openmlip  # noqa: E402,F401
from harness import WATER_SIDES, benchmark_system, water_box  # noqa: E402
from openmlip.models import build_model  # noqa: E402
from openmlip.openmm import OpenMMPotential  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--system", default="water-648")
    ap.add_argument("--arch", default="allegro")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.system.startswith("water-"):
        top, pos, L = water_box(WATER_SIDES[int(args.system.split("-")[1])])
        box = torch.eye(3) * L
    else:
        built = benchmark_system(args.system, lambda t, m, a: __import__("openmm").System())
        top, pos, box = built["topology"], built["positions"], None
    z = [a.element.atomic_number for a in top.atoms()]
    torch.manual_seed(0)
    pot = torch.jit.script(OpenMMPotential(build_model(architecture=args.arch), z, periodic=box is not None,
                                           dtype=torch.float32, output_forces=True))
    x = torch.tensor(np.asarray(pos), dtype=torch.float32)
    for _ in range(3):
        pot(x, box)
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        pot(x, box)
    ms = 1000 * (time.perf_counter() - t0) / args.repeats
    nl = pot.ml_inputs
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        nl(x, box)
    ms_nl = 1000 * (time.perf_counter() - t0) / args.repeats
    print(f"{args.system} ({len(z)} atoms), {args.arch}, {args.threads} thread(s): {ms:.1f} ms per energy+forces call, "
          f"of which inputs/neighbour list {ms_nl:.1f} ms ({100 * ms_nl / ms:.0f} %)")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        pot(x, box)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
