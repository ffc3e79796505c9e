"""Shared benchmark harness: the benchmark systems and the MD timing loop.

Imports only torch, numpy and OpenMM, so the peer environments (benchmarks/peers/.venv-*) use the same
code as openmlip's own venv: the same structures, integrator, platform and thread settings for all.

Systems (OpenMM CPU platform, LangevinMiddle 0.5 fs, 300 K):

- ``ala2-vacuum``: alanine dipeptide, 22 atoms, all ML;
- ``water-<n>``: a box of n_side³ waters at 1 g/cm³, all ML, periodic (``water-648`` is n_side 6);
- ``ala2-mlmm``: alanine dipeptide (22 ML atoms) in 749 TIP3P waters (2,269 atoms), Amber ff96 +
  PME for the rest (0.9 nm, X-H constraints), openmm-ml's mechanical embedding unless the caller embeds otherwise;
- ``ammonium-water``: ``systems/ammonium-water``, NH4+ (5 ML atoms, +1) with Cl- in 338 rigid TIP3P waters
  (1,020 atoms, 2.2 nm box), PME 0.9 nm;
- ``*-mm``: the same system with the pure MM force field (the limit).
"""
from __future__ import annotations

import json
import os
import platform as _platform
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np

import torch  # noqa: F401  (before openmm: openmm-torch's plugins need torch's libraries)
import openmm
import openmm.app as app
import openmm.unit as u

ROOT = Path(__file__).resolve().parent.parent
WATER_SIDES = {192: 4, 648: 6, 1536: 8, 3000: 10, 5184: 12, 10125: 15, 20577: 19}


def water_box(n_side: int, seed: int = 0):
    """n_side³ rigid-geometry waters on a jittered lattice, random orientations, 1.0 g/cm³.

    Returns (OpenMM Topology with HOH residues and bonds, positions nm [N,3], box edge nm).
    """
    rng = np.random.default_rng(seed)
    n = n_side**3
    L = (n * 18.01528 / 0.60221408) ** (1.0 / 3.0) / 10.0  # nm at 1 g/cm³
    a = L / n_side
    geom = np.array([[0.0, 0.0, 0.0], [0.09572, 0.0, 0.0], [-0.02400, 0.09266, 0.0]])
    top = app.Topology()
    chain = top.addChain()
    pos = []
    for i in range(n_side):
        for j in range(n_side):
            for k in range(n_side):
                q = rng.normal(size=4)
                q /= np.linalg.norm(q)
                w, x, y, zq = q
                R = np.array([[1 - 2 * (y * y + zq * zq), 2 * (x * y - zq * w), 2 * (x * zq + y * w)],
                              [2 * (x * y + zq * w), 1 - 2 * (x * x + zq * zq), 2 * (y * zq - x * w)],
                              [2 * (x * zq - y * w), 2 * (y * zq + x * w), 1 - 2 * (x * x + y * y)]])
                o = (np.array([i, j, k]) + 0.5) * a + rng.normal(scale=0.01, size=3)
                pos += list(o + geom @ R.T)
                res = top.addResidue("HOH", chain)
                ox = top.addAtom("O", app.Element.getBySymbol("O"), res)
                for h in ("H1", "H2"):
                    top.addBond(ox, top.addAtom(h, app.Element.getBySymbol("H"), res))
    top.setPeriodicBoxVectors([openmm.Vec3(L, 0, 0), openmm.Vec3(0, L, 0), openmm.Vec3(0, 0, L)] * u.nanometer)
    return top, np.array(pos), L


def _amber(kind: str):
    base = ROOT / "systems" / "alanine-dipeptide" / kind / "alanine-dipeptide"
    prm = app.AmberPrmtopFile(str(base) + ".prmtop")
    crd = app.AmberInpcrdFile(str(base) + ".crd")
    if crd.boxVectors is not None:
        prm.topology.setPeriodicBoxVectors(crd.boxVectors)
    return prm, crd


