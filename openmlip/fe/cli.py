"""``openmlip fe SYSTEM``: ΔG(MM → ML/MM) end-state corrections of a system spec's ``free_energy`` legs.

    openmlip fe systems/t4l99a-pxylene --out out/fe/t4l              # every leg, every unit, then gather
    openmlip fe systems/t4l99a-pxylene --out out/fe/t4l --leg complex --window 3     # one λ window (a job)
    openmlip fe systems/t4l99a-pxylene --out out/fe/t4l --leg complex --switch reverse:1   # one batch
    openmlip fe systems/t4l99a-pxylene --out out/fe/t4l --gather     # estimates, report.md, ΔΔG
    openmlip fe systems/t4l99a-pxylene --list-units                  # the jobs, one per line

Every unit is resumable (rerun the same command after a kill) and writes one file; ``--gather``
reads them.  Wired into ``openmlip/cli.py`` by ``add_parser(subparsers)``; ``main(args)`` runs it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from .._io import atomic_path, writable_dir
from ..errors import ConfigError
from ..markdown import markdown_table
from ..store import write_json
from .engine import DIRECTIONS, Engine, steps_summary


def add_parser(subparsers) -> Any:
    text = ("free-energy correction ΔG(MM → ML/MM) of a system spec's free_energy legs: λ windows (MBAR) and "
            "non-equilibrium switches (BAR/Jarzynski); one resumable file per window or switch batch")
    f = subparsers.add_parser("fe", help=text, description=text)
    f.add_argument("system", help="system.yaml with a free_energy section, or a folder holding one")
    f.add_argument("--out", help="output folder (default out/fe/NAME); one subfolder per leg")
    f.add_argument("--leg", action="append", help="only this leg (repeatable; default: all legs)")
    unit = f.add_mutually_exclusive_group()
    unit.add_argument("--window", type=int, metavar="K", help="run only λ window K of the leg (needs one --leg)")
    unit.add_argument("--switch", metavar="DIR:B", help="run only switch batch B of direction forward|reverse (one --leg)")
    unit.add_argument("--gather", action="store_true", help="only gather finished units: estimates, plots, report.md")
    unit.add_argument("--list-units", action="store_true", help="print the units (LEG window K / LEG forward B) and exit")
    f.add_argument("--no-windows", action="store_true", help="skip the λ windows (MBAR)")
    f.add_argument("--no-switches", action="store_true", help="skip the non-equilibrium switches (BAR/Jarzynski)")
    f.add_argument("--smoke", action="store_true", help="the section's short smoke settings")
    f.add_argument("--potential", help="installed potential name or model file (overrides ml.potential)")
    f.add_argument("--platform", choices=["CUDA", "OpenCL", "CPU", "Reference"], help="force a platform (default: best available)")
    f.add_argument("--threads", type=int, default=1, help="torch and OpenMM CPU threads (default 1)")
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    f.set_defaults(func=main)
    return f


def _switch_arg(text: str):
    direction, _, batch = text.partition(":")
    if direction not in DIRECTIONS or not batch.isdigit():
        raise ConfigError(f"--switch takes DIRECTION:BATCH with DIRECTION forward or reverse, e.g. forward:0; got {text!r}")
    return direction, int(batch)


def list_units(spec, settings, legs: List[str], windows: bool = True, switches: bool = True) -> List[str]:
    units = []
    for leg in legs:
        if windows:
            units += [f"{leg} window {k}" for k in range(len(settings.lambdas))]
        if switches:
            units += [f"{leg} {d} {b}" for d in DIRECTIONS for b in range(settings.n_batches)]
    return units


def _engine(spec, leg: str, settings, potential, progress: bool) -> Engine:
    from .spec import build_leg, leg_positions

    built = build_leg(spec, leg, potential)
    meta = {"system": spec.system.name, "spec": str(spec.path), "leg": leg, "potential": built["potential"],
            "embedding": built["spec"].ml.embedding, "ml_atoms": len(built["ml_atoms"]),
            "atoms": built["topology"].getNumAtoms()}
    return Engine(built["system"], leg_positions(built), settings, box_vectors=built["box"], meta=meta, progress=progress)


def gather_legs(spec, settings, out: Path, legs: List[str], windows: bool, switches: bool) -> Dict[str, Any]:
    from .report import best, difference, gather

    results = {}
    for leg in legs:
        leg_spec = spec.leg_spec(leg)
        results[leg] = gather(out / leg, settings, windows, switches, title=f"{spec.system.name}, leg {leg}",
                              extra={"leg": leg, "embedding": leg_spec.ml.embedding,
                                     "potential": leg_spec.ml.potential})
    summary: Dict[str, Any] = {"system": spec.system.name, "spec": str(spec.path), "description": spec.description,
                               "kT_kJmol": settings.kT, "legs": {}}
    for leg, r in results.items():
        summary["legs"][leg] = {k: r[k] for k in ("mbar", "neq") if k in r}
        summary["legs"][leg]["wall_s"] = r["wall_s"]
    all_legs = all((out / leg / "results.json").exists() for leg in spec.legs)
    if spec.difference and all_legs:
        a, b = spec.difference
        ra = results.get(a) or json.loads((out / a / "results.json").read_text())
        rb = results.get(b) or json.loads((out / b / "results.json").read_text())
        summary["difference"] = {"minuend": a, "subtrahend": b, **difference(ra, rb)}
    _summary_report(spec, settings, out, summary, results, best)
    write_json(out / "results.json", summary)
    return summary


def _summary_report(spec, settings, out: Path, summary, results, best) -> None:
    kT = settings.kT
    lines = [f"# Free-energy corrections: {spec.system.name}", "", spec.description, "",
             f"T = {settings.temperature_K:g} K, kT = {kT:.4f} kJ/mol. Per-leg details in `LEG/report.md`.", ""]
    rows = []
    for leg, r in results.items():
        m = f"{r['mbar']['dg_kJmol']:.2f} ± {r['mbar']['err_kJmol']:.2f}" if "mbar" in r else "–"
        b = f"{r['neq']['bar']['dg_kJmol']:.2f} ± {r['neq']['bar']['err_kJmol']:.2f}" if "neq" in r else "–"
        rows.append((f"[{leg}]({leg}/report.md)", r.get("embedding", ""), m, b, f"{r['wall_s']:.0f}"))
    lines += markdown_table(["leg", "embedding", "MBAR (kJ/mol)", "BAR (kJ/mol)", "wall (s)"], rows)
    if "difference" in summary:
        d = summary["difference"]
        lines += ["", f"ΔΔG = ΔG({d['minuend']}) − ΔG({d['subtrahend']}):", ""]
        for name in ("mbar", "bar"):
            if name in d:
                x = d[name]
                lines.append(f"* {name.upper()}: {x['dg_kJmol']:.2f} ± {x['err_kJmol']:.2f} kJ/mol = "
                             f"{x['dg_kcalmol']:.2f} ± {x['err_kcalmol']:.2f} kcal/mol")
    with atomic_path(out / "report.md") as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")


def main(args) -> int:
    from .spec import legs_of, load_fe_spec

    spec = load_fe_spec(args.system)
    settings = spec.fe_settings(args.smoke, platform=args.platform, threads=args.threads)
    legs = legs_of(spec, args.leg)
    windows, switches = not args.no_windows, not args.no_switches
    if not (windows or switches):
        raise ConfigError("--no-windows and --no-switches together leave nothing to do")
    if args.list_units:
        print("\n".join(list_units(spec, settings, legs, windows, switches)))
        return 0
    out = Path(args.out or f"out/fe/{spec.system.name}")
    progress = not args.quiet
    if args.gather:
        summary = gather_legs(spec, settings, out, legs, windows, switches)
        _print_summary(summary, out)
        return 0
    writable_dir(out)
    if args.window is not None or args.switch:
        if len(legs) != 1:
            raise ConfigError(f"--window/--switch run one unit of one leg: give exactly one --leg ({', '.join(spec.legs)})")
        engine = _engine(spec, legs[0], settings, args.potential, progress)
        t0 = time.perf_counter()
        if args.window is not None:
            path = engine.run_window(args.window, out / legs[0])
        else:
            path = engine.run_switch_batch(*_switch_arg(args.switch), out / legs[0])
        print(f"{path} done ({time.perf_counter() - t0:.1f} s, platform {engine.platform_name})")
        return 0
    steps = steps_summary(settings)
    for leg in legs:
        engine = _engine(spec, leg, settings, args.potential, progress)
        print(f"leg {leg}: {len(settings.lambdas)} windows x {steps['per_window']} steps, "
              f"2 x {settings.n_batches} switch batches x {steps['per_switch_batch']} steps -> {out / leg}")
        engine.run_all(out / leg, windows, switches)
    summary = gather_legs(spec, settings, out, legs, windows, switches)
    _print_summary(summary, out)
    return 0


def _print_summary(summary: Dict[str, Any], out: Path) -> None:
    for leg, r in summary["legs"].items():
        parts = []
        if "mbar" in r:
            parts.append(f"MBAR {r['mbar']['dg_kJmol']:.3f} ± {r['mbar']['err_kJmol']:.3f}")
        if "neq" in r:
            parts.append(f"BAR {r['neq']['bar']['dg_kJmol']:.3f} ± {r['neq']['bar']['err_kJmol']:.3f}")
        print(f"{leg}: ΔG(MM→ML/MM) {', '.join(parts)} kJ/mol")
    if "difference" in summary:
        d = summary["difference"]
        for name in ("mbar", "bar"):
            if name in d:
                print(f"ΔΔG {d['minuend']} − {d['subtrahend']} ({name.upper()}): {d[name]['dg_kJmol']:.3f} ± "
                      f"{d[name]['err_kJmol']:.3f} kJ/mol ({d[name]['dg_kcalmol']:.3f} ± {d[name]['err_kcalmol']:.3f} kcal/mol)")
    print(f"report: {out / 'report.md'}")


def run(argv: Optional[List[str]] = None) -> int:
    """``python -m openmlip.fe.cli ...`` (until ``openmlip fe`` is wired into openmlip/cli.py)."""
    import argparse
    import sys

    from ..errors import OpenMLIPError

    p = argparse.ArgumentParser(prog="openmlip")
    sub = p.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = p.parse_args(["fe"] + list(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.func(args))
    except (OpenMLIPError, FileNotFoundError, ValueError) as exc:
        print(f"openmlip: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(run())


__all__ = ["add_parser", "main", "run"]
