"""Build, simulate and analyse a system spec (``openmlip md`` / ``openmlip run``).

Outputs of ``run_system(spec, out)``::

    out/md/        trajectory.h5, state.csv, checkpoint.chk/.json   (MDRunner; resumable)
    out/md/run.json   platform and why, thread counts, ms/step, ns/day, ML atoms and charge
    out/analysis/  results.json, checks.json (each expectation: value, range, pass), CSV + PNG per analysis, report.md
    out/report.md     the run, the checks and the analyses in one page
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

import torch  # noqa: F401  (before openmm: openmm-torch's plugins need torch's libraries loaded)
import openmm
import openmm.app as app
import openmm.unit as u

from .. import units
from .._io import atomic_path
from ..errors import SpecError
from ..openmm.platform import openmm_seed
from .runner import MDRunner
from .spec import TEMPERATURE, SystemSpec, load_spec


def _select(spec: SystemSpec, md_top, selection, where: str) -> List[int]:
    if selection == "all":
        return list(range(md_top.n_atoms))
    if isinstance(selection, list):
        bad = [i for i in selection if not isinstance(i, int) or not 0 <= i < md_top.n_atoms]
        if bad:
            raise SpecError(f"{spec.path}: {where}: indices {bad[:5]} are not atoms of this {md_top.n_atoms}-atom structure")
        return list(selection)
    try:
        idx = md_top.select(str(selection))
    except Exception as exc:  # mdtraj raises several types for a bad expression
        raise SpecError(f"{spec.path}: {where}: cannot parse selection {selection!r} ({str(exc).splitlines()[0]})") from None
    if len(idx) == 0:
        raise SpecError(f"{spec.path}: {where}: selection {selection!r} matches no atom "
                        f"(residues here: {', '.join(sorted({r.name for r in md_top.residues})[:12])})")
    return [int(i) for i in idx]


def xyz_topology(atoms) -> app.Topology:
    """A one-residue Topology of an ASE ``Atoms`` with its covalent bonds, found by the same rule as the ASE
    calculator's formal charges (:func:`openmlip.charges.bonds_from_positions`), so trajectories carry them and
    the OpenMM route infers the same formal charges (+1 on the N of NH4+)."""
    from ..charges import bonds_from_positions

    top = app.Topology()
    res = top.addResidue("MOL", top.addChain())
    added = [top.addAtom(f"{s}{k}", app.Element.getBySymbol(s), res) for k, s in enumerate(atoms.get_chemical_symbols())]
    for i, j in bonds_from_positions(atoms.numbers, atoms.positions):
        top.addBond(added[i], added[j])
    return top


def relax_with_mm(topology, positions, forcefield, steps: int = 1000, seed: int = 0, cutoff_nm: float = 0.7):
    """Minimise and briefly equilibrate a solvated structure with its MM force field (rigid TIP3P,
    X–H constraints, 300 K, 2 fs steps, PME), returning positions in nm.

    Modeller's ``addSolvent`` can leave clashes across the periodic boundary (an H–H pair at 0.52 Å in
    the first water box) that rigid MM water shrugs off but that a flexible ML water turns into a
    broken bond; shipped structures are relaxed this way before they are written.
    """
    system = forcefield.createSystem(topology, nonbondedMethod=app.PME, nonbondedCutoff=cutoff_nm * u.nanometer,
                                     constraints=app.HBonds, rigidWater=True)
    integrator = openmm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, 2 * u.femtosecond)
    integrator.setRandomNumberSeed(openmm_seed(seed))
    ctx = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    ctx.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, 1000)
    ctx.setVelocitiesToTemperature(300 * u.kelvin, openmm_seed(seed))
    integrator.step(steps)
    openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, 1000)
    return ctx.getState(getPositions=True).getPositions(asNumpy=True)


def _read(spec: SystemSpec, path: Path, kind: str, reader):
    """``reader(str(path))``, or a :class:`SpecError` naming the spec's structure file when it cannot be read."""
    try:
        return reader(str(path))
    except Exception as exc:  # noqa: BLE001  -- OpenMM's and ASE's readers raise many types for a damaged file
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise SpecError(f"{spec.path}: structure {path.name} cannot be read as {kind} file ({type(exc).__name__}: "
                        f"{lines[-1][:120] if lines else 'no detail'}); fix or replace the file") from None


