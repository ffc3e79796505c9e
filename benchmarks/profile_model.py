"""Where the time goes: torch.profiler on openmlip's default model (what one OpenMM step runs).

    python benchmarks/profile_model.py --system water-648 --threads 1

Scripted and frozen OpenMMPotential (as openmm-torch runs it), float32 model, float64 positions in nm;
prints energy+forces, energy alone without autograd, and the inputs/neighbour-list step (interleaved
repeats, medians), then the top ops by self CPU time of one energy+forces call.
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
    ap.add_argument("--repeats", type=int, default=20)
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
    model = build_model(architecture=args.arch)

    def frozen(output_forces):
        # what openmm-torch runs: its kernels call torch::jit::freeze on the module at initialisation
        mod = OpenMMPotential(model, z, periodic=box is not None, dtype=torch.float32, output_forces=output_forces)
        return torch.jit.script(mod), torch.jit.freeze(torch.jit.script(mod).eval())

    scripted, pot = frozen(True)
    _, pot_e = frozen(False)
    x = torch.tensor(np.asarray(pos), dtype=torch.float64)  # OpenMM hands over float64 nm
    box64 = None if box is None else box.to(torch.float64)

    def forces():
        return pot(x.clone().requires_grad_(True), box64)

    def energy_only():
        with torch.no_grad():
            return pot_e(x, box64)

    def inputs():
        return scripted.ml_inputs(x, box64)

    cases = {"energy + forces (autograd)": forces, "energy only, no autograd": energy_only,
             "inputs + neighbour list": inputs}
    times = {k: [] for k in cases}
    for f in cases.values():
        for _ in range(3):
            f()
    for _ in range(args.repeats):  # interleaved, so drifts of the machine hit every case alike
        for k, f in cases.items():
            t0 = time.perf_counter()
            f()
            times[k].append(1000 * (time.perf_counter() - t0))
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"{args.system} ({len(z)} atoms), {args.arch}, {args.threads} thread(s), frozen TorchScript as in "
          f"openmm-torch, median of {args.repeats}:")
    for k, v in med.items():
        print(f"  {k:30s} {v:9.2f} ms  ({100 * v / med['energy + forces (autograd)']:.0f} %)")
    print(f"  {'backward + autograd overhead':30s} {med['energy + forces (autograd)'] - med['energy only, no autograd']:9.2f} ms")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        forces()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
