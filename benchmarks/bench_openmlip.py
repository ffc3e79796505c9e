"""Time an openmlip model in OpenMM (openmlip's venv): one ``BENCH {json}`` line.

    python benchmarks/bench_openmlip.py --model allegro --system ala2-vacuum --backend torchforce --threads 1

Models: ``allegro`` / ``nequip`` at the default size (openmlip.models.ModelConfig), ``allegro-small`` /
``nequip-small`` (latent 16, 4 channels, 1 layer), randomly initialised; an installed
potential's name (``openmlip-xtb-v7``, the shipped default) its trained file. Through ``MLPotential`` exactly as a
user would (openmm-ml entry point), float32.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402  (before openmm)

import openmlip  # noqa: E402,F401
from harness import benchmark_system, emit, machine, time_md  # noqa: E402

SIZES = {"small": dict(latent_dim=16, num_channels=4, num_layers=1, radial_mlp=[16])}


def model_file(name: str) -> tuple:
    from openmlip.deploy import save_model
    from openmlip.models import build_model

    if name.startswith("openmlip-"):
        return name, None
    if name.startswith("imported:"):  # a foreign framework's deployment file, through `openmlip import`
        from openmlip.imports import import_model

        path = Path(tempfile.mkdtemp()) / "imported.pt"
        import_model(name.split(":", 1)[1], path)
        return "openmlip", str(path)
    arch, _, size = name.partition("-")
    torch.manual_seed(0)
    path = Path(tempfile.mkdtemp()) / "model.pt"
    model = build_model(architecture=arch, **SIZES.get(size, {}))
    with torch.no_grad():  # random weights: keep forces physical-sized so that MD stays finite (speed is unaffected)
        model.per_species_scale.fill_(0.05)
    save_model(model, path, provenance={"training": "none (benchmark)"})
    return "openmlip", str(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--system", required=True)
    ap.add_argument("--backend", default="torchforce", choices=["torchforce", "pythonforce"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--openmm-threads", type=int, default=None, help="OpenMM CPU threads (default: --threads)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--budget", type=float, default=None, help="seconds: measure fewer steps (>= 3) for slow models")
    ap.add_argument("--output-forces", type=int, default=1, help="TorchForce computes forces in-graph (default 1)")
    ap.add_argument("--embedding", default="mechanical", choices=["mechanical", "electrostatic"],
                    help="ML/MM systems: createMixedSystem's embedding")
    ap.add_argument("--long-range", default="split", choices=["split", "pme"],
                    help="electrostatic embedding: embeddingLongRange")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from openmmml import MLPotential

    if args.model == "mm":
        built = benchmark_system(args.system)
    else:
        name, path = model_file(args.model)
        pot = MLPotential(name, modelPath=path) if path else MLPotential(name)
        kw = dict(backend=args.backend, precision="single")  # the charge from the bonds (0; +1 for NH4+)
        mixed = dict(embedding=args.embedding)
        if args.embedding == "electrostatic":
            mixed["embeddingLongRange"] = args.long_range
        elif args.backend == "torchforce":  # the electrostatic embedding's forces come from autograd
            kw["outputForces"] = bool(args.output_forces)

        def add_ml(top, mm, atoms):
            return pot.createSystem(top, **kw) if mm is None else pot.createMixedSystem(top, mm, atoms, **kw, **mixed)

        built = benchmark_system(args.system, add_ml)
    res = time_md(built, warmup=args.warmup, steps=args.steps, threads=args.threads, budget_s=args.budget,
                  openmm_threads=args.openmm_threads)
    emit({"model": "pure MM" if args.model == "mm" else f"openmlip {args.model}" if not args.model.startswith("imported:")
          else f"openmlip import of {Path(args.model.split(':', 1)[1]).name}",
          "route": "MM" if args.model == "mm" else args.backend, "system": args.system,
          "embedding": None if args.model == "mm" else args.embedding if args.embedding == "mechanical"
          else f"electrostatic ({args.long_range})", "atoms": built["atoms"],
          "threads": {"torch": args.threads, "openmm": args.openmm_threads or args.threads}, **res, "machine": machine()})


if __name__ == "__main__":
    main()