def _structure(spec: SystemSpec, mm: bool = True):
    """(topology, positions in nm [N,3], box vectors or None, mm_system or None); ``mm=False``: no MM System is
    built (the structure only)."""
    nb = spec.nonbonded
    method = getattr(app, nb["method"])
    constraints = None if nb["constraints"] is None else getattr(app, nb["constraints"])
    kw = dict(nonbondedMethod=method, constraints=constraints, rigidWater=bool(nb["rigid_water"]))
    if method is not app.NoCutoff:
        kw["nonbondedCutoff"] = float(nb["cutoff_nm"]) * u.nanometer
    if isinstance(spec.structure, dict):
        prmtop = _read(spec, spec.root / spec.structure["prmtop"], "an Amber prmtop", app.AmberPrmtopFile)
        inpcrd = _read(spec, spec.root / spec.structure["inpcrd"], "an Amber inpcrd", app.AmberInpcrdFile)
        if nb["implicit_solvent"]:
            kw["implicitSolvent"] = getattr(app, nb["implicit_solvent"])
        system = prmtop.createSystem(**kw) if mm and spec.ml["embedding"] != "none" else None
        box = inpcrd.boxVectors
        if box is not None:
            prmtop.topology.setPeriodicBoxVectors(box)
        pos = np.asarray(inpcrd.getPositions(asNumpy=True).value_in_unit(u.nanometer))
        return prmtop.topology, pos, box, system
    path = spec.root / spec.structure
    if path.suffix.lower() == ".pdb":
        pdb = _read(spec, path, "a PDB", app.PDBFile)
        top = pdb.topology
        pos = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer))
        box = top.getPeriodicBoxVectors()
        system = None
        if spec.forcefield and mm:
            try:
                ff = app.ForceField(*[spec.resolve(x) for x in spec.forcefield])
            except Exception as exc:  # noqa: BLE001
                raise SpecError(f"{spec.path}: forcefield: cannot load {spec.forcefield} ({str(exc).splitlines()[0]})") from None
            if spec.ml["embedding"] != "none":
                if box is None and method in (app.PME, app.Ewald, app.CutoffPeriodic):
                    raise SpecError(f"{spec.path}: nonbonded.method {nb['method']} needs a box: add a CRYST1 record to the PDB")
                try:
                    system = ff.createSystem(top, **kw)
                except ValueError as exc:
                    raise SpecError(f"{spec.path}: forcefield: {str(exc).splitlines()[0]}") from None
        return top, pos, box, system
    from ase.io import read

    atoms = _read(spec, path, "an xyz/extxyz", read)
    top = xyz_topology(atoms)
    pos = atoms.positions * units.ANGSTROM_TO_NM
    box = None
    if spec.box_nm is not None:
        box = tuple(openmm.Vec3(*(spec.box_nm if i == j else 0.0 for j in range(3))) for i in range(3)) * u.nanometer
        top.setPeriodicBoxVectors(box)
    return top, pos, box, None


