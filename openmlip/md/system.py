"""Simulate and analyse a system spec (``openmlip md`` / ``openmlip run``): the System from :mod:`openmlip.md.build`
(its structure from :mod:`openmlip.md.structure`), the MD by :class:`~openmlip.md.MDRunner`, the checks and the
report by :mod:`openmlip.md.report`.

Outputs of ``run_system(spec, out)``::

    out/md/        trajectory.h5, state.csv, checkpoint.chk/.json   (MDRunner; resumable)
    out/md/run.json   platform and why, thread counts, ms/step, ns/day, ML atoms and charge
    out/analysis/  results.json, checks.json (each expectation: value, range, pass), CSV + PNG per analysis, report.md
    out/report.md     the run, the checks and the analyses in one page
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

import torch

from .. import units
from .._io import atomic_path
from ..errors import SpecError
from .build import build_system
from .report import expectation_checks, temperature_summary, write_report
from .runner import MDRunner
from .spec import TEMPERATURE, SystemSpec, load_spec
from .structure import check_trajectory_of

logger = logging.getLogger(__name__)


def run_md(spec: SystemSpec, out, smoke: bool = False, potential: Optional[str] = None, platform: Optional[str] = None,
           threads: int = 1, progress: bool = True, **md_overrides) -> Dict[str, Any]:
    """Minimise, equilibrate and run the spec's MD into ``out`` (resumes from ``out/checkpoint.chk``)."""
    md = spec.md_settings(smoke, **md_overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    built = build_system(spec, potential)
    runner = MDRunner(built["system"], built["topology"], built["positions"], out, temperature=md.temperature_K,
                      friction_per_ps=md.friction_per_ps, timestep_fs=md.timestep_fs, pressure_bar=md.pressure_bar,
                      report_interval=md.report_interval, checkpoint_interval=md.checkpoint_interval,
                      platform=platform, threads=threads, seed=md.seed, max_energy_jump=md.max_energy_jump_kJmol,
                      box_vectors=built["box"], minimize_iterations=md.minimize_iterations,
                      settings=spec.resume_settings(potential), equilibrate_steps=md.equilibrate_steps,
                      equilibrate_friction_per_ps=md.equilibrate_friction_per_ps)
    for line in runner.platform_reasons:
        logger.info("platform %s", line)
    previous = _read_run_info(out / "run.json")
    res = runner.run(md.steps, minimize=md.minimize_iterations > 0, progress=progress)
    if res["steps_run"] == 0 and previous is not None and previous.get("ms_per_step") is not None:
        res["ms_per_step"] = previous["ms_per_step"]  # a rerun of a finished run: the speed is that of the run that did the steps
    ns_day = units.ns_per_day(md.timestep_fs, res["ms_per_step"] * 1e-3)
    info = {"system": spec.name, "spec": str(spec.path), "smoke": smoke, "md": asdict(md), "potential": built["potential"],
            "ml_atoms": len(built["ml_atoms"]), "atoms": built["topology"].getNumAtoms(), "embedding": spec.ml.embedding,
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


def analyze_system(spec: SystemSpec, trajectory, out, smoke: bool = False, **md_overrides) -> Dict[str, Any]:
    """The spec's analyses on the production part of ``trajectory``, and its expectations checked: the results,
    the checks (also ``checks.json``), the number of frames analysed and the analyses' report
    (:class:`~openmlip.analysis.report.AnalysisReport`)."""
    from ..analysis.report import MSD, RDF, Bonds, analyze_with_report, load_trajectory

    md = spec.md_settings(smoke, **md_overrides)
    traj = load_trajectory(str(trajectory))
    check_trajectory_of(spec, traj, trajectory)
    t_eq = md.equilibration_ps
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
        temperature = temperature_summary(Path(trajectory).parent / "state.csv", t_eq, md.temperature_K)
        if temperature is not None:
            results[TEMPERATURE] = temperature
        checks.extend(expectation_checks(spec, results, smoke))
        return {"checks.json": json.dumps(checks, indent=1)}

    results, report = analyze_with_report(traj, out, jobs, temperature_K=md.temperature_K, extra=check)
    return {"results": results, "checks": checks, "frames": int(traj.n_frames), "report": report}


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
