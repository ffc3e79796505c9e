"""Gather the unit files of a leg into ΔG estimates, plots, ``results.json`` and ``report.md``.

For a leg folder ``out`` (see :mod:`openmlip.fe.engine`)::

    out/results.json     MBAR, BAR, Jarzynski ΔG (kT, kJ/mol, kcal/mol) ± bootstrap errors, overlap matrix,
                         statistical inefficiencies, convergence, wall times
    out/report.md        the same as a page, with the plots
    out/overlap.png      MBAR overlap matrix
    out/convergence.png  ΔG vs fraction of the data: MBAR forward/reverse in time, BAR/Jarzynski vs switches
    out/work.png         forward work W_F and negated reverse work −W_R (they cross at ΔG, Crooks)
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .._io import atomic_path
from ..errors import DataFileError
from ..markdown import markdown_table
from ..units import KCAL_PER_MOL_TO_KJ_PER_MOL
from ..store import RunStore, read_npz, write_json
from .engine import DIRECTIONS, FESettings, switch_file, window_file
from .estimators import mbar, mbar_convergence, neq, neq_convergence, statistical_inefficiency, subsample


def _energies(dg_kT: float, err_kT: float, kT: float) -> Dict[str, float]:
    return {"dg_kT": dg_kT, "err_kT": err_kT, "dg_kJmol": dg_kT * kT, "err_kJmol": err_kT * kT,
            "dg_kcalmol": dg_kT * kT / KCAL_PER_MOL_TO_KJ_PER_MOL, "err_kcalmol": err_kT * kT / KCAL_PER_MOL_TO_KJ_PER_MOL}


def missing_units(out, settings: FESettings, windows: bool = True, switches: bool = True) -> List[str]:
    """Names of the unit files not yet written (``window 3``, ``forward 0``, ...)."""
    miss = []
    if windows:
        miss += [f"window {k}" for k in range(len(settings.lambdas)) if not window_file(out, k).exists()]
    if switches:
        miss += [f"{d} {b}" for d in DIRECTIONS for b in range(settings.n_batches) if not switch_file(out, d, b).exists()]
    return miss


def leg_units(settings: FESettings, kind: str, paths: List[Path]) -> List[Dict[str, Any]]:
    """The unit files ``paths`` of one kind of a leg, checked to be one calculation: each made with ``settings`` and all
    with the System of the first (a :class:`~openmlip.errors.ResumeError` names what differs)."""
    recorded = read_npz(paths[0])["meta"].get("settings") or {}
    store = RunStore(paths[0].parent, f"free-energy {kind}", {**recorded, **settings.unit_settings(kind)})
    return [store.load_npz(p.name) for p in paths]


def gather(out, settings: FESettings, windows: bool = True, switches: bool = True, title: str = "",
           extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Estimate ΔG(λ=0 → λ=1) of a leg from its unit files; writes results.json, report.md and plots."""
    out = Path(out)
    miss = missing_units(out, settings, windows, switches)
    if miss:
        raise DataFileError(f"{out}: cannot gather, {len(miss)} unit(s) not finished: {', '.join(miss[:8])}"
                            f"{' ...' if len(miss) > 8 else ''}; run them first (openmlip fe ... --window K / --switch DIR:B)")
    kT = settings.kT
    res: Dict[str, Any] = {"title": title, "kT_kJmol": kT, "temperature_K": settings.temperature_K,
                           "lambdas": settings.lambdas, "settings": {k: v for k, v in vars(settings).items()},
                           "gathered": time.strftime("%Y-%m-%d %H:%M:%S"), **(extra or {})}
    wall = 0.0
    platforms = set()
    if windows:
        u_list, ineff, n_raw, mean_du, std_du, ms = [], [], [], [], [], []
        for d in leg_units(settings, "window", [window_file(out, k) for k in range(len(settings.lambdas))]):
            du = d["e_end"][:, 1] - d["e_end"][:, 0]
            g = statistical_inefficiency(du)
            idx = subsample(du, g)
            u_list.append(d["u_kn"][:, idx])
            ineff.append(g)
            n_raw.append(len(du))
            mean_du.append(float(np.mean(du)))
            std_du.append(float(np.std(du)))
            ms.append(d["meta"].get("ms_per_step"))
            wall += float(d["meta"].get("wall_s", 0.0))
            platforms.add(d["meta"].get("platform"))
        m = mbar(u_list, n_bootstrap=settings.bootstrap, seed=settings.seed)
        conv = mbar_convergence(u_list, n_bootstrap=min(20, settings.bootstrap), seed=settings.seed)
        res["mbar"] = {**m, **_energies(m["dg_kT"], m["err_kT"], kT),
                       "err_analytic_kJmol": m["err_analytic_kT"] * kT,
                       "statistical_inefficiency": ineff, "raw_samples": n_raw,
                       "mean_dU_kJmol": mean_du, "std_dU_kJmol": std_du, "ms_per_step": ms, "convergence": conv}
    if switches:
        works = {}
        files = leg_units(settings, "switch", [switch_file(out, d_, b) for d_ in DIRECTIONS for b in range(settings.n_batches)])
        for i, d_ in enumerate(DIRECTIONS):
            parts = []
            for d in files[i * settings.n_batches:(i + 1) * settings.n_batches]:
                parts.append(d["works"])
                wall += float(d["meta"].get("wall_s", 0.0))
                platforms.add(d["meta"].get("platform"))
            works[d_] = np.concatenate(parts)
        r = neq(works["forward"], works["reverse"], n_bootstrap=settings.bootstrap, seed=settings.seed)
        for key in ("bar", "jarzynski_forward", "jarzynski_reverse"):
            r[key].update(_energies(r[key]["dg_kT"], r[key]["err_kT"], kT))
        r["convergence"] = neq_convergence(works["forward"], works["reverse"], n_bootstrap=min(50, settings.bootstrap),
                                           seed=settings.seed)
        r["works_kT"] = {d_: works[d_].tolist() for d_ in DIRECTIONS}
        r["switch_steps"] = settings.switch_stages * settings.switch_stage_steps
        res["neq"] = r
    res["wall_s"] = wall
    res["platforms"] = sorted(p for p in platforms if p)
    _plots(out, res)
    write_json(out / "results.json", res)
    write_report(out, res)
    return res