def build_system(spec: SystemSpec, potential: Optional[str] = None, backend: str = "torchforce",
                 interpolate: bool = False) -> Dict[str, Any]:
    """An OpenMM System for the spec: whole-system ML or ML/MM through openmm-ml's ``MLPotential``.

    ``potential`` overrides ``ml.potential`` (an installed potential name or a model file); ``interpolate``
    builds the ML/MM System with openmm-ml's ``lambda_interpolate`` (MM at 0, ML/MM at 1: :mod:`openmlip.fe`).
    """
    import mdtraj
    from openmmml import MLPotential
    from openmmml.embeddings.utilities import findLinkBonds

    from ..charges import total_charge
    from ..errors import ModelFileError
    from ..openmm.links import copy_topology, place_link_atoms
    from ..openmm.registry import resolve_potential

    top, pos, box, mm_system = _structure(spec)
    md_top = mdtraj.Topology.from_openmm(top)
    ml = spec.ml
    atoms = _select(spec, md_top, ml["selection"], "ml.selection")
    name = potential or ml["potential"]
    try:
        mlp = MLPotential("openmlip", modelPath=str(resolve_potential(name, spec.root)))
    except ModelFileError as exc:
        raise SpecError(f"{spec.path}: ml.potential: {exc}") from None
    args: Dict[str, Any] = {"precision": ml["precision"], "backend": backend}
    if ml["charge"] is not None:
        args["charge"] = total_charge(ml["charge"], "ml.charge")
    if ml["spin_multiplicity"] != 1:
        args["spinMultiplicity"] = ml["spin_multiplicity"]
    if ml["formal_charges"]:
        pos_in_region = {a: k for k, a in enumerate(atoms)}
        fc = [0.0] * len(atoms)
        for k, item in enumerate(ml["formal_charges"]):
            for i in _select(spec, md_top, item["selection"], f"ml.formal_charges[{k}].selection"):
                if i not in pos_in_region:
                    raise SpecError(f"{spec.path}: ml.formal_charges[{k}]: atom {i} is not in the ML region")
                fc[pos_in_region[i]] = float(item["charge"])
        args["formalCharges"] = fc
        if ml["charge"] is None:
            args["charge"] = int(round(sum(fc)))  # a non-integer sum fails in the resolver (formal vs total)
        elif abs(sum(fc) - float(ml["charge"])) > 1e-9:
            raise SpecError(f"{spec.path}: ml.formal_charges sum to {sum(fc):g} but ml.charge is {ml['charge']}")
    if ml["embedding"] == "none":
        system = mlp.createSystem(top, **args)
        if box is not None:
            system.setDefaultPeriodicBoxVectors(*box)
    else:
        if mm_system is None:
            raise SpecError(f"{spec.path}: embedding {ml['embedding']!r} needs an MM force field for the rest "
                            "(forcefield: for a PDB, a prmtop otherwise)")
        if interpolate:
            # keep the MM System's constraints inside the ML region at both end states: the MM System has no bond
            # terms for constrained bonds, so removing the constraints (openmm-ml's default) would leave λ = 0
            # with unbound hydrogens (they fall onto their heavy atom during minimisation)
            args["removeConstraints"] = False
        info = mlp.createMixedSystem(top, mm_system, atoms, embedding=ml["embedding"], interpolate=interpolate,
                                     returnInfo=True, **args)
        system = info["system"]
        caps = len(findLinkBonds(top, atoms))
        if caps:  # link-atom caps of cut bonds (virtual sites) join the topology and the trajectory
            top, pos = copy_topology(top, caps), place_link_atoms(system, pos)
            md_top = mdtraj.Topology.from_openmm(top)
    return {"topology": top, "positions": pos * u.nanometer, "box": box, "system": system, "ml_atoms": atoms,
            "mdtraj_topology": md_top, "potential": name, "ml_charge": args.get("charge"),
            "ml_formal_charges": args.get("formalCharges")}


