"""``openmlip analyze``: bond lengths, RDF and MSD of a trajectory -> CSV/JSON + PNG plots + Markdown report."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import units
from ..errors import ConfigError, DataFileError
from . import compute_bond_lengths, compute_msd, compute_rdf


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def load_trajectory(path: str, topology: Optional[str] = None):
    """An ``mdtraj.Trajectory`` with at least one frame; :class:`DataFileError` for an empty, truncated or foreign file."""
    import mdtraj

    if not Path(path).is_file():
        raise FileNotFoundError(f"trajectory {path!r} not found")
    if topology is None and not path.endswith(".h5"):
        raise ConfigError(f"{path!r} carries no topology: pass --top (PDB/prmtop) for DCD/XTC trajectories")
    if topology is not None and not Path(topology).is_file():
        raise FileNotFoundError(f"topology {topology!r} not found")
    try:
        traj = mdtraj.load(path, top=topology) if topology else mdtraj.load(path)
    except Exception as exc:  # noqa: BLE001  -- HDF5/DCD readers raise many types for a damaged file
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise DataFileError(f"trajectory {path!r} ({Path(path).stat().st_size} bytes) cannot be read "
                            f"({type(exc).__name__}: {lines[-1][:160] if lines else 'no detail'}): it is empty, truncated or "
                            "not a trajectory; rerun the MD that writes it (openmlip md resumes) or check the path") from None
    if traj.n_frames == 0:
        raise DataFileError(f"trajectory {path!r} holds no frames: run the MD (further) before analysing it")
    return traj


def _coordination_at_first_min(r) -> Optional[float]:
    """Coordination number at the first minimum of g after its main peak (None if g has no such minimum)."""
    g, n = r["g"], r["coordination"]
    k = int(np.argmax(g))
    after = g[k:]
    if len(after) < 3:
        return None
    j = k + int(np.argmin(after[: max(3, len(after) // 2)]))
    return float(n[j]) if j > k else None


def analyze(traj, out_dir, bonds: Sequence[Tuple[str, str]] = (), rdfs: Sequence[Tuple[str, str]] = (),
            msds: Sequence[str] = (), r_max: Optional[float] = None, names: Optional[Dict[str, List[str]]] = None,
            bond_selections: Optional[Sequence[Optional[str]]] = None, r_maxes: Optional[Sequence[Optional[float]]] = None,
            fit_windows: Optional[Sequence[Optional[Sequence[float]]]] = None,
            bin_widths: Optional[Sequence[float]] = None) -> Dict[str, object]:
    """Run the analyses, write CSV + PNG per analysis, ``results.json`` and ``report.md`` into ``out_dir``.

    Result keys are ``names[kind][k]`` when given (system specs name them), else ``bonds_A-B``,
    ``rdf_<n>``, ``msd_<n>``.  Lengths in the results are in Å, D in 1e-5 cm²/s.  An RDF range (nm) of
    None is the default, lowered to fit the box (see :func:`openmlip.analysis.compute_rdf`).
    """
    from .._io import writable_dir

    plt = _plt()
    names = names or {}
    out = writable_dir(out_dir, "analysis output")
    results: Dict[str, object] = {"frames": int(traj.n_frames), "atoms": int(traj.n_atoms)}
    lines: List[str] = ["# Analysis report", "", f"{traj.n_frames} frames, {traj.n_atoms} atoms, "
                        f"{float(traj.time[-1] - traj.time[0]) if traj.n_frames > 1 else 0:.3f} ps.", ""]
    for k, (a, b) in enumerate(bonds):
        sel = bond_selections[k] if bond_selections else None
        r = compute_bond_lengths(traj, elements=(a, b), selection=sel)
        tag = names["bonds"][k] if names.get("bonds") else f"bonds_{a}-{b}"
        np.savetxt(out / f"{tag}.csv", np.column_stack([r["time"], units.NM_TO_ANGSTROM * r["distances"]]), delimiter=",",
                   header="time_ps," + ",".join(f"{i}-{j}_A" for i, j in r["pairs"]), comments="")
        fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
        ax[0].plot(r["time"], units.NM_TO_ANGSTROM * r["distances"], lw=0.8)
        ax[0].set(xlabel="time (ps)", ylabel=f"{a}–{b} (Å)")
        ax[1].hist(units.NM_TO_ANGSTROM * r["distances"].ravel(), bins=40)
        ax[1].set(xlabel=f"{a}–{b} (Å)", ylabel="count")
        fig.tight_layout()
        fig.savefig(out / f"{tag}.png", dpi=110)
        plt.close(fig)
        results[tag] = {"mean_A": units.NM_TO_ANGSTROM * r["mean"], "sem_A": units.NM_TO_ANGSTROM * r["sem"], "min_A": float(units.NM_TO_ANGSTROM * r["distances"].min()),
                        "max_A": float(units.NM_TO_ANGSTROM * r["distances"].max()), "pairs": r["pairs"].tolist()}
        lines += [f"## {a}–{b} bond lengths", "", f"Mean {units.NM_TO_ANGSTROM * r['mean']:.4f} ± {units.NM_TO_ANGSTROM * r['sem']:.4f} Å "
                  f"(block-averaged standard error, {len(r['pairs'])} bonds).", "", f"![{tag}]({tag}.png)", ""]
    for n, (sa, sb) in enumerate(rdfs):
        r = compute_rdf(traj, sa, sb, r_max=r_maxes[n] if r_maxes else r_max,
                        bin_width=bin_widths[n] if bin_widths else 0.005)
        tag = names["rdf"][n] if names.get("rdf") else f"rdf_{len(results)}"
        np.savetxt(out / f"{tag}.csv", np.column_stack([units.NM_TO_ANGSTROM * r["r"], r["g"], r["coordination"]]), delimiter=",",
                   header="r_A,g,coordination", comments="")
        k = int(np.argmax(r["g"]))
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(units.NM_TO_ANGSTROM * r["r"], r["g"])
        ax.set(xlabel="r (Å)", ylabel="g(r)", title=f"{sa} / {sb}")
        fig.tight_layout()
        fig.savefig(out / f"{tag}.png", dpi=110)
        plt.close(fig)
        results[tag] = {"selections": [sa, sb], "first_peak_A": float(units.NM_TO_ANGSTROM * r["r"][k]), "g_max": float(r["g"][k]),
                        "coordination_at_first_min": _coordination_at_first_min(r), "r_max_A": units.NM_TO_ANGSTROM * r["r_max"]}
        lines += [f"## RDF `{sa}` – `{sb}`", "", f"First peak at {units.NM_TO_ANGSTROM * r['r'][k]:.2f} Å (g = {r['g'][k]:.2f}; "
                  f"range 0–{units.NM_TO_ANGSTROM * r['r_max']:.2f} Å).", "",
                  f"![{tag}]({tag}.png)", ""]
    for k, sel in enumerate(msds):
        fw = fit_windows[k] if fit_windows else None
        r = compute_msd(traj, sel, tuple(fw) if fw else None)
        tag = names["msd"][k] if names.get("msd") else f"msd_{len(results)}"
        np.savetxt(out / f"{tag}.csv", np.column_stack([r["lag_time"], units.NM2_TO_ANGSTROM2 * r["msd"]]), delimiter=",",
                   header="lag_ps,msd_A2", comments="")
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(r["lag_time"], units.NM2_TO_ANGSTROM2 * r["msd"])
        ax.set(xlabel="lag (ps)", ylabel="MSD (Å²)", title=sel)
        fig.tight_layout()
        fig.savefig(out / f"{tag}.png", dpi=110)
        plt.close(fig)
        results[tag] = {"selection": sel, "D_1e-5_cm2_per_s": r["D_1e-5_cm2_per_s"], "D_err_1e-5_cm2_per_s": r["D_err_1e-5_cm2_per_s"],
                        "fit_window_ps": list(r["fit_window_ps"])}
        lines += [f"## MSD `{sel}`", "", f"D = {r['D_1e-5_cm2_per_s']:.3g} ± {r['D_err_1e-5_cm2_per_s']:.2g} × 10⁻⁵ cm²/s "
                  f"(fit {r['fit_window_ps'][0]:.3g}–{r['fit_window_ps'][1]:.3g} ps).", "", f"![{tag}]({tag}.png)", ""]
    from .._io import atomic_path

    for name, text in (("results.json", json.dumps(results, indent=1)), ("report.md", "\n".join(lines))):
        with atomic_path(out / name) as tmp:  # a crash never leaves a half-written result
            Path(tmp).write_text(text)
    return results
