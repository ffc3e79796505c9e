"""``openmlip analyze``: bond lengths, RDF and MSD of a trajectory -> CSV/JSON + PNG plots + Markdown report."""
from __future__ import annotations

import json
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import units
from ..errors import ConfigError, DataFileError
from .trajectory import compute_bond_lengths, compute_msd, compute_rdf


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _check_topology_size(path: str, topology: str) -> None:
    """:class:`DataFileError` when ``topology`` has another number of atoms than the frames of ``path``."""
    import mdtraj

    if isinstance(topology, mdtraj.Topology):
        top = topology
    else:
        try:
            top = mdtraj.load_topology(topology)
        except Exception as exc:  # noqa: BLE001  -- PDB/prmtop readers raise many types
            raise DataFileError(f"topology {topology!r} cannot be read ({type(exc).__name__}): give a PDB or prmtop of "
                                "the system the trajectory was written from") from None
    try:
        with mdtraj.open(path) as fh:
            first = fh.read(n_frames=1)
        n = int((first[0] if isinstance(first, tuple) else first).shape[1])
    except Exception:  # noqa: BLE001  -- unreadable: load_trajectory's own message follows
        return
    if n != top.n_atoms:
        raise DataFileError(f"trajectory {path!r} has {n} atoms per frame but the topology {topology!r} has {top.n_atoms}: "
                            "pass --top the structure the trajectory was written from")


def load_trajectory(path, topology=None):
    """An ``mdtraj.Trajectory`` with at least one frame; :class:`DataFileError` for an empty, truncated or foreign
    file, or a ``topology`` (a PDB/prmtop path or an ``mdtraj.Topology``; needed for DCD/XTC) of another size."""
    import mdtraj

    path = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"trajectory {path!r} not found")
    if topology is None and not path.endswith(".h5"):
        raise ConfigError(f"{path!r} carries no topology: pass --top (PDB/prmtop) for DCD/XTC trajectories")
    if topology is not None and not isinstance(topology, mdtraj.Topology) and not Path(topology).is_file():
        raise FileNotFoundError(f"topology {topology!r} not found")
    if topology is not None:
        _check_topology_size(path, topology)
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


#: the numbers each kind of analysis reports that a system spec may check (``expected``: ``name.key``);
#: the MSD's Yeh–Hummer pair needs a viscosity
OBSERVABLES = {
    "bonds": ("mean_A", "sem_A", "min_A", "max_A"),
    "rdf": ("first_peak_A", "g_max", "coordination_at_first_min", "r_max_A"),
    "msd": ("D_1e-5_cm2_per_s", "D_err_1e-5_cm2_per_s", "D_blocks_1e-5_cm2_per_s", "D_fit_err_1e-5_cm2_per_s",
            "D_infinite_1e-5_cm2_per_s", "yeh_hummer_1e-5_cm2_per_s"),
}
VISCOSITY_OBSERVABLES = ("D_infinite_1e-5_cm2_per_s", "yeh_hummer_1e-5_cm2_per_s")


