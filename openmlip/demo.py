"""``openmlip demo``: a short MD of NH4+(H2O)4 (``systems/ammonium-cluster``) with a TorchForce, through the
same path as every other run (:func:`openmlip.md.system.run_md`, :class:`openmlip.md.MDRunner`), plus the one
check a newcomer wants first: OpenMM's energy equals the model's own.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

import openmm
import openmm.unit as u

from . import DEFAULT_POTENTIAL, keys as K, units
from .deploy import load_model, save_model
from .models import build_model
from .openmm.registry import resolve_potential

DEMO_SYSTEM = Path(__file__).resolve().parent.parent / "systems" / "ammonium-cluster"


def _model_file(model: str, out: Path, seed: int) -> Path:
    """A model file: a shipped potential by name, a path, or 'random' (written to ``out``)."""
    if model == "random":
        torch.manual_seed(seed)
        path = out / "model.pt"
        save_model(build_model(), path, provenance={"training": "none: randomly initialised (wiring demo)", "seed": seed})
        return path
    return resolve_potential(model)


def energy_check(built: dict, model_path: Path) -> dict:
    """OpenMM's potential energy of a whole-ML system (``build_system``'s result) vs the model file evaluated
    in Python on the same positions, total charge and formal charges (kJ/mol)."""
    context = openmm.Context(built["system"], openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(built["positions"])
    e_openmm = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    module, _ = load_model(model_path)
    pos = np.asarray(built["positions"].value_in_unit(u.nanometer)) * units.NM_TO_ANGSTROM
    inputs = {K.POSITIONS: torch.tensor(pos, dtype=torch.float32),
              K.ATOMIC_NUMBERS: torch.tensor([a.element.atomic_number for a in built["topology"].atoms()]),
              K.TOTAL_CHARGE: torch.tensor([float(built["ml_charge"] or 0.0)])}
    if built["ml_formal_charges"] is not None:
        inputs[K.FORMAL_CHARGES] = torch.tensor(built["ml_formal_charges"], dtype=torch.float32)
    e_model = float(module(inputs, False)[K.ENERGY].detach().sum()) * units.EV_TO_KJ_PER_MOL
    return {"energy_openmm_kJmol": e_openmm, "energy_model_kJmol": e_model,
            "energy_rel_diff": abs(e_openmm - e_model) / max(abs(e_model), 1e-12)}


def run_demo(out: Path, steps: int = 200, threads: int = 1, seed: int = 0, progress: bool = True,
             model: str = DEFAULT_POTENTIAL) -> dict:
    """Run the demo into ``out`` (always afresh) and write ``summary.json``."""
    from .md.build import build_system
    from .md.spec import load_spec
    from .md.system import run_md

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = load_spec(DEMO_SYSTEM)
    model_path = _model_file(model, out, seed)
    check = energy_check(build_system(spec, str(model_path)), model_path)
    md_dir = out / "md"
    shutil.rmtree(md_dir, ignore_errors=True)  # the demo always starts fresh (openmlip md resumes; this does not)
    interval = max(1, steps // 20)
    info = run_md(spec, md_dir, potential=str(model_path), platform="CPU", threads=threads, progress=progress,
                  steps=steps, equilibrate_steps=0, minimize_iterations=0, report_interval=interval,
                  checkpoint_interval=max(interval, steps), seed=seed)
    final = _final_energy(Path(info["state"]))
    summary = {
        "system": str(spec.path), "atoms": info["atoms"], "total_charge": float(spec.ml.charge),
        "model": str(model_path), "model_note": _describe(load_model(model_path)[1]), "platform": info["platform"],
        "threads": info["threads"], "steps": info["steps"], "timestep_fs": info["md"]["timestep_fs"],
        "ms_per_step": info["ms_per_step"], **check, "final_energy_kJmol": final,
        "final_energy_finite": bool(np.isfinite(final)),
        "outputs": {"model": str(model_path), "trajectory": info["trajectory"], "state": info["state"],
                    "run": str(md_dir / "run.json")},
    }
    summary["nh_bond_A"] = _nh_bonds(Path(info["trajectory"]))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _final_energy(state_csv: Path) -> float:
    """The last potential energy (kJ/mol) the runner's state file recorded."""
    import csv

    with open(state_csv) as fh:
        rows = list(csv.DictReader(fh))
    key = next(k for k in rows[-1] if k.lower().startswith("potential"))
    return float(rows[-1][key])


def _describe(meta: dict) -> str:
    prov = meta.get("provenance", {})
    if "training" in prov and isinstance(prov["training"], str):
        return prov["training"]
    test = meta.get("metrics", {}).get("test", {})
    if test:
        return (f"trained potential; test set: force MAE {test['forces_mae_meV_per_A']:.0f} meV/Å, "
                f"energy MAE {test['energy_mae_meV_per_atom']:.1f} meV/atom")
    return "model without recorded metrics"


def _nh_bonds(traj_path: Path) -> dict:
    """Mean and spread of the four N–H distances of NH4+ over the trajectory (atoms 0..4)."""
    import mdtraj

    traj = mdtraj.load(str(traj_path))
    d = mdtraj.compute_distances(traj, [[0, k] for k in range(1, 5)]) * units.NM_TO_ANGSTROM
    return {"mean": float(d.mean()), "std": float(d.std()), "frames": int(traj.n_frames)}
