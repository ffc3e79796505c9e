"""MD inside OpenMM: ms/step per backend and force mode, and NVE energy drift of a full-ML system.

    python benchmarks/openmm_md.py [--threads 1] [--steps 200] [--nve-steps 4000]

Prints Markdown tables (thread counts included).  The model is the default configuration,
randomly initialised (seed 0): timings do not depend on the weights; the drift measures how well
the integrator conserves the model's own energy (smoothness, precision), not chemistry.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import numpy as np  # noqa: E402
import openmm  # noqa: E402
import openmm.unit as u  # noqa: E402

import openmlip  # noqa: E402,F401
from openmlip.models import build_model  # noqa: E402
from openmlip.openmm import OpenMMPotential, create_force  # noqa: E402
from systems import alanine_dipeptide_vacuum  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _system(z, pot, backend):
    from ase.data import atomic_masses

    system = openmm.System()
    for zi in z:
        system.addParticle(float(atomic_masses[zi]))
    system.addForce(create_force(pot, backend))
    return system


def speed(threads, steps):
    z, pos = alanine_dipeptide_vacuum()
    torch.manual_seed(0)
    model = build_model()
    rows = []
    for backend in ("torchforce", "pythonforce"):
        for output_forces in (False, True):
            pot = OpenMMPotential(model, z.tolist(), output_forces=output_forces)
            system = _system(z, pot, backend)
            integ = openmm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, 0.5 * u.femtosecond)
            ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName("CPU"), {"Threads": str(threads)})
            ctx.setPositions(pos / 10.0)
            integ.step(20)
            t0 = time.perf_counter()
            integ.step(steps)
            ms = 1000 * (time.perf_counter() - t0) / steps
            rows.append((backend, output_forces, ms))
    print(f"\nAlanine dipeptide in vacuum (22 atoms, all ML), default model, float32, CPU platform, "
          f"{threads} OpenMM + {threads} torch thread(s), 0.5 fs Langevin, 20 warm-up + {steps} measured steps\n")
    print("| backend | setOutputsForces | ms/step |\n| --- | --- | ---: |")
    for b, o, ms in rows:
        print(f"| {b} | {o} | {ms:.2f} |")


def nve(nsteps, dt_fs):
    from ase.io import read

    atoms = read(str(ROOT / "systems" / "ammonium-cluster" / "structure.xyz"))
    torch.manual_seed(0)
    model = build_model(dtype=torch.float64)
    pot = OpenMMPotential(model, atoms.numbers.tolist(), total_charge=1.0, dtype=torch.float64)
    system = _system(atoms.numbers, pot, "torchforce")
    integ = openmm.VerletIntegrator(dt_fs * u.femtosecond)
    ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(atoms.positions / 10.0)
    openmm.LocalEnergyMinimizer.minimize(ctx, 1.0, 200)
    ctx.setVelocitiesToTemperature(100 * u.kelvin, 1)
    totals = []
    for _ in range(nsteps // 10):
        integ.step(10)
        st = ctx.getState(getEnergy=True)
        totals.append((st.getPotentialEnergy() + st.getKineticEnergy()).value_in_unit(u.kilojoule_per_mole))
    totals = np.array(totals)
    t_ps = np.arange(len(totals)) * 10 * dt_fs / 1000.0
    slope = np.polyfit(t_ps, totals, 1)[0]
    ke = ctx.getState(getEnergy=True).getKineticEnergy().value_in_unit(u.kilojoule_per_mole)
    print(f"\nNVE, NH4+(H2O)4 (17 atoms, all ML, total charge +1), default model in float64, Reference platform, "
          f"Verlet {dt_fs} fs, {nsteps} steps ({nsteps * dt_fs / 1000:.2f} ps) after minimisation, 100 K start\n")
    print("| quantity | value |\n| --- | ---: |")
    print(f"| total-energy drift (linear fit) | {slope:.3e} kJ/mol/ps |")
    print(f"| total-energy RMS fluctuation | {totals.std():.3e} kJ/mol |")
    print(f"| max |E_tot − E_tot(0)| | {np.abs(totals - totals[0]).max():.3e} kJ/mol |")
    print(f"| final kinetic energy | {ke:.2f} kJ/mol |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--nve-steps", type=int, default=4000)
    ap.add_argument("--dt", type=float, default=0.25)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    speed(a.threads, a.steps)
    nve(a.nve_steps, a.dt)
