"""Cost per atom of the default model on water boxes, the TorchForce module exactly as openmm-torch runs it.

    OMP_NUM_THREADS=1 python benchmarks/scaling.py --sizes 648 3000 10125 20577 --rounds 5

Builds each box's System through openmm-ml (``MLPotential('openmlip', modelPath=...)``, the default
Allegro model of ``bench_openmlip.py``), takes the TorchForce's module, freezes it as openmm-torch does and
times energy + forces on the starting positions.  Sizes are measured in interleaved rounds (every size once
per round), so that the VM's slow and fast phases (±30 % here) hit all sizes alike; medians are reported,
with the block evaluation of large structures on (default) and off (``edge_chunk = 0``: one pass, as
before session 7).  1 torch thread.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import openmlip  # noqa: E402,F401
import bench_openmlip  # noqa: E402
from harness import benchmark_system  # noqa: E402


def frozen_module(system_name: str, chunked: bool):
    import openmm
    import openmmtorch
    from openmmml import MLPotential

    name, path = bench_openmlip.model_file("allegro")
    built = benchmark_system(system_name, lambda top, mm, atoms: MLPotential(name, modelPath=path).createSystem(top, charge=0))
    force = next(openmmtorch.TorchForce.cast(f) for f in built["system"].getForces() if f.getName() == "TorchForce")
    module = force.getModule()
    if not chunked:
        module.potential.model.edge_chunk = 0
    box = np.array([v.value_in_unit(openmm.unit.nanometer) for v in built["system"].getDefaultPeriodicBoxVectors()])
    return torch.jit.freeze(module.eval()), torch.tensor(built["positions"], dtype=torch.float64), torch.tensor(box)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[648, 3000, 10125, 20577])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-baseline", action="store_true", help="skip the one-pass (edge_chunk = 0) column")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    variants = [True] if args.no_baseline else [True, False]
    cases = {(n, c): frozen_module(f"water-{n}", c) for n in args.sizes for c in variants}
    for module, pos, box in cases.values():
        module(pos, box)  # warm-up (profiling executor)
    times = {k: [] for k in cases}
    for _ in range(args.rounds):
        for k, (module, pos, box) in cases.items():
            t0 = time.perf_counter()
            module(pos, box)
            times[k].append(time.perf_counter() - t0)
    med = {k: 1e6 * statistics.median(v) / k[0] for k, v in times.items()}
    print(f"\nµs per atom (energy + forces, frozen TorchForce module, 1 thread, median of {args.rounds} interleaved rounds)\n")
    print("| water atoms | " + " | ".join(f"{n:,}" for n in args.sizes) + f" | {args.sizes[-1]:,} ÷ {args.sizes[0]:,} |")
    print("| --- |" + " --- |" * (len(args.sizes) + 1))
    for c in variants:
        row = [med[(n, c)] for n in args.sizes]
        label = "blocks of 12,288 edges (default)" if c else "one pass (edge_chunk = 0)"
        print(f"| {label} | " + " | ".join(f"{v:.0f}" for v in row) + f" | {row[-1] / row[0]:.2f} |")


if __name__ == "__main__":
    main()
