"""Speed in OpenMM, openmlip next to its peers, on the same machine in the same run.

    bash benchmarks/peers/setup.sh          # once: the peers' own venvs (MACE, TorchMD-Net, NequIP/Allegro)
    python benchmarks/speed.py              # ~25 min on 2 cores; writes benchmarks/results/speed.jsonl,
                                            # docs/benchmarks_speed.md and docs/img/scaling.png

Every measurement runs in a fresh process (the peer's venv for peers) with the same harness
(benchmarks/harness.py): OpenMM CPU platform, LangevinMiddle 0.5 fs, float32, 20 warm-up steps then up
to 100 measured (fewer for the slowest: as many as fit in --budget seconds, stated per row), 1 torch +
1 OpenMM thread unless stated. Peers missing a venv are skipped and listed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = HERE / "peers"
SYSTEMS = ["ala2-vacuum", "water-648", "ala2-mlmm"]
SCALING = ["water-192", "water-648", "water-1536", "water-3000", "water-5184", "water-10125", "water-20577"]

# (label, venv, script args)
def _openmlip(model, backend="torchforce"):
    return (f"openmlip {model}" + ("" if backend == "torchforce" else f" ({backend})"), None,
            [str(HERE / "bench_openmlip.py"), "--model", model, "--backend", backend])


def _peer(model, route, venv):
    return (f"{model} ({route})", PEERS / f".venv-{venv}", [str(PEERS / "bench_peer.py"), "--model", model, "--route", route])


CASES = [
    ("pure MM", None, [str(HERE / "bench_openmlip.py"), "--model", "mm"]),
    _openmlip("allegro"), _openmlip("allegro-small"), _openmlip("nequip"), _openmlip("nequip-small"),
    _openmlip("allegro", "pythonforce"),
    _peer("mace-off23-small", "openmm-ml", "mace"), _peer("mace-off23-small", "torchforce", "mace"),
    _peer("mace-off23-medium", "openmm-ml", "mace"), _peer("mace-off23-medium", "torchforce", "mace"),
    _peer("tensornet", "openmm-ml", "torchmdnet"), _peer("tensornet", "torchforce", "torchmdnet"),
    _peer("nequip", "openmm-ml", "nequip"), _peer("nequip", "torchforce", "nequip"),
    _peer("allegro", "openmm-ml", "nequip"), _peer("allegro", "torchforce", "nequip"),
]


def run_case(label, venv, script_args, system, threads, steps, budget, out, warmup=20, openmm_threads=None):
    py = sys.executable if venv is None else str(venv / "bin" / "python")
    if venv is not None and not (venv / ".ok").exists():
        print(f"skip {label}: {venv} missing (bash benchmarks/peers/setup.sh)", flush=True)
        return None
    omm = threads if openmm_threads is None else openmm_threads
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")  # e3nn 0.4.4 / openmm-ml's MACE loader use torch.load
    cmd = [py, *script_args, "--system", system, "--threads", str(threads), "--steps", str(steps), "--budget", str(budget),
           "--warmup", str(warmup), "--openmm-threads", str(omm)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=max(600, 6 * budget))
    except subprocess.TimeoutExpired:
        print(f"timeout {label} {system}", flush=True)
        return None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["?"])[-1]
        print(f"FAILED {label} {system}: {err}", flush=True)
        return None
    rec = json.loads(lines[-1][6:])
    rec["label"] = label
    with open(out, "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    print(f"{label:40s} {system:12s} {rec['ms_per_step']:10.2f} ms/step ({rec['steps']} steps, {threads}+{omm} thr)", flush=True)
    return rec


def table(records, systems, threads):
    by = {(r["label"], r["system"]): r for r in records if (r["threads"]["torch"], r["threads"]["openmm"]) == threads}
    labels = [c[0] for c in CASES]
    mm = {s: by.get(("pure MM", s)) for s in systems}
    mace = {s: min((r for (lab, sy), r in by.items() if sy == s and lab.startswith("mace-off23-small")),
                   key=lambda r: r["ms_per_step"], default=None) for s in systems}
    head = "| model (route) | " + " | ".join(f"{s} ({(mm[s] or {}).get('atoms', '?')} atoms)" for s in systems) + " |"
    lines = [head, "| --- |" + " --- |" * len(systems)]
    for lab in labels:
        if not any((lab, s) in by for s in systems):
            continue  # not measured with these thread settings
        cells = []
        for s in systems:
            r = by.get((lab, s))
            if r is None:
                cells.append("–")
                continue
            txt = f"{r['ms_per_step']:.3g}"
            if r["steps"] < 100:
                txt += f" ({r['steps']} steps)"
            if lab != "pure MM" and mm[s]:
                txt += f"; {r['ms_per_step'] / mm[s]['ms_per_step']:.3g}× MM"
            if mace[s] and not lab.startswith("mace-off23-small") and lab != "pure MM":
                txt += f"; MACE-s/this {mace[s]['ms_per_step'] / r['ms_per_step']:.2f}"
            cells.append(txt)
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    lines += ["", "Peak resident memory of the measuring process (MB):", "", head, "| --- |" + " --- |" * len(systems)]
    for lab in labels:
        rss = [by.get((lab, s)) for s in systems]
        if any(rss):
            lines.append(f"| {lab} | " + " | ".join(f"{r['peak_rss_MB']:.0f}" if r else "–" for r in rss) + " |")
    return "\n".join(lines)


def versions_table(records):
    """One row per label: the package versions of the venv that measured it."""
    seen = {}
    for r in records:
        seen.setdefault(r["label"], r.get("machine", {}).get("versions", {}))
    lines = ["| label | versions (its venv) |", "| --- | --- |"]
    lines += [f"| {lab} | {', '.join(f'{k} {v}' for k, v in vers.items())} |" for lab, vers in seen.items()]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1], help="torch thread counts to measure")
    ap.add_argument("--openmm-threads", type=int, default=None, help="OpenMM CPU threads (default: as many as torch)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--budget", type=float, default=40.0, help="seconds of measured MD per case at most (>= 3 steps)")
    ap.add_argument("--systems", nargs="*", default=SYSTEMS)
    ap.add_argument("--scaling", action="store_true", help="also water boxes 192..20,577 atoms (see --scaling-labels)")
    ap.add_argument("--scaling-labels", nargs="+", default=["openmlip allegro", "pure MM", "mace-off23-small (openmm-ml)"],
                    help="labels measured on the scaling water boxes")
    ap.add_argument("--scaling-systems", nargs="+", default=SCALING, help="water boxes for --scaling")
    ap.add_argument("--merge", nargs="*", default=[], help="with --report-only: more JSONL files to report with --out's")
    ap.add_argument("--only", nargs="*", help="labels to run (default all)")
    ap.add_argument("--out", default=str(HERE / "results" / "speed.jsonl"))
    ap.add_argument("--report", default=str(ROOT / "docs" / "benchmarks_speed.md"))
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from --out's records, measure nothing")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        latest = {}
        # --out last: its records win over merged ones for the same (label, system, threads)
        lines = [ln for f in args.merge for ln in Path(f).read_text().splitlines()] + out.read_text().splitlines()
        for line in lines:
            r = json.loads(line)
            latest[(r["label"], r["system"], r["threads"]["torch"], r["threads"]["openmm"])] = r
        write_report(list(latest.values()), args)
        return
    records = []
    for threads in args.threads:
        for system in args.systems:
            for label, venv, sargs in CASES:
                if args.only and label not in args.only:
                    continue
                r = run_case(label, venv, sargs, system, threads, args.steps, args.budget, out,
                             openmm_threads=args.openmm_threads)
                if r:
                    records.append(r)
    if args.scaling:
        cases = {c[0]: c for c in CASES}
        unknown = [lab for lab in args.scaling_labels if lab not in cases]
        if unknown:
            raise SystemExit(f"unknown --scaling-labels {unknown}; known: {sorted(cases)}")
        for system in args.scaling_systems:
            for label, venv, sargs in [cases[lab] for lab in args.scaling_labels]:
                if args.only and label not in args.only:
                    continue
                r = run_case(label, venv, sargs, system, 1, args.steps, args.budget, out, warmup=3)
                if r:
                    records.append(r)
    write_report(records, args)


def write_report(records, args):
    m = records[0]["machine"] if records else {}
    parts = ["<!-- written by benchmarks/speed.py -->", "",
             f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, Python {m.get('python', '?')}; "
             f"openmlip venv: {', '.join(f'{k} {v}' for k, v in m.get('versions', {}).items())}.", ""]
    for threads in sorted({(r["threads"]["torch"], r["threads"]["openmm"]) for r in records if r["system"] in args.systems}):
        parts += [f"### ms/step, {threads[0]} torch + {threads[1]} OpenMM thread(s)", "", table(records, args.systems, threads), ""]
    parts += ["### Versions", "", versions_table(records), ""]
    scal = [r for r in records if r["system"].startswith("water-") and r["threads"]["torch"] == 1]
    if args.scaling and scal:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 4))
        markers = iter("osD^vP*Xh<>" * 3)
        for label in sorted({r["label"] for r in scal}):
            pts = sorted((r["atoms"], r["ms_per_step"]) for r in scal if r["label"] == label)
            if len(pts) < 2:
                continue  # measured at one size only: no scaling to show
            ours = label.startswith("openmlip")
            ax.loglog(*zip(*pts), "-", marker=next(markers), lw=2.2 if ours else 1.2, ms=5, alpha=1 if ours else 0.8,
                      label=label)
        xs = [192, 20577]
        ax.loglog(xs, [1e-1 * x / xs[0] * 10 for x in xs], "k:", lw=0.8, label="∝ N")
        ax.set(xlabel="atoms (water box)", ylabel="ms / MD step", title="OpenMM CPU, 1 thread, float32")
        ax.legend(fontsize=7)
        fig.tight_layout()
        img = ROOT / "docs" / "img"
        img.mkdir(parents=True, exist_ok=True)
        fig.savefig(img / "scaling.png", dpi=120)
        parts += ["### Scaling (water boxes, 1 thread)", "", "| label | atoms | ms/step | steps |", "| --- | --- | --- | --- |"]
        parts += [f"| {r['label']} | {r['atoms']} | {r['ms_per_step']:.4g} | {r['steps']} |"
                  for r in sorted(scal, key=lambda r: (r["label"], r["atoms"]))]
        parts += ["", "![scaling](img/scaling.png)", ""]
    Path(args.report).write_text("\n".join(parts))
    print(f"report {args.report}")


if __name__ == "__main__":
    main()
