"""Collect the workflow's results into one Markdown page (Snakemake script of rule report)."""
import json
from pathlib import Path

from openmlip.markdown import markdown_table
from openmlip.md.report import checks_table

sm = snakemake  # noqa: F821  (injected by Snakemake)
out = Path(sm.output[0])
lines = ["# openmlip workflow report", ""]
if sm.input.train:
    rep = json.loads(Path(sm.input.train[0]).read_text())
    t = rep.get("test") or rep.get("valid")
    lines += ["## Training", "", f"{rep['steps']} steps, {rep['epochs']} epochs; "
              f"{'test' if rep.get('test') else 'validation'} set: energy MAE {t['energy_mae_meV_per_atom']:.2f} "
              f"meV/atom, force MAE {t['forces_mae_meV_per_A']:.1f} meV/Å"
              + (f", charge MAE {t['charges_mae_e']:.4f} e" if 'charges_mae_e' in t else ""), ""]
rows, details = [], []
for checks_path, md_dir in zip(sm.input.checks, sm.input.md):
    run = json.loads((Path(md_dir) / "run.json").read_text())
    checks = json.loads(Path(checks_path).read_text())
    passed = sum(c["pass"] for c in checks)
    rel = Path(checks_path).parent.relative_to(out.parent)
    rows.append((f"[{run['system']}]({rel}/report.md)", f"{run['atoms']} ({run['ml_atoms']})", run["platform"],
                 f"{run['ms_per_step']:.2f}", f"{run['ns_per_day']:.3f}", f"{passed}/{len(checks)}"))
    details += [f"### {run['system']}", "", *checks_table(checks, notes=False), ""]
lines += ["## Systems", "", *markdown_table(["system", "atoms (ML)", "platform", "ms/step", "ns/day", "checks passed"], rows)]
lines += [""] + details
out.write_text("\n".join(lines))
