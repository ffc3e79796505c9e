"""The vertical slice as a runnable job: model file -> TorchForce -> OpenMM MD of NH4+(H2O)4.

The model is the shipped potential (``plugins/openmlip-xtb-v3``, found through its entry point) when
it is installed; ``model="random"`` builds a randomly initialised default model instead (wiring only).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

import openmm
import openmm.app as app
import openmm.unit as u

from . import DEFAULT_POTENTIAL, units
from .deploy import load_model, save_model
from .models import build_model
from .openmm import OpenMMPotential, create_force
from .openmm.registry import resolve_potential

DEFAULT_STRUCTURE = Path(__file__).resolve().parent.parent / "systems" / "ammonium-cluster" / "structure.xyz"


def _model_file(model: str, out: Path, seed: int) -> Path:
    """A model file: a shipped potential by name, a path, or 'random' (written to ``out``)."""
    if model == "random":
        torch.manual_seed(seed)
        path = out / "model.pt"
        save_model(build_model(), path, provenance={"training": "none: randomly initialised (wiring demo)", "seed": seed})
        return path
    return resolve_potential(model)


def run_demo(out: Path, steps: int = 200, threads: int = 1, seed: int = 0, structure: Path = DEFAULT_STRUCTURE,
             charge: float = 1.0, progress: bool = True, model: str = DEFAULT_POTENTIAL) -> dict:
    from ase.io import read
    from mdtraj.reporters import HDF5Reporter
    from tqdm.auto import tqdm

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not Path(structure).is_file():
        raise FileNotFoundError(f"structure file {structure} not found")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    atoms = read(str(structure))
    z = atoms.numbers.tolist()
    model_path = _model_file(model, out, seed)
    module, meta = load_model(model_path)
    from .md.system import xyz_topology
    from .openmm.mlpotential import infer_formal_charges

    topology = xyz_topology(atoms)  # covalent bonds place the ion's charge on its atom (+1 on N of NH4+)
    formal = infer_formal_charges(topology, list(range(len(z))), charge)
    pot = OpenMMPotential(module, z, total_charge=charge, formal_charges=formal, dtype=torch.float32, cutoff=meta["cutoff"])
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    system.addForce(create_force(pot, "torchforce"))
    integrator = openmm.LangevinMiddleIntegrator(300 * u.kelvin, 1.0 / u.picosecond, 0.5 * u.femtosecond)
    platform = openmm.Platform.getPlatformByName("CPU")
    sim = app.Simulation(topology, system, integrator, platform, {"Threads": str(threads)})
    pos_nm = atoms.positions * units.ANGSTROM_TO_NM
    sim.context.setPositions(pos_nm)
    sim.context.setVelocitiesToTemperature(300 * u.kelvin, seed)

    # OpenMM's energy must equal the model's own
    e_openmm = sim.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    inputs = {"pos": torch.tensor(atoms.positions, dtype=torch.float32), "atomic_numbers": torch.tensor(z),
              "total_charge": torch.tensor([charge])}
    if formal is not None:
        inputs["formal_charges"] = torch.tensor(formal, dtype=torch.float32)
    own = module(inputs, False)
    e_model = float(own["energy"].detach().sum()) * units.EV_TO_KJ_PER_MOL

    traj_path, csv_path = out / "trajectory.h5", out / "energies.csv"
    for p in (traj_path, csv_path):
        if p.exists():
            p.unlink()  # the demo always starts fresh
    interval = max(1, steps // 20)
    sim.reporters.append(HDF5Reporter(str(traj_path), interval))
    sim.reporters.append(app.StateDataReporter(str(csv_path), interval, step=True, time=True, potentialEnergy=True,
                                               kineticEnergy=True, totalEnergy=True, temperature=True))
    t0 = time.perf_counter()
    chunk = max(1, steps // 50)
    with tqdm(total=steps, desc="MD", unit="step", disable=not progress) as bar:
        done = 0
        while done < steps:
            n = min(chunk, steps - done)
            sim.step(n)
            done += n
            bar.update(n)
    elapsed = time.perf_counter() - t0
    for r in sim.reporters:
        if hasattr(r, "close"):
            r.close()
    final = sim.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    summary = {
        "structure": str(structure),
        "atoms": len(z),
        "total_charge": charge,
        "model": str(model_path),
        "model_note": _describe(meta),
        "platform": "CPU",
        "threads": {"torch": threads, "openmm": threads},
        "steps": steps,
        "timestep_fs": 0.5,
        "ms_per_step": 1000.0 * elapsed / steps,
        "energy_openmm_kJmol": e_openmm,
        "energy_model_kJmol": e_model,
        "energy_rel_diff": abs(e_openmm - e_model) / max(abs(e_model), 1e-12),
        "final_energy_kJmol": final,
        "final_energy_finite": bool(np.isfinite(final)),
        "outputs": {"model": str(model_path), "trajectory": str(traj_path), "energies": str(csv_path)},
    }
    summary["nh_bond_A"] = _nh_bonds(traj_path)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


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