def _coordination_at_first_min(r) -> Optional[float]:
    """Coordination number at the first minimum of g after its main peak (None if g has no such minimum)."""
    g, n = r["g"], r["coordination"]
    k = int(np.argmax(g))
    after = g[k:]
    if len(after) < 3:
        return None
    j = k + int(np.argmin(after[: max(3, len(after) // 2)]))
    return float(n[j]) if j > k else None


@dataclass
class Bonds:
    """Bond lengths between two elements (bonded in the topology, else within 1.3 Å in the first frame)."""

    elements: Tuple[str, str]
    selection: Optional[str] = None  # only pairs whose two atoms are selected
    name: Optional[str] = None  # default bonds_A-B


@dataclass
class RDF:
    """g(r) and the running coordination number of selection ``b`` around selection ``a``."""

    a: str
    b: str
    r_max_nm: Optional[float] = None  # default DEFAULT_R_MAX_NM, lowered to fit the box
    bin_width_nm: float = 0.005
    name: Optional[str] = None  # default rdf_<k>


@dataclass
class MSD:
    """Mean squared displacement and diffusion coefficient of a selection."""

    selection: str
    fit_window_ps: Optional[Tuple[float, float]] = None  # default 10-50 % of the longest lag
    viscosity_mPa_s: Optional[float] = None  # enables the Yeh-Hummer correction
    name: Optional[str] = None  # default msd_<k>


@dataclass(frozen=True)
class Section:
    """One analysis in the Markdown report: a heading, one paragraph and its plot ``<image>.png``."""

    heading: str
    text: str
    image: str

    def markdown(self, folder: str = "") -> List[str]:
        """The section's lines, the plot linked as ``<folder><image>.png`` (``folder``: the analysis folder as seen
        from the page that shows the section, ``""`` in the folder itself)."""
        return [f"## {self.heading}", "", self.text, "", f"![{self.image}]({folder}{self.image}.png)", ""]


@dataclass(frozen=True)
class AnalysisReport:
    """The analyses of a trajectory as Markdown: a line on the frames, then one :class:`Section` per analysis;
    ``report.md`` of the analysis folder, and the body of any page that includes the analyses."""

    summary: str
    sections: Tuple[Section, ...]

    def markdown(self, folder: str = "") -> List[str]:
        """The report's lines without a title, plots linked as in :meth:`Section.markdown`."""
        return [self.summary, ""] + [line for section in self.sections for line in section.markdown(folder)]


def _save_plot(fig, path: Path) -> None:
    plt = _plt()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bonds(traj, job: Bonds, tag: str, out: Path):
    a, b = job.elements
    r = compute_bond_lengths(traj, elements=(a, b), selection=job.selection)
    d_A = units.NM_TO_ANGSTROM * r["distances"]
    np.savetxt(out / f"{tag}.csv", np.column_stack([r["time"], d_A]), delimiter=",",
               header="time_ps," + ",".join(f"{i}-{j}_A" for i, j in r["pairs"]), comments="")
    fig, ax = _plt().subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(r["time"], d_A, lw=0.8)
    ax[0].set(xlabel="time (ps)", ylabel=f"{a}–{b} (Å)")
    ax[1].hist(d_A.ravel(), bins=40)
    ax[1].set(xlabel=f"{a}–{b} (Å)", ylabel="count")
    _save_plot(fig, out / f"{tag}.png")
    mean, sem = units.NM_TO_ANGSTROM * r["mean"], units.NM_TO_ANGSTROM * r["sem"]
    result = {"mean_A": mean, "sem_A": sem, "min_A": float(d_A.min()), "max_A": float(d_A.max()), "pairs": r["pairs"].tolist()}
    text = f"Mean {mean:.4f} ± {sem:.4f} Å (block-averaged standard error, {len(r['pairs'])} bonds)."
    return result, Section(f"{a}–{b} bond lengths", text, tag)


def _rdf(traj, job: RDF, tag: str, out: Path):
    r = compute_rdf(traj, job.a, job.b, r_max=job.r_max_nm, bin_width=job.bin_width_nm)
    r_A = units.NM_TO_ANGSTROM * r["r"]
    np.savetxt(out / f"{tag}.csv", np.column_stack([r_A, r["g"], r["coordination"]]), delimiter=",",
               header="r_A,g,coordination", comments="")
    k = int(np.argmax(r["g"]))
    n_first = _coordination_at_first_min(r)
    fig, ax = _plt().subplots(figsize=(5.5, 3.4))
    ax.plot(r_A, r["g"], color="C0")
    ax.set(xlabel="r (Å)", ylabel="g(r)", title=f"{job.a} / {job.b}")
    twin = ax.twinx()  # the running coordination number: neighbours within r
    twin.plot(r_A, r["coordination"], color="C1", ls="--")
    twin.set_ylabel("coordination n(r)", color="C1")
    _save_plot(fig, out / f"{tag}.png")
    result = {"selections": [job.a, job.b], "first_peak_A": float(r_A[k]), "g_max": float(r["g"][k]),
              "coordination_at_first_min": n_first, "r_max_A": units.NM_TO_ANGSTROM * r["r_max"]}
    text = (f"First peak at {r_A[k]:.2f} Å (g = {r['g'][k]:.2f}; range 0–{units.NM_TO_ANGSTROM * r['r_max']:.2f} Å)"
            + (f"; {n_first:.2f} neighbours within its first minimum" if n_first is not None else "") + ".")
    return result, Section(f"RDF `{job.a}` – `{job.b}`", text, tag)


def _msd(traj, job: MSD, tag: str, out: Path, temperature_K: Optional[float]):
    r = compute_msd(traj, job.selection, tuple(job.fit_window_ps) if job.fit_window_ps else None,
                    temperature_K=temperature_K, viscosity_mPa_s=job.viscosity_mPa_s)
    np.savetxt(out / f"{tag}.csv", np.column_stack([r["lag_time"], units.NM2_TO_ANGSTROM2 * r["msd"]]), delimiter=",",
               header="lag_ps,msd_A2", comments="")
    lo, hi = r["fit_window_ps"]
    fig, ax = _plt().subplots(figsize=(5.5, 3.4))
    ax.plot(r["lag_time"], units.NM2_TO_ANGSTROM2 * r["msd"], label="MSD")
    ax.axvspan(lo, hi, color="0.85", label="fit window")
    t = np.array([lo, hi])
    ax.plot(t, units.NM2_TO_ANGSTROM2 * (6 * r["D_nm2_per_ps"] * t + r["fit_intercept_nm2"]), "k--", label="6Dt + c")
    ax.set(xlabel="lag (ps)", ylabel="MSD (Å²)", title=job.selection)
    ax.legend(frameon=False)
    _save_plot(fig, out / f"{tag}.png")
    keys = ("D_1e-5_cm2_per_s", "D_err_1e-5_cm2_per_s", "D_err_method", "D_blocks_1e-5_cm2_per_s",
            "D_fit_err_1e-5_cm2_per_s", "D_infinite_1e-5_cm2_per_s", "yeh_hummer_1e-5_cm2_per_s", "viscosity_mPa_s")
    result = {"selection": job.selection, **{k: r[k] for k in keys if k in r}, "fit_window_ps": [lo, hi]}
    line = (f"D = {r['D_1e-5_cm2_per_s']:.3g} ± {r['D_err_1e-5_cm2_per_s']:.2g} × 10⁻⁵ cm²/s (fit {lo:.3g}–{hi:.3g} ps; "
            f"error: {r['D_err_method']}; error of the single fit {r['D_fit_err_1e-5_cm2_per_s']:.2g}).")
    if "D_infinite_1e-5_cm2_per_s" in r:
        line += (f" Yeh–Hummer (η = {job.viscosity_mPa_s:g} mPa·s, L = {r['box_edge_nm']:.3f} nm): D∞ = "
                 f"{r['D_infinite_1e-5_cm2_per_s']:.3g} × 10⁻⁵ cm²/s (+{r['yeh_hummer_1e-5_cm2_per_s']:.2g}).")
    return result, Section(f"MSD `{job.selection}`", line, tag)


def analyze(traj, out_dir, analyses: Sequence[Union[Bonds, RDF, MSD]], temperature_K: Optional[float] = None,
            extra: Optional[Callable[[Dict[str, object]], Dict[str, str]]] = None) -> Dict[str, object]:
    """Run the analyses, write CSV + PNG per analysis, ``results.json`` and ``report.md`` into ``out_dir``.

    Result keys are each analysis's ``name`` (system specs name them), else ``bonds_A-B``, ``rdf_<k>``,
    ``msd_<k>``.  Lengths in the results are in Å, D in 1e-5 cm²/s.  ``temperature_K`` is the run's
    temperature (for the Yeh–Hummer correction of an MSD with a viscosity).  ``extra(results)`` may add
    results and return more files (name -> text) for the folder.

    The folder is written whole: into a temporary folder that then replaces ``out_dir``
    (:func:`~openmlip._io.replaced_dir`), so an interrupted or failed analysis leaves the previous one intact,
    and a finished one never sits beside another trajectory's files.
    """
    return analyze_with_report(traj, out_dir, analyses, temperature_K, extra)[0]


def analyze_with_report(traj, out_dir, analyses: Sequence[Union[Bonds, RDF, MSD]], temperature_K: Optional[float] = None,
                        extra: Optional[Callable[[Dict[str, object]], Dict[str, str]]] = None
                        ) -> Tuple[Dict[str, object], AnalysisReport]:
    """:func:`analyze`, returning the results and the report (:class:`AnalysisReport`, ``report.md`` without its
    title) for a page that includes the analyses."""
    from .._io import replaced_dir

    with replaced_dir(out_dir, "analysis output", "results.json") as out:
        results: Dict[str, object] = {"frames": int(traj.n_frames), "atoms": int(traj.n_atoms)}
        sections: List[Section] = []
        for job in analyses:
            if isinstance(job, Bonds):
                tag = job.name or f"bonds_{job.elements[0]}-{job.elements[1]}"
                result, section = _bonds(traj, job, tag, out)
            elif isinstance(job, RDF):
                tag = job.name or f"rdf_{len(results)}"
                result, section = _rdf(traj, job, tag, out)
            elif isinstance(job, MSD):
                tag = job.name or f"msd_{len(results)}"
                result, section = _msd(traj, job, tag, out, temperature_K)
            else:
                raise TypeError(f"unknown analysis {job!r}: use Bonds, RDF or MSD")
            results[tag] = result
            sections.append(section)
        report = AnalysisReport(f"{traj.n_frames} frames, {traj.n_atoms} atoms, "
                                f"{float(traj.time[-1] - traj.time[0]) if traj.n_frames > 1 else 0:.3f} ps.", tuple(sections))
        files = extra(results) if extra is not None else {}
        files = {"results.json": json.dumps(results, indent=1),
                 "report.md": "\n".join(["# Analysis report", ""] + report.markdown()), **files}
        for name, text in files.items():
            (out / name).write_text(text)
    return results, report