def run_md(spec: SystemSpec, out, smoke: bool = False, potential: Optional[str] = None, platform: Optional[str] = None,
           threads: int = 1, progress: bool = True, **md_overrides) -> Dict[str, Any]:
    """Minimise, equilibrate and run the spec's MD into ``out`` (resumes from ``out/checkpoint.chk``)."""
    md = spec.md_settings(smoke, **md_overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    built = build_system(spec, potential)
    runner = MDRunner(built["system"], built["topology"], built["positions"], out, temperature=md["temperature_K"],
                      friction_per_ps=md["friction_per_ps"], timestep_fs=md["timestep_fs"], pressure_bar=md["pressure_bar"],
                      report_interval=md["report_interval"], checkpoint_interval=md["checkpoint_interval"],
                      platform=platform, threads=threads, seed=md["seed"], max_energy_jump=md["max_energy_jump_kJmol"],
                      box_vectors=built["box"], minimize_iterations=md["minimize_iterations"],
                      settings=spec.resume_settings(potential), equilibrate_steps=md["equilibrate_steps"],
                      equilibrate_friction_per_ps=md["equilibrate_friction_per_ps"])
    for line in runner.platform_reasons:
        print(f"platform {line}")
    previous = _read_run_info(out / "run.json")
    res = runner.run(md["steps"], minimize=md["minimize_iterations"] > 0, progress=progress)
    if res["steps_run"] == 0 and previous is not None and previous.get("ms_per_step") is not None:
        res["ms_per_step"] = previous["ms_per_step"]  # a rerun of a finished run: the speed is that of the run that did the steps
    ns_day = units.ns_per_day(md["timestep_fs"], res["ms_per_step"] * 1e-3)
    info = {"system": spec.name, "spec": str(spec.path), "smoke": smoke, "md": md, "potential": built["potential"],
            "ml_atoms": len(built["ml_atoms"]), "atoms": built["topology"].getNumAtoms(), "embedding": spec.ml["embedding"],
            "platform": res["platform"], "platform_reasons": res["platform_reasons"],
            "platform_properties": res["platform_properties"], "cuda_graphs": res["cuda_graphs"],
            "threads": {"torch": threads, "openmm": threads}, "steps": res["steps"], "resumed": res["resumed"],
            "ms_per_step": res["ms_per_step"], "ns_per_day": ns_day, "trajectory": res["trajectory"], "state": res["state"]}
    with atomic_path(out / "run.json") as tmp:
        Path(tmp).write_text(json.dumps(info, indent=1))
    return info


def _read_run_info(path: Path) -> Optional[Dict[str, Any]]:
    """The ``run.json`` an earlier run of this output folder wrote, or None (absent or unreadable: then it is rewritten)."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _platform_settings(run_info: Dict[str, Any]) -> str:
    """Precision, threads and CUDA graphs of a run, as one line for the report."""
    props = run_info.get("platform_properties") or {}
    parts = [f"{k} {v}" for k, v in sorted(props.items())] or ["defaults"]
    if run_info.get("platform") == "CUDA":
        parts.append("CUDA graphs " + ("on" if run_info.get("cuda_graphs") else "off"))
    return ", ".join(parts)


def _lookup(results: Dict[str, Any], observable: str) -> Optional[float]:
    name, _, key = observable.partition(".")
    entry = results.get(name)
    if not isinstance(entry, dict) or key not in entry:
        return None
    v = entry[key]
    return float(v) if isinstance(v, (int, float)) else None


def temperature_summary(state_csv, t_equilibrated_ps: float, target_K: float) -> Optional[Dict[str, float]]:
    """Production temperature from the runner's ``state.csv`` (rows at or after ``t_equilibrated_ps``): mean, standard
    deviation, least-squares slope and the thermostat's target, all K (slope K/ps).  A Langevin thermostat holds the
    mean at the target; a mean well above it with a rising slope is a potential feeding energy in (atoms falling into
    a false well or a rough surface), which bond checks alone can miss.  ``None`` without two production rows."""
    path = Path(state_csv)
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        raw = list(csv.DictReader(fh))
    rows = []
    for k, r in enumerate(raw):
        try:
            rows.append((float(r["time_ps"]), float(r["temperature_K"])))
        except (KeyError, TypeError, ValueError):
            if k == len(raw) - 1:  # a row cut short by a kill: the runner drops it when the run resumes
                break
            raise SpecError(f"{path}: row {k + 2} has no readable time_ps/temperature_K ({dict(r)!r}); "
                            "state.csv is written by openmlip md/run, rerun the MD to regenerate it") from None
    prod = np.array([r for r in rows if r[0] >= t_equilibrated_ps - 1e-9], dtype=float).reshape(-1, 2)
    if len(prod) < 2:
        return None
    t, T = prod[:, 0], prod[:, 1]
    slope = float(np.polyfit(t, T, 1)[0]) if np.ptp(t) > 0 else 0.0
    return {"mean_K": float(T.mean()), "std_K": float(T.std()), "slope_K_per_ps": slope, "target_K": float(target_K),
            "rows": int(len(T))}


def temperature_text(t: Dict[str, float]) -> str:
    """:func:`temperature_summary` as one phrase (the report's row and the CLI's line)."""
    return f"{t['mean_K']:.1f} ± {t['std_K']:.1f} K (target {t['target_K']:g} K), slope {t['slope_K_per_ps']:+.1f} K/ps"


def check_trajectory_of(spec: SystemSpec, traj, trajectory) -> None:
    """:class:`SpecError` unless ``traj`` (mdtraj) has the atoms of the spec's structure, element by element: the
    checks of one system on another system's trajectory would pass or fail for nothing."""
    top = _structure(spec, mm=False)[0]
    expected = [a.element.symbol if a.element is not None else "?" for a in top.atoms()]
    atoms = list(traj.topology.atoms)
    caps = [a for a in atoms[len(expected):] if a.name[:1] == "V" and a.name[1:].isdigit()]  # link-atom caps, appended
    found = [a.element.symbol if a.element is not None else "?" for a in atoms[:len(atoms) - len(caps)]]
    if len(found) != len(expected):
        raise SpecError(f"{trajectory}: {len(found)} atoms, but {spec.name}'s structure has {len(expected)}: not a run of "
                        f"this system; give the trajectory of `openmlip run {spec.path.parent}` (or the matching --system)")
    bad = next((k for k, (a, b) in enumerate(zip(found, expected)) if a != b), None)
    if bad is not None:
        raise SpecError(f"{trajectory}: atom {bad} is {found[bad]}, but {spec.name}'s structure has {expected[bad]} there: "
                        "not a run of this system; give the matching --system")


def analyze_system(spec: SystemSpec, trajectory, out, smoke: bool = False, **md_overrides) -> Dict[str, Any]:
    """The spec's analyses on the production part of ``trajectory``, and its expectations checked."""
    from ..analysis.report import MSD, RDF, Bonds, analyze, load_trajectory

    md = spec.md_settings(smoke, **md_overrides)
    traj = load_trajectory(str(trajectory))
    check_trajectory_of(spec, traj, trajectory)
    t_eq = md["equilibrate_steps"] * md["timestep_fs"] * units.FS_TO_PS
    keep = np.where(np.asarray(traj.time) >= t_eq - 1e-9)[0]
    if len(keep) < 2:
        raise SpecError(f"{trajectory}: only {len(keep)} frame(s) after equilibration ({t_eq:g} ps); "
                        "run the MD to completion first")
    traj = traj[keep]
    a = spec.analysis
    jobs = ([Bonds((b["elements"][0], b["elements"][1]), b.get("selection"), b["name"]) for b in a["bonds"]]
            + [RDF(r["a"], r["b"], r.get("r_max_nm"), float(r.get("bin_width_nm", 0.005)), r["name"]) for r in a["rdf"]]
            + [MSD(m["selection"], m.get("fit_window_ps"), m.get("viscosity_mPa_s"), m["name"]) for m in a["msd"]])
    checks: List[Dict[str, Any]] = []

    def check(results: Dict[str, Any]) -> Dict[str, str]:  # inside the analysis folder's write: one whole result
        temperature = temperature_summary(Path(trajectory).parent / "state.csv", t_eq, md["temperature_K"])
        if temperature is not None:
            results[TEMPERATURE] = temperature
        for e in spec.expected:
            if smoke and e.get("smoke", True) is False:
                continue
            value = _lookup(results, e["observable"])
            lo, hi = e["range"]
            ok = value is not None and math.isfinite(value) and lo <= value <= hi
            checks.append({"observable": e["observable"], "value": value, "range": [lo, hi], "pass": bool(ok),
                           "note": e.get("note", "")})
        return {"checks.json": json.dumps(checks, indent=1)}

    results = analyze(traj, out, jobs, temperature_K=md["temperature_K"], extra=check)
    return {"results": results, "checks": checks, "frames": int(traj.n_frames)}


def _check_row(c: Dict[str, Any]) -> Tuple[str, str, str]:
    value = "missing" if c["value"] is None else f"{c['value']:.4g}"
    return c["observable"], value, f"{c['range'][0]:g}–{c['range'][1]:g}"


def checks_table(checks: List[Dict[str, Any]], notes: bool = True) -> List[str]:
    """The expected-observable checks (``checks.json``) as Markdown table lines: the one format of the run
    report, the workflow report and (as text, :func:`checks_text`) the CLI."""
    lines = ["| observable | value | expected | pass |" + (" note |" if notes else ""),
             "| --- | --- | --- | --- |" + (" --- |" if notes else "")]
    for c in checks:
        observable, value, expected = _check_row(c)
        lines.append(f"| {observable} | {value} | {expected} | {'yes' if c['pass'] else '**NO**'} |"
                     + (f" {c.get('note', '')} |" if notes else ""))
    return lines


def checks_text(checks: List[Dict[str, Any]]) -> List[str]:
    """The checks as indented text lines, ``PASS``/``FAIL`` first (for a terminal)."""
    out = []
    for c in checks:
        observable, value, expected = _check_row(c)
        out.append(f"  {'PASS' if c['pass'] else 'FAIL'} {observable} = {value} (expected {expected})")
    return out


def write_report(spec: SystemSpec, run_info: Dict[str, Any], analysis: Dict[str, Any], out) -> Path:
    out = Path(out)
    lines = [f"# {spec.name}", "", spec.description, "",
             "| | |", "| --- | --- |",
             f"| atoms (ML) | {run_info['atoms']} ({run_info['ml_atoms']}, embedding {run_info['embedding']}) |",
             f"| potential | {run_info['potential']} |",
             f"| MD | {run_info['steps']} steps of {run_info['md']['timestep_fs']} fs, {run_info['md']['temperature_K']} K"
             + (f", {run_info['md']['pressure_bar']} bar (NPT)" if run_info["md"]["pressure_bar"] else " (NVT)")
             + f", Langevin γ {run_info['md']['friction_per_ps']:g}/ps; first {run_info['md']['equilibrate_steps']} steps "
             f"equilibration (γ {run_info['md'].get('equilibrate_friction_per_ps', run_info['md']['friction_per_ps']):g}/ps) |",
             f"| platform | {run_info['platform']} ({'; '.join(run_info['platform_reasons'])}) |",
             f"| platform settings | {_platform_settings(run_info)} |",
             f"| threads | torch {run_info['threads']['torch']}, OpenMM {run_info['threads']['openmm']} |",
             f"| speed | {run_info['ms_per_step']:.2f} ms/step, {run_info['ns_per_day']:.3f} ns/day |"]
    t = analysis["results"].get(TEMPERATURE)
    if t is not None:
        lines.append(f"| temperature (production) | {temperature_text(t)} |")
    lines += ["", "## Expected observables", ""]
    lines += checks_table(analysis["checks"]) if analysis["checks"] else ["None listed in the spec."]
    body = (out / "analysis" / "report.md").read_text().split("\n", 1)[1]
    body = body.replace("](", "](analysis/")
    lines += ["", "## Analyses (production frames)", body]
    with atomic_path(out / "report.md") as tmp:
        Path(tmp).write_text("\n".join(lines))
    return out / "report.md"


def run_system(spec, out, smoke: bool = False, potential: Optional[str] = None, platform: Optional[str] = None,
               threads: int = 1, progress: bool = True, **md_overrides) -> Dict[str, Any]:
    """MD then analyses then report: ``openmlip run SYSTEM``."""
    if not isinstance(spec, SystemSpec):
        spec = load_spec(spec)
    out = Path(out)
    info = run_md(spec, out / "md", smoke, potential, platform, threads, progress, **md_overrides)
    ana = analyze_system(spec, out / "md" / "trajectory.h5", out / "analysis", smoke, **md_overrides)
    report = write_report(spec, info, ana, out)
    return {"run": info, "analysis": ana, "report": str(report), "passed": all(c["pass"] for c in ana["checks"])}
