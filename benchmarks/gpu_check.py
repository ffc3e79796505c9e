"""One-shot check of openmlip on a GPU: OpenMM-level equality on the target platform, then the speed table.

    python benchmarks/gpu_check.py                       # CUDA: writes docs/gpu.md (called by gpu_check.sh)
    python benchmarks/gpu_check.py --platform CPU --quick --out out/gpu_check_dry_run.md   # the CPU dry run

Systems (the default shipped potential ``openmlip.DEFAULT_POTENTIAL``, float32 model through ``MLPotential`` as
a user would): ``ala2-vacuum`` (22 atoms, all ML), ``water-648`` and ``water-3000`` (all ML, periodic), ``ala2-mlmm``
(alanine dipeptide ML in TIP3P, mechanical embedding) and ``ammonium-water`` (NH4+ ML in TIP3P + Cl-).

1. Equality: energies and forces on the target platform (CUDA: ``Precision=mixed``) equal those of the CPU
   platform within float32 tolerance (energy 1e-5 relative to max(1, |E|) kJ/mol, forces 1e-3 of the largest
   force component), and with openmm-torch's CUDA graphs on (``useCUDAGraphs``, with its warm-up property)
   equal to off (1e-6).  A system whose graph cannot be captured is reported with the error, not hidden.
2. Speed: ms/step and ns/day of LangevinMiddle MD at 0.5 fs and 1 fs, CUDA graphs off and on.
Exit status 1 when an equality check fails.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402  (before openmm)

import openmlip  # noqa: E402
import openmm  # noqa: E402
import openmm.app as app  # noqa: E402
import openmm.unit as u  # noqa: E402

from harness import benchmark_system, machine  # noqa: E402

POTENTIAL = openmlip.DEFAULT_POTENTIAL
SYSTEMS = ["ala2-vacuum", "water-648", "water-3000", "ala2-mlmm", "ammonium-water"]
QUICK_SYSTEMS = ["ala2-vacuum", "ammonium-water"]
E_TOL, F_TOL, GRAPH_TOL = 1e-5, 1e-3, 1e-6


def build(name: str, cuda_graphs: bool):
    """{'system', 'positions' (nm), 'atoms'} with the shipped potential; CUDA graphs as asked."""
    from openmmml import MLPotential

    pot = MLPotential(POTENTIAL)
    # the fixed-length list for every size (graphs need it; off uses it too, so that on vs off differ only by graphs)
    kw = dict(precision="single", useCUDAGraphs=cuda_graphs, neighborMethod="brute")
    if name == "ammonium-water":
        folder = ROOT / "systems" / "ammonium-water"
        pdb = app.PDBFile(str(folder / "ammonium-water.pdb"))
        ff = app.ForceField("amber14/tip3p.xml", str(folder / "ammonium.xml"))
        mm = ff.createSystem(pdb.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * u.nanometer,
                             constraints=app.HBonds, rigidWater=True)
        ml = [a.index for a in pdb.topology.atoms() if a.residue.name == "NH4"]
        system = pot.createMixedSystem(pdb.topology, mm, ml, charge=1, **kw)
        pos = np.array(pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer))
        return {"system": system, "positions": pos, "atoms": pdb.topology.getNumAtoms()}

    def add_ml(top, mm, atoms):
        return pot.createSystem(top, charge=0, **kw) if mm is None else pot.createMixedSystem(top, mm, atoms, charge=0, **kw)

    return benchmark_system(name, add_ml)


def properties(platform: str):
    if platform == "CUDA":
        return {"Precision": "mixed"}
    if platform == "CPU":
        return {"Threads": "1"}
    return {}


def evaluate(built, platform):
    ctx = openmm.Context(built["system"], openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName(platform),
                         properties(platform))
    ctx.setPositions(built["positions"] * u.nanometer)
    st = ctx.getState(getEnergy=True, getForces=True)
    return (st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole),
            np.asarray(st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)))


def compare(a, b, e_tol, f_tol):
    (ea, fa), (eb, fb) = a, b
    de = abs(ea - eb) / max(1.0, abs(eb))
    df = float(np.abs(fa - fb).max()) / max(1e-6, float(np.abs(fb).max()))
    return de, df, (de <= e_tol and df <= f_tol)


def time_md(built, platform, timestep_fs, steps, warmup=10):
    integrator = openmm.LangevinMiddleIntegrator(300 * u.kelvin, 1.0 / u.picosecond, timestep_fs * u.femtosecond)
    integrator.setRandomNumberSeed(1)
    ctx = openmm.Context(built["system"], integrator, openmm.Platform.getPlatformByName(platform), properties(platform))
    ctx.setPositions(built["positions"] * u.nanometer)
    ctx.setVelocitiesToTemperature(300 * u.kelvin, 1)
    integrator.step(warmup)
    ctx.getState(getEnergy=True)
    t0 = time.perf_counter()
    integrator.step(steps)
    e = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    ms = 1000.0 * (time.perf_counter() - t0) / steps
    return {"ms_per_step": ms, "ns_per_day": 86400.0 / (ms / 1000.0) * timestep_fs * 1e-6, "finite": bool(np.isfinite(e)),
            "steps": steps}


def device_name(platform):
    if platform == "CUDA" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    import platform as _p

    return f"{_p.processor() or _p.machine()} CPU ({__import__('os').cpu_count()} cores)"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--platform", default="CUDA", help="the platform to check (CPU for a dry run)")
    ap.add_argument("--reference-platform", default=None, help="compared against (default CPU; Reference when --platform CPU)")
    ap.add_argument("--systems", nargs="*", default=None)
    ap.add_argument("--steps", type=int, default=None, help="measured MD steps per speed case (default 200; 5 with --quick)")
    ap.add_argument("--quick", action="store_true", help="small systems, few steps (the CPU dry run)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "gpu.md"))
    ap.add_argument("--json", default=None, help="also write the records as JSON here")
    args = ap.parse_args(argv)
    ref_platform = args.reference_platform or ("Reference" if args.platform == "CPU" else "CPU")
    systems = args.systems or (QUICK_SYSTEMS if args.quick else SYSTEMS)
    steps = args.steps or (5 if args.quick else 200)
    torch.set_num_threads(1)
    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    if args.platform not in names:
        print(f"gpu_check: platform {args.platform} not available (have {', '.join(names)}; plugin load failures: "
              f"{openmm.Platform.getPluginLoadFailures()})", file=sys.stderr)
        return 2
    records, ok = [], True
    for name in systems:
        rec = {"system": name}
        t0 = time.perf_counter()
        built = build(name, False)
        rec["atoms"] = built["atoms"]
        rec["build_s"] = time.perf_counter() - t0
        ref = evaluate(built, ref_platform)
        tgt = evaluate(built, args.platform)
        rec["vs_reference"] = dict(zip(("dE_rel", "dF_rel", "ok"), compare(tgt, ref, E_TOL, F_TOL)))
        ok &= rec["vs_reference"]["ok"]
        try:
            built_g = build(name, True)
            tgt_g = evaluate(built_g, args.platform)
            rec["graphs_vs_off"] = dict(zip(("dE_rel", "dF_rel", "ok"), compare(tgt_g, tgt, GRAPH_TOL, GRAPH_TOL)))
            ok &= rec["graphs_vs_off"]["ok"]
        except Exception as exc:  # capture failures are reported, not hidden
            built_g = None
            rec["graphs_vs_off"] = {"ok": False, "error": (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]}
            ok = False
        rec["speed"] = {}
        for graphs, b in (("off", built), ("on", built_g)):
            for dt in (0.5, 1.0):
                key = f"graphs {graphs}, {dt:g} fs"
                if b is None:
                    rec["speed"][key] = None
                    continue
                try:
                    rec["speed"][key] = time_md(b, args.platform, dt, steps)
                except Exception:
                    rec["speed"][key] = {"error": traceback.format_exc().strip().splitlines()[-1][:300]}
        records.append(rec)
        print(json.dumps(rec), flush=True)
    write_report(records, args, ref_platform, steps)
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    print(f"gpu_check: {'all equality checks passed' if ok else 'SOME CHECKS FAILED'}; report {args.out}")
    return 0 if ok else 1


def _fmt_check(c):
    if c is None:
        return "–"
    if "error" in c:
        return f"failed: {c['error']}"
    return f"{'ok' if c['ok'] else 'FAIL'} (ΔE {c['dE_rel']:.1e}, ΔF {c['dF_rel']:.1e})"


def write_report(records, args, ref_platform, steps):
    m = machine()
    lines = [f"# openmlip on {args.platform}: equality and speed (benchmarks/gpu_check.sh)", "",
             f"Device: {device_name(args.platform)}. Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
             f"Potential: {POTENTIAL} (float32), through `MLPotential` as a user would; {args.platform} "
             f"{'Precision=mixed' if args.platform == 'CUDA' else ''}; 1 torch thread. Measured "
             f"{time.strftime('%Y-%m-%d')}; {steps} MD steps per speed case after 10 warm-up steps.", "",
             "## Equality", "",
             f"Energies and forces on {args.platform} vs {ref_platform} (tolerance: energy {E_TOL:g} relative, forces "
             f"{F_TOL:g} of the largest component), and with CUDA graphs on vs off ({GRAPH_TOL:g}).", "",
             f"| system | atoms | {args.platform} vs {ref_platform} | CUDA graphs on vs off |", "| --- | --- | --- | --- |"]
    for r in records:
        lines.append(f"| {r['system']} | {r['atoms']} | {_fmt_check(r['vs_reference'])} | {_fmt_check(r['graphs_vs_off'])} |")
    keys = ["graphs off, 0.5 fs", "graphs off, 1 fs", "graphs on, 0.5 fs", "graphs on, 1 fs"]
    lines += ["", "## Speed (LangevinMiddle, 300 K)", "", "ms/step; ns/day in parentheses.", "",
              "| system | atoms | " + " | ".join(keys) + " |", "| --- | --- |" + " --- |" * len(keys)]
    for r in records:
        cells = []
        for k in keys:
            s = r["speed"].get(k)
            if s is None:
                cells.append("–")
            elif "error" in s:
                cells.append(f"failed: {s['error'][:80]}")
            else:
                cells.append(f"{s['ms_per_step']:.3g} ({s['ns_per_day']:.3g})" + ("" if s["finite"] else " NaN"))
        lines.append(f"| {r['system']} | {r['atoms']} | " + " | ".join(cells) + " |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
