"""ML/MM speed by embedding, side by side in one run: pure MM, mechanical, electrostatic with the split long
range (the default) and with the exact in-graph PME, for a charged and a neutral ML region.

    python benchmarks/embedding_speed.py            # ~6 min on 2 cores; writes benchmarks/results/embedding-speed.jsonl
                                                    # and prints the table (benchmarks/results/embedding-speed.md)

Each row is a fresh process through openmm-ml's ``createMixedSystem`` with the shipped default potential in float32
(benchmarks/bench_openmlip.py, benchmarks/harness.py): OpenMM CPU platform, LangevinMiddle 0.5 fs, 20 warm-up steps,
then 100 measured (fewer when slow: stated), 1 torch + 1 OpenMM thread (``--threads`` to change both).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from speed import run_case  # noqa: E402

MODEL = "openmlip-xtb-v7"
SYSTEMS = ["ammonium-water", "ala2-mlmm"]
BENCH = str(HERE / "bench_openmlip.py")
CASES = [
    ("pure MM", [BENCH, "--model", "mm"]),
    ("mechanical", [BENCH, "--model", MODEL, "--embedding", "mechanical"]),
    ("electrostatic, split", [BENCH, "--model", MODEL, "--embedding", "electrostatic", "--long-range", "split"]),
    ("electrostatic, pme", [BENCH, "--model", MODEL, "--embedding", "electrostatic", "--long-range", "pme"]),
]


def table(records, threads):
    by = {(r["label"], r["system"]): r for r in records}
    head = "| embedding | " + " | ".join(f"{s} (ms/step)" for s in SYSTEMS) + " | " + " | ".join(f"{s} ÷ MM" for s in SYSTEMS) + " |"
    lines = [f"{MODEL}, float32, OpenMM CPU platform, {threads} torch + {threads} OpenMM thread(s), LangevinMiddle 0.5 fs", "",
             head, "|" + " --- |" * (1 + 2 * len(SYSTEMS))]
    for label, _ in CASES:
        cells, ratios = [], []
        for s in SYSTEMS:
            r, mm = by.get((label, s)), by.get(("pure MM", s))
            cells.append("—" if r is None else f"{r['ms_per_step']:.2f} ({r['steps']} steps)")
            ratios.append("—" if r is None or mm is None else f"{r['ms_per_step'] / mm['ms_per_step']:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--budget", type=float, default=60.0, help="seconds of measured steps per row at most")
    ap.add_argument("--out", default=str(HERE / "results" / "embedding-speed.jsonl"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    run_file = out.with_suffix(".run.jsonl")  # this run's rows; appended to `out` once the run is complete
    run_file.unlink(missing_ok=True)
    records = []
    for system in SYSTEMS:
        for label, script in CASES:
            rec = run_case(label, None, script, system, args.threads, args.steps, args.budget, run_file)
            if rec is not None:
                records.append(rec)
    with open(out, "a") as fh:
        fh.write(run_file.read_text())
    run_file.unlink()
    text = table(records, args.threads)
    out.with_suffix(".md").write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
