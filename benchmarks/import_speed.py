"""The same model through openmm-ml's own route and through ``openmlip import``, side by side in one run.

    bash benchmarks/peers/setup.sh mace         # MACE's venv (the nequip framework is in openmlip's test extra)
    .venv/bin/python benchmarks/import_speed.py  # ~15 min on 2 cores; writes benchmarks/results/import_speed.jsonl
                                                 # and the "Imported models" section of docs/benchmarks.md

Per framework one randomly initialised model with the published architecture (bench_peer.py: NequIP 0.19
defaults, Allegro l_max 2, MACE-OFF23-small; float32, r_max 4.5 Å) is written in the framework's own
deployment format (``bench_peer.py --export``: what ``nequip-compile --mode torchscript`` writes; MACE scripted
with e3nn's ``jit.compile``).  Routes: ``openmm-ml`` = ``MLPotential('nequip'|'mace')`` of openmm-ml 1.8 (an
``openmm.PythonForce``, Python neighbour list each step; for MACE in MACE's venv, which has openmm 8.6.1), and
``openmlip import`` = that file imported and run as an openmlip TorchForce (openmlip's venv, openmm 8.5.2).
Same harness (benchmarks/harness.py), CPU platform, 1 torch + 1 OpenMM thread, fresh process per case.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from speed import PEERS, run_case  # noqa: E402

SYSTEMS = ["ala2-vacuum", "water-648", "ala2-mlmm"]
# (model, venv that exports it, venv of openmm-ml's route). openmm-ml 1.8's nequip route needs openmm >= 8.6 for
# ML/MM (PythonForce.setParticles), so it runs in the nequip peer venv (openmm 8.6.1) when that exists.
FRAMEWORKS = [("nequip", None, PEERS / ".venv-nequip"), ("allegro", None, PEERS / ".venv-nequip"),
              ("mace-off23-small", PEERS / ".venv-mace", PEERS / ".venv-mace")]
MARK = ("<!-- import-speed:start -->", "<!-- import-speed:end -->")


def export(model: str, venv, path: Path) -> bool:
    py = sys.executable if venv is None else str(venv / "bin" / "python")
    env = dict(os.environ, OMP_NUM_THREADS="1", TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")  # e3nn 0.4.4 reads its own constants
    proc = subprocess.run([py, str(PEERS / "bench_peer.py"), "--model", model, "--system", "ala2-vacuum",
                           "--route", "openmm-ml", "--export", str(path)], capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        print(f"FAILED export {model}: {(proc.stderr.strip().splitlines() or ['?'])[-1]}", flush=True)
    return proc.returncode == 0


def table(records) -> str:
    by = {(r["label"], r["system"]): r for r in records}
    lines = ["| model | route | " + " | ".join(SYSTEMS) + " |", "| --- | --- |" + " --- |" * len(SYSTEMS)]
    for model, _, _ in FRAMEWORKS:
        for route in ("openmm-ml", "openmlip import"):
            cells = []
            for s in SYSTEMS:
                r = by.get((f"{model} ({route})", s))
                if r is None:
                    cells.append("–")
                    continue
                txt = f"{r['ms_per_step']:.3g}"
                if r["steps"] < 100:
                    txt += f" ({r['steps']} steps)"
                ref = by.get((f"{model} (openmm-ml)", s))
                if route != "openmm-ml" and ref:
                    txt += f"; **{ref['ms_per_step'] / r['ms_per_step']:.2f}×** faster"
                cells.append(txt)
            lines.append(f"| {model} | {route} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(records, budget):
    doc = ROOT / "docs" / "benchmarks.md"
    text = doc.read_text()
    vers = {r["label"]: r.get("machine", {}).get("versions", {}) for r in records}
    body = "\n".join([
        MARK[0], "## Imported models: openmm-ml's route vs `openmlip import`", "",
        "`.venv/bin/python benchmarks/import_speed.py` (see its docstring): the same randomly initialised model per "
        "framework, written in the framework's deployment format, run through openmm-ml 1.8 "
        "(`MLPotential('nequip'|'mace')`: a PythonForce with a Python neighbour list each step) and through "
        "`openmlip import` (a TorchForce, no Python per step). ms/step, CPU platform, 1 torch + 1 OpenMM thread, "
        f"float32, LangevinMiddle 0.5 fs, up to 100 steps or {budget:g} s per case; ratio = openmm-ml / imported.", "",
        table(records), "",
        "Versions: " + "; ".join(f"{k}: " + ", ".join(f"{a} {b}" for a, b in v.items()) for k, v in vers.items()
                                 if k.endswith("(openmm-ml)")),
        MARK[1]])
    if MARK[0] in text:
        a, b = text.index(MARK[0]), text.index(MARK[1]) + len(MARK[1])
        text = text[:a] + body + text[b:]
    else:
        text = text.rstrip() + "\n\n" + body + "\n"
    doc.write_text(text)
    print(f"wrote {doc}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--budget", type=float, default=25.0)
    ap.add_argument("--systems", nargs="*", default=SYSTEMS)
    ap.add_argument("--out", default=str(HERE / "results" / "import_speed.jsonl"))
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--append", action="store_true", help="keep --out's records (replacing re-measured cases)")
    ap.add_argument("--models", nargs="*", help="only these models")
    ap.add_argument("--routes", nargs="*", default=["openmm-ml", "openmlip import"])
    args = ap.parse_args(argv)
    out = Path(args.out)
    if not args.report_only:
        out.parent.mkdir(parents=True, exist_ok=True)
        if not args.append:
            out.write_text("")
        tmp = Path(tempfile.mkdtemp())
        for model, venv, mlvenv in FRAMEWORKS:
            if args.models and model not in args.models:
                continue
            if venv is not None and not (venv / ".ok").exists():
                print(f"skip {model}: {venv} missing (bash benchmarks/peers/setup.sh)")
                continue
            if not (mlvenv / ".ok").exists():
                mlvenv = venv
            path = tmp / (f"{model}.nequip.pth" if venv is None else f"{model}.pt")
            if not export(model, venv, path):
                continue
            for system in args.systems:
                if "openmm-ml" in args.routes:
                    run_case(f"{model} (openmm-ml)", mlvenv,
                             [str(PEERS / "bench_peer.py"), "--model", model, "--route", "openmm-ml"],
                             system, 1, args.steps, args.budget, out)
                if "openmlip import" in args.routes:
                    run_case(f"{model} (openmlip import)", None,
                             [str(HERE / "bench_openmlip.py"), "--model", f"imported:{path}"],
                             system, 1, args.steps, args.budget, out)
    records = {}
    for ln in out.read_text().splitlines():  # the last record of each case wins
        if ln.strip():
            r = json.loads(ln)
            records[(r["label"], r["system"])] = r
    records = list(records.values())
    print(table(records))
    write_report(records, args.budget)


if __name__ == "__main__":
    main()