def benchmark_system(name: str, add_ml: Optional[Callable] = None) -> Dict[str, object]:
    """Build a benchmark system.

    ``add_ml(topology, mm_system_or_None, ml_atoms)`` returns the System with the ML part: for all-ML
    systems it gets ``None`` and must create the System; for ``ala2-mlmm`` it gets the MM System and the
    22 peptide atoms (mechanical embedding).  Without ``add_ml``, the pure MM System is returned.
    """
    if name == "ala2-vacuum":
        prm, crd = _amber("vacuum")
        top, pos = prm.topology, crd.getPositions(asNumpy=True).value_in_unit(u.nanometer)
        mm = prm.createSystem(nonbondedMethod=app.NoCutoff, constraints=None)
        system = add_ml(top, None, list(range(top.getNumAtoms()))) if add_ml else mm
        box = None
    elif name.startswith("water-"):
        n_atoms = int(name.split("-")[1])
        if n_atoms not in WATER_SIDES:
            raise ValueError(f"water box sizes: {sorted(WATER_SIDES)}")
        top, pos, L = water_box(WATER_SIDES[n_atoms])
        ff = app.ForceField("amber14/tip3p.xml")
        mm = ff.createSystem(top, nonbondedMethod=app.PME, nonbondedCutoff=min(0.9, 0.49 * L) * u.nanometer,
                             constraints=None, rigidWater=False)
        system = add_ml(top, None, list(range(top.getNumAtoms()))) if add_ml else mm
        box = top.getPeriodicBoxVectors()
    elif name == "ala2-mlmm":
        prm, crd = _amber("explicit")
        top, pos = prm.topology, crd.getPositions(asNumpy=True).value_in_unit(u.nanometer)
        mm = prm.createSystem(nonbondedMethod=app.PME, nonbondedCutoff=0.9 * u.nanometer, constraints=app.HBonds)
        ml_atoms = [a.index for a in top.atoms() if a.residue.name not in ("HOH", "WAT")]
        system = add_ml(top, mm, ml_atoms) if add_ml else mm
        box = crd.boxVectors
    elif name == "ammonium-water":
        folder = ROOT / "systems" / "ammonium-water"
        pdb = app.PDBFile(str(folder / "ammonium-water.pdb"))
        ff = app.ForceField("amber14/tip3p.xml", str(folder / "ammonium.xml"))
        top, pos = pdb.topology, pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer)
        mm = ff.createSystem(top, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * u.nanometer, constraints=None,
                             rigidWater=True)
        ml_atoms = [a.index for a in top.atoms() if a.residue.name == "NH4"]
        system = add_ml(top, mm, ml_atoms) if add_ml else mm
        box = top.getPeriodicBoxVectors()
    else:
        raise ValueError(f"unknown benchmark system {name!r}")
    if box is not None:
        system.setDefaultPeriodicBoxVectors(*box)
    return {"topology": top, "positions": np.asarray(pos), "system": system, "atoms": top.getNumAtoms()}


def time_md(built: Dict[str, object], warmup: int = 20, steps: int = 100, threads: int = 1,
            platform: str = "CPU", budget_s: Optional[float] = None, openmm_threads: Optional[int] = None) -> Dict[str, float]:
    """ms/step of LangevinMiddle MD (0.5 fs, 300 K) after ``warmup`` steps, and peak RSS (MB).

    With ``budget_s``, slow models measure fewer steps (at least 3): as many as the warm-up's pace fits in
    the budget; the steps actually measured are returned.  ``threads`` torch threads; ``openmm_threads``
    CPU-platform threads (default: the same number).
    """
    torch.set_num_threads(threads)
    omm_threads = threads if openmm_threads is None else openmm_threads
    integrator = openmm.LangevinMiddleIntegrator(300 * u.kelvin, 1.0 / u.picosecond, 0.5 * u.femtosecond)
    integrator.setRandomNumberSeed(1)
    props = {"Threads": str(omm_threads)} if platform == "CPU" else {}
    ctx = openmm.Context(built["system"], integrator, openmm.Platform.getPlatformByName(platform), props)
    ctx.setPositions(built["positions"] * u.nanometer)
    ctx.setVelocitiesToTemperature(300 * u.kelvin, 1)
    t0 = time.perf_counter()
    integrator.step(1)
    ctx.getState(getEnergy=True)
    first = time.perf_counter() - t0
    if budget_s is not None and first * warmup > budget_s:
        warmup = 3  # the slowest models: a shorter warm-up (stated in the record)
    t0 = time.perf_counter()
    integrator.step(max(warmup - 1, 1))
    ctx.getState(getEnergy=True)
    if budget_s is not None and warmup > 0:
        pace = (time.perf_counter() - t0) / max(warmup - 1, 1)
        steps = max(3, min(steps, int(budget_s / pace)))
    t0 = time.perf_counter()
    integrator.step(steps)
    e = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    dt = time.perf_counter() - t0
    return {"ms_per_step": 1000.0 * dt / steps, "steps": steps, "warmup": warmup, "final_energy_finite": bool(np.isfinite(e)),
            "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def machine() -> Dict[str, object]:
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "openmm", "openmmtorch", "openmmml", "e3nn", "mace-torch", "torchmd-net", "nequip", "nequip-allegro"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return {"cpu": _platform.processor() or _platform.machine(), "cores": os.cpu_count(), "python": sys.version.split()[0],
            "versions": versions}


def emit(record: Dict[str, object]) -> None:
    """One JSON line per measurement on stdout (benchmarks/speed.py collects them)."""
    print("BENCH " + json.dumps(record), flush=True)
