"""The checks of a system's run and its Markdown report: the production temperature from ``state.csv``, the
spec's expected observables checked against the analyses, and ``report.md`` (the run, the checks and the analyses
on one page)."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .._io import atomic_path
from ..errors import SpecError
from ..markdown import markdown_table
from .spec import TEMPERATURE, SystemSpec


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


def expectation_checks(spec: SystemSpec, results: Dict[str, Any], smoke: bool = False) -> List[Dict[str, Any]]:
    """The spec's expectations checked against the analysis ``results``: per expectation its observable, value
    (None when the results lack it), range, pass and note; with ``smoke``, those marked ``smoke: false`` are
    left out."""
    checks: List[Dict[str, Any]] = []
    for e in spec.expected:
        if smoke and e.get("smoke", True) is False:
            continue
        value = _lookup(results, e["observable"])
        lo, hi = e["range"]
        ok = value is not None and math.isfinite(value) and lo <= value <= hi
        checks.append({"observable": e["observable"], "value": value, "range": [lo, hi], "pass": bool(ok),
                       "note": e.get("note", "")})
    return checks


def _check_row(c: Dict[str, Any]) -> Tuple[str, str, str]:
    value = "missing" if c["value"] is None else f"{c['value']:.4g}"
    return c["observable"], value, f"{c['range'][0]:g}–{c['range'][1]:g}"


def checks_table(checks: List[Dict[str, Any]], notes: bool = True) -> List[str]:
    """The expected-observable checks (``checks.json``) as Markdown table lines: the one format of the run
    report, the workflow report and (as text, :func:`checks_text`) the CLI."""
    rows = [(*_check_row(c), "yes" if c["pass"] else "**NO**", *([c.get("note", "")] if notes else [])) for c in checks]
    return markdown_table(["observable", "value", "expected", "pass", *(["note"] if notes else [])], rows)


def checks_text(checks: List[Dict[str, Any]]) -> List[str]:
    """The checks as indented text lines, ``PASS``/``FAIL`` first (for a terminal)."""
    out = []
    for c in checks:
        observable, value, expected = _check_row(c)
        out.append(f"  {'PASS' if c['pass'] else 'FAIL'} {observable} = {value} (expected {expected})")
    return out


def _platform_settings(run_info: Dict[str, Any]) -> str:
    """Precision, threads and CUDA graphs of a run, as one line for the report."""
    props = run_info.get("platform_properties") or {}
    parts = [f"{k} {v}" for k, v in sorted(props.items())] or ["defaults"]
    if run_info.get("platform") == "CUDA":
        parts.append("CUDA graphs " + ("on" if run_info.get("cuda_graphs") else "off"))
    return ", ".join(parts)


def write_report(spec: SystemSpec, run_info: Dict[str, Any], analysis: Dict[str, Any], out) -> Path:
    """``out/report.md``: the run (``run.json``'s ``run_info``), its production temperature, the checks and the
    analyses of :func:`~openmlip.md.system.analyze_system` (``analysis``, its plots in ``out/analysis``) on one
    page; returns its path."""
    out = Path(out)
    md = run_info["md"]
    rows = [("atoms (ML)", f"{run_info['atoms']} ({run_info['ml_atoms']}, embedding {run_info['embedding']})"),
            ("potential", run_info["potential"]),
            ("MD", f"{run_info['steps']} steps of {md['timestep_fs']} fs, {md['temperature_K']} K"
             + (f", {md['pressure_bar']} bar (NPT)" if md["pressure_bar"] else " (NVT)")
             + f", Langevin γ {md['friction_per_ps']:g}/ps; first {md['equilibrate_steps']} steps "
             f"equilibration (γ {md.get('equilibrate_friction_per_ps', md['friction_per_ps']):g}/ps)"),
            ("platform", f"{run_info['platform']} ({'; '.join(run_info['platform_reasons'])})"),
            ("platform settings", _platform_settings(run_info)),
            ("threads", f"torch {run_info['threads']['torch']}, OpenMM {run_info['threads']['openmm']}"),
            ("speed", f"{run_info['ms_per_step']:.2f} ms/step, {run_info['ns_per_day']:.3f} ns/day")]
    t = analysis["results"].get(TEMPERATURE)
    if t is not None:
        rows.append(("temperature (production)", temperature_text(t)))
    lines = [f"# {spec.name}", "", spec.description, "", *markdown_table(None, rows), "", "## Expected observables", ""]
    lines += checks_table(analysis["checks"]) if analysis["checks"] else ["None listed in the spec."]
    lines += ["", "## Analyses (production frames)", "", *analysis["report"].markdown("analysis/")]
    with atomic_path(out / "report.md") as tmp:
        Path(tmp).write_text("\n".join(lines))
    return out / "report.md"