def _plots(out: Path, res: Dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kT = res["kT_kJmol"]
    if "mbar" in res:
        ov = np.asarray(res["mbar"]["overlap"])
        fig, ax = plt.subplots(figsize=(1.2 + 0.45 * len(ov), 1.0 + 0.45 * len(ov)))
        ax.imshow(ov, cmap="Blues", vmin=0, vmax=max(0.5, float(ov.max())))
        for i in range(len(ov)):
            for j in range(len(ov)):
                if ov[i, j] >= 0.005:
                    ax.text(j, i, f"{ov[i, j]:.2f}", ha="center", va="center", fontsize=6)
        lab = [f"{x:g}" for x in res["lambdas"]]
        ax.set_xticks(range(len(ov)), lab, rotation=90, fontsize=7)
        ax.set_yticks(range(len(ov)), lab, fontsize=7)
        ax.set_xlabel("λ")
        ax.set_ylabel("λ")
        ax.set_title("MBAR overlap")
        fig.tight_layout()
        fig.savefig(out / "overlap.png", dpi=120)
        plt.close(fig)
    n_panels = ("mbar" in res) + ("neq" in res)
    fig, axes = plt.subplots(1, n_panels, figsize=(5 * n_panels, 3.6), squeeze=False)
    i = 0
    if "mbar" in res:
        ax = axes[0, i]
        i += 1
        for key, style in (("forward", "o-"), ("reverse", "s--")):
            rows = res["mbar"]["convergence"][key]
            if not rows:
                continue
            x = [r["fraction"] for r in rows]
            y = np.array([r["dg_kT"] for r in rows]) * kT
            e = np.array([r["err_kT"] for r in rows]) * kT
            ax.errorbar(x, y, yerr=e, fmt=style, capsize=3, label=f"MBAR, {key} in time")
        ax.axhline(res["mbar"]["dg_kJmol"], color="k", lw=0.8)
        ax.set_xlabel("fraction of each window's samples")
        ax.set_ylabel("ΔG (kJ/mol)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.set_title("no convergence curve: windows do not overlap", fontsize=8)
    if "neq" in res:
        ax = axes[0, i]
        rows = res["neq"]["convergence"]
        x = [r["fraction"] for r in rows]
        b = np.array([r["bar_kT"] for r in rows]) * kT
        be = np.array([r["bar_err_kT"] for r in rows]) * kT
        ax.errorbar(x, b, yerr=be, fmt="o-", capsize=3, label="BAR")
        ax.plot(x, np.array([r["jf_kT"] for r in rows]) * kT, "^:", label="Jarzynski forward")
        ax.plot(x, np.array([r["jr_kT"] for r in rows]) * kT, "v:", label="Jarzynski reverse")
        ax.axhline(res["neq"]["bar"]["dg_kJmol"], color="k", lw=0.8)
        ax.set_xlabel("fraction of the switches")
        ax.set_ylabel("ΔG (kJ/mol)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "convergence.png", dpi=120)
    plt.close(fig)
    if "neq" in res:
        wf = np.asarray(res["neq"]["works_kT"]["forward"]) * kT
        wr = -np.asarray(res["neq"]["works_kT"]["reverse"]) * kT
        fig, ax = plt.subplots(figsize=(5, 3.4))
        bins = np.linspace(min(wf.min(), wr.min()), max(wf.max(), wr.max()), 25)
        ax.hist(wf, bins=bins, alpha=0.5, label="W forward (MM→ML)")
        ax.hist(wr, bins=bins, alpha=0.5, label="−W reverse (ML→MM)")
        ax.axvline(res["neq"]["bar"]["dg_kJmol"], color="k", lw=1, label="ΔG (BAR)")
        ax.set_xlabel("work (kJ/mol)")
        ax.set_ylabel("switches")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "work.png", dpi=120)
        plt.close(fig)


def _row(name: str, d: Dict[str, float]) -> Tuple[str, str, str, str]:
    return (name, f"{d['dg_kJmol']:.3f} ± {d['err_kJmol']:.3f}", f"{d['dg_kcalmol']:.3f} ± {d['err_kcalmol']:.3f}",
            f"{d['dg_kT']:.3f} ± {d['err_kT']:.3f}")


def write_report(out, res: Dict[str, Any]) -> Path:
    out = Path(out)
    s = res["settings"]
    kT = res["kT_kJmol"]
    lines = [f"# Free-energy correction{': ' + res['title'] if res.get('title') else ''}", "",
             f"ΔG from λ = 0 to λ = 1 of `lambda_interpolate` (MM → ML/MM for openmlip systems). "
             f"T = {res['temperature_K']:g} K, kT = {kT:.4f} kJ/mol = {kT / KCAL_PER_MOL_TO_KJ_PER_MOL:.4f} kcal/mol. "
             f"Errors: bootstrap standard errors ({s['bootstrap']} resamples).", ""]
    estimates = []
    if "mbar" in res:
        estimates.append(_row("MBAR (λ windows)", res["mbar"]))
    if "neq" in res:
        n = res["neq"]
        estimates += [_row("BAR (NEQ switches)", n["bar"]), _row("Jarzynski forward", n["jarzynski_forward"]),
                      _row("Jarzynski reverse", n["jarzynski_reverse"])]
    lines += markdown_table(["estimator", "ΔG (kJ/mol)", "ΔG (kcal/mol)", "ΔG (kT)"], estimates)
    lines += ["", f"Wall time of all units together: {res['wall_s']:.0f} s on {', '.join(res['platforms']) or '?'} "
              f"({s['threads']} thread(s)).", ""]
    if "mbar" in res:
        m = res["mbar"]
        lines += ["## λ windows (MBAR)", "",
                  f"{len(res['lambdas'])} windows; each: {s['minimize_iterations']} minimisation iterations, "
                  f"{s['equilibrate_steps']} equilibration steps "
                  f"(friction {s.get('equilibrate_friction_per_ps', s['friction_per_ps']):g}/ps), "
                  f"then {s['samples']} samples every "
                  f"{s['sample_interval']} steps of {s['timestep_fs']:g} fs Langevin MD (friction "
                  f"{s['friction_per_ps']:g}/ps); samples subsampled by each window's statistical inefficiency of "
                  f"ΔU = E_1 − E_0. pymbar's analytic error: {m['err_analytic_kJmol']:.3f} kJ/mol. "
                  f"Smallest neighbour overlap: {m['min_neighbour_overlap']:.3g} "
                  + ("(**below 0.03: add windows between those λ**)." if m["min_neighbour_overlap"] < 0.03
                     else "(above 0.03: the windows overlap).")
                  + (" **Neighbouring windows do not overlap: this ΔG is not determined by the data (no error "
                     "bar); add windows or samples.**" if not math.isfinite(m["err_kT"]) else ""), ""]
        windows = [(k, f"{lam:g}", f"{m['raw_samples'][k]} ({m['samples'][k]})", f"{m['statistical_inefficiency'][k]:.1f}",
                    f"{m['mean_dU_kJmol'][k]:.2f}", f"{m['std_dU_kJmol'][k]:.2f}",
                    f"{m['neighbour_overlap'][k]:.3f}" if k < len(res["lambdas"]) - 1 else "")
                   for k, lam in enumerate(res["lambdas"])]
        lines += markdown_table(["window", "λ", "samples (uncorrelated)", "g", "⟨ΔU⟩ (kJ/mol)", "σ(ΔU) (kJ/mol)",
                                 "overlap with next"], windows)
        lines += ["", "![overlap](overlap.png)", ""]
    if "neq" in res:
        n = res["neq"]
        lines += ["## Non-equilibrium switches (BAR, Jarzynski)", "",
                  f"{n['switches'][0]} forward (λ 0→1) and {n['switches'][1]} reverse switches of "
                  f"{n['switch_steps']} steps ({s['switch_stages']} λ increments, {s['switch_stage_steps']} steps "
                  f"each), from equilibrium MD at the start state ({s['switch_decorrelation_steps']} steps apart). "
                  f"⟨W_F⟩ = {n['mean_work_kT'][0] * kT:.3f} kJ/mol (σ {n['std_work_kT'][0] * kT:.3f}), "
                  f"⟨W_R⟩ = {n['mean_work_kT'][1] * kT:.3f} kJ/mol (σ {n['std_work_kT'][1] * kT:.3f}); "
                  f"dissipation {n['dissipation_kT'][0]:.2f} / {n['dissipation_kT'][1]:.2f} kT "
                  "(Jarzynski is biased when it is large; BAR is the one to quote).", "",
                  "![work](work.png)", ""]
    lines += ["## Convergence", "", "![convergence](convergence.png)", ""]
    if "mbar" in res:
        conv = res["mbar"]["convergence"]
        lines += markdown_table(["fraction", "MBAR forward (kJ/mol)", "MBAR reverse (kJ/mol)"],
                                [(f"{f['fraction']:.1f}", f"{f['dg_kT'] * kT:.3f} ± {f['err_kT'] * kT:.3f}",
                                  f"{r['dg_kT'] * kT:.3f} ± {r['err_kT'] * kT:.3f}")
                                 for f, r in zip(conv["forward"], conv["reverse"])])
        lines.append("")
    if "neq" in res:
        lines += markdown_table(["fraction of switches", "BAR (kJ/mol)", "Jarzynski fwd", "Jarzynski rev"],
                                [(f"{r['fraction']:.1f}", f"{r['bar_kT'] * kT:.3f} ± {r['bar_err_kT'] * kT:.3f}",
                                  f"{r['jf_kT'] * kT:.3f}", f"{r['jr_kT'] * kT:.3f}") for r in res["neq"]["convergence"]])
        lines.append("")
    with atomic_path(out / "report.md") as tmp:
        Path(tmp).write_text("\n".join(lines))
    return out / "report.md"


def best(res: Dict[str, Any]) -> Dict[str, float]:
    """The estimate to quote for a leg: MBAR when there are windows, else BAR."""
    return res["mbar"] if "mbar" in res else res["neq"]["bar"]


def difference(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    """ΔΔG = ΔG(a) − ΔG(b) per estimator present in both, errors added in quadrature."""
    out = {}
    pairs = [("mbar", lambda r: r.get("mbar")), ("bar", lambda r: r.get("neq", {}).get("bar"))]
    for name, get in pairs:
        x, y = get(a), get(b)
        if x is None or y is None:
            continue
        kT = a["kT_kJmol"]
        out[name] = _energies(x["dg_kT"] - y["dg_kT"], math.hypot(x["err_kT"], y["err_kT"]), kT)
    return out
