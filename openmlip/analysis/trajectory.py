"""Trajectory analyses in mdtraj's idiom: functions of an ``mdtraj.Trajectory`` and mdtraj selections,
distances from ``mdtraj.compute_distances`` (``periodic=True``: minimum image in triclinic boxes), lengths
in nm, times in ps.  Array-level cores (histograms, MSD, fits) live in :mod:`openmlip.analysis.core`.
"""
from __future__ import annotations

import warnings
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .. import units
from ..errors import ConfigError, SelectionError
from .core import (block_average, diffusion_coefficient, diffusion_replicas, msd_fft, rdf_accumulate, rdf_edges,
                   rdf_normalise, unwrap, yeh_hummer_correction)

#: frames per call of mdtraj.compute_distances in an RDF (bounds memory: frames x pairs floats)
RDF_FRAME_CHUNK = 64
#: contiguous time blocks for the error of a diffusion coefficient
D_BLOCKS = 5

#: RDF range (nm) when none is given; lowered to half the smallest box width when the box is smaller
DEFAULT_R_MAX_NM = 1.0


def _boxes(traj) -> Optional[np.ndarray]:
    return None if traj.unitcell_vectors is None else np.asarray(traj.unitcell_vectors, dtype=float)


def _distances(traj, pairs) -> np.ndarray:
    """[F, P] distances (nm, float64) of atom pairs, minimum image when the trajectory has a box."""
    import mdtraj

    return mdtraj.compute_distances(traj, np.asarray(pairs, dtype=int), periodic=traj.unitcell_vectors is not None
                                    ).astype(np.float64)


def selection_syntax_error(selection: str) -> Optional[str]:
    """mdtraj's complaint about the syntax of ``selection`` (shortened to one line), or None when it parses."""
    from mdtraj.core.selection import parse_selection

    try:
        parse_selection(str(selection))
    except Exception as exc:  # noqa: BLE001  -- mdtraj raises ValueError or pyparsing's ParseException
        text = " ".join(str(exc).split()).split(", (line:")[0]
        found = text.rfind(", found ")
        return ("expected a keyword, operator or value" + text[found:] if found > 0 else text)[:200]
    return None


def select(topology, selection: str, what: str = "selection") -> np.ndarray:
    """Atom indices of an mdtraj ``selection``; :class:`SelectionError` naming ``what`` when it does not parse or is empty."""
    complaint = selection_syntax_error(selection)
    if complaint:
        raise SelectionError(f"{what}: cannot parse selection {selection!r} ({complaint}); see mdtraj's atom selection language")
    idx = topology.select(str(selection))
    if len(idx) == 0:
        raise SelectionError(f"{what}: selection {selection!r} matches no atoms "
                             f"(residues here: {', '.join(sorted({r.name for r in topology.residues})[:12])})")
    return idx


def half_smallest_box_width(boxes: np.ndarray) -> float:
    """Half the smallest distance between opposite faces of the boxes [F, 3, 3] (nm): the largest r for which
    the minimum image finds every pair, so the largest valid RDF range."""
    vol = np.abs(np.linalg.det(boxes))
    faces = np.stack([np.cross(boxes[:, 1], boxes[:, 2]), np.cross(boxes[:, 2], boxes[:, 0]),
                      np.cross(boxes[:, 0], boxes[:, 1])], axis=1)
    return float(0.5 * np.min(vol[:, None] / np.linalg.norm(faces, axis=-1)))


def bonded_pairs(traj, elements: Tuple[str, str] = ("N", "H"), max_distance: float = 0.13,
                 selection: Optional[str] = None) -> np.ndarray:
    """Atom pairs of the two elements that are bonded in the topology, else within ``max_distance`` (nm) in frame 0.

    With ``selection`` (mdtraj syntax) only pairs whose two atoms are both selected count.
    """
    top = traj.topology
    a, b = elements
    if selection is not None:
        chosen = set(int(i) for i in select(top, selection, f"{a}-{b} bonds"))
    else:
        chosen = None
    pairs = [(x.index, y.index) for x, y in top.bonds
             if {x.element.symbol, y.element.symbol} == {a, b} or (a == b == x.element.symbol == y.element.symbol)]
    pairs = [(i, j) if top.atom(i).element.symbol == a else (j, i) for i, j in pairs]
    if chosen is not None:
        pairs = [(i, j) for i, j in pairs if i in chosen and j in chosen]
    if not pairs:  # no bonds in the topology: pairs within max_distance in frame 0
        ia = [at.index for at in top.atoms if at.element.symbol == a and (chosen is None or at.index in chosen)]
        ib = [at.index for at in top.atoms if at.element.symbol == b and (chosen is None or at.index in chosen)]
        cand = np.array([(i, j) for i in ia for j in ib if i != j], dtype=int).reshape(-1, 2)
        if len(cand):
            d = _distances(traj[0], cand)[0]
            pairs = [tuple(pq) for pq in cand[d < max_distance].tolist()]
    if not pairs:
        raise SelectionError(f"no {a}–{b} pairs found (bonded or within {max_distance} nm)"
                         + (f" in {selection!r}" if selection else "") + "; check the elements or pass pairs")
    return np.array(pairs, dtype=int)


def compute_bond_lengths(traj, pairs: Optional[Sequence[Tuple[int, int]]] = None, elements: Tuple[str, str] = ("N", "H"),
                         n_blocks: int = 10, selection: Optional[str] = None) -> Dict[str, object]:
    """Bond lengths (nm) per frame and pair, with the mean and its block-averaged standard error.

    Returns a dict: ``pairs`` [P,2], ``time`` [F] ps, ``distances`` [F,P] nm, ``mean``, ``sem`` (nm).
    """
    pairs = bonded_pairs(traj, elements, selection=selection) if pairs is None else np.asarray(pairs, dtype=int)
    d = _distances(traj, pairs)
    mean, sem = block_average(d.mean(axis=1), n_blocks)
    return {"pairs": pairs, "time": np.asarray(traj.time), "distances": d, "mean": mean, "sem": sem}


def compute_rdf(traj, selection_a: str, selection_b: str, r_max: Optional[float] = None,
                bin_width: float = 0.005) -> Dict[str, np.ndarray]:
    """g(r) between two selections with PBC and the running coordination number of B around A.

    Pairs are all (a, b) with a ≠ b (each unordered pair once when the selections are identical).
    ``r_max`` (nm) may not exceed half the smallest box width, beyond which the minimum image misses
    pairs and g(r) and coordination numbers come out wrong (:class:`ConfigError`); when it is None,
    ``DEFAULT_R_MAX_NM`` is used, lowered with a warning to fit the box.  The result holds the ``r_max`` used.
    """
    if not (isinstance(bin_width, (int, float)) and np.isfinite(bin_width) and bin_width > 0):
        raise ConfigError(f"RDF bin width {bin_width!r} nm: must be a positive number of nm (e.g. 0.005)")
    if r_max is not None and not (isinstance(r_max, (int, float)) and np.isfinite(r_max) and r_max > bin_width):
        raise ConfigError(f"RDF r_max {r_max!r} nm: must be a distance in nm larger than the bin width ({bin_width:g} nm)")
    a = select(traj.topology, selection_a, "RDF selection A")
    b = select(traj.topology, selection_b, "RDF selection B")
    boxes = _boxes(traj)
    if boxes is None:
        raise ConfigError("an RDF needs a periodic box and the trajectory has no unit cell: drop the RDF for this system")
    limit = half_smallest_box_width(boxes)
    if r_max is None:
        r_max = DEFAULT_R_MAX_NM
        if r_max > limit:
            r_max = float(np.floor(limit / bin_width) * bin_width)
            warnings.warn(f"RDF range lowered from the default {DEFAULT_R_MAX_NM:g} nm to {r_max:.4g} nm, half the smallest "
                          f"box width ({limit:.4g} nm): beyond it the minimum image misses pairs", UserWarning, stacklevel=2)
    elif r_max > limit * (1 + 1e-6):
        raise ConfigError(f"RDF r_max {r_max:g} nm exceeds half the smallest box width ({limit:.4g} nm), beyond which the "
                          f"minimum image misses pairs and g(r) and coordination numbers are wrong: use r_max <= {limit:.4g} nm")
    same = np.array_equal(np.sort(a), np.sort(b))
    pairs = traj.topology.select_pairs(a, b)  # each unordered pair once, no atom with itself
    edges = rdf_edges(r_max, bin_width)
    vol = np.abs(np.linalg.det(boxes))
    acc = np.zeros(len(edges) - 1)
    for start in range(0, traj.n_frames, RDF_FRAME_CHUNK):
        stop = min(start + RDF_FRAME_CHUNK, traj.n_frames)
        acc += rdf_accumulate(_distances(traj[start:stop], pairs), vol[start:stop], edges)
    # the coordination number counts B around one A: n = 4π ρ_B ∫ g r² dr
    density_b = float(np.mean((len(a) - 1 if same else len(b)) / vol))
    r, g, n = rdf_normalise(acc, traj.n_frames, len(pairs), edges, density_b)
    return {"r": r, "g": g, "coordination": n, "r_max": float(r_max)}


NM2_PER_PS_IN_1E5_CM2_PER_S = units.NM2_PER_PS_TO_1E5_CM2_PER_S  # kept name: the analysis API exports it


def compute_msd(traj, selection: str, fit_window: Optional[Tuple[float, float]] = None, n_blocks: int = D_BLOCKS,
                temperature_K: Optional[float] = None, viscosity_mPa_s: Optional[float] = None) -> Dict[str, object]:
    """MSD (nm²) of a selection vs lag time (ps), PBC-unwrapped, FFT algorithm; D = slope / 6 over ``fit_window``,
    in nm²/ps and 1e-5 cm²/s.

    The error of D is the standard error over ``n_blocks`` independent parts fitted over the same window
    (:func:`openmlip.analysis.core.diffusion_replicas`): groups of particles when the selection has at least
    ``2 * n_blocks``, else time blocks.  The default window is 10–50 % of the longest lag, for few particles
    of the longest lag of one time block (so that the blocks can use it too) when that holds three lags.  The least-squares error of the
    single fit (``D_fit_err_*``) is reported beside it; it understates the uncertainty several-fold.  With
    ``viscosity_mPa_s`` and ``temperature_K`` (and a periodic, cubic box) the Yeh–Hummer finite-size
    correction is added: ``D_infinite_*``.
    """
    idx = select(traj.topology, selection, "MSD selection")
    boxes = _boxes(traj)
    x = unwrap(np.asarray(traj.xyz[:, idx], dtype=float), boxes)
    msd = msd_fft(x)
    dt = float(traj.timestep) if traj.n_frames > 1 else 1.0
    lags = np.arange(traj.n_frames) * dt
    if fit_window is None:
        fit_window = (0.1 * lags[-1], 0.5 * lags[-1])
        block = (0.1 * lags[-1] / n_blocks, 0.5 * lags[-1] / n_blocks)
        if len(idx) < 2 * n_blocks and np.sum((lags >= block[0]) & (lags <= block[1])) >= 3:
            fit_window = block  # few particles: a window the time blocks can use too (when it holds >= 3 lags)
    D, fit_err = diffusion_coefficient(lags, msd, fit_window)
    d_blocks, parts = diffusion_replicas(x, dt, fit_window, n_blocks)
    if len(d_blocks) >= 2:
        err, method = float(np.std(d_blocks, ddof=1) / np.sqrt(len(d_blocks))), f"standard error over {parts}"
    else:
        err, method = float("nan"), f"none: {parts} with this fit window (only the single fit's error is known)"
    c, fit = NM2_PER_PS_IN_1E5_CM2_PER_S, (lags >= fit_window[0]) & (lags <= fit_window[1])
    out: Dict[str, object] = {
        "lag_time": lags, "msd": msd, "D_nm2_per_ps": D, "D_err_nm2_per_ps": err, "D_1e-5_cm2_per_s": D * c,
        "D_err_1e-5_cm2_per_s": err * c, "D_err_method": method, "D_blocks_1e-5_cm2_per_s": (d_blocks * c).tolist(),
        "D_fit_err_1e-5_cm2_per_s": fit_err * c, "fit_window_ps": tuple(float(t) for t in fit_window),
        "fit_intercept_nm2": float(np.mean(msd[fit] - 6 * D * lags[fit])),
    }
    if viscosity_mPa_s is not None:
        if temperature_K is None or boxes is None:
            raise ConfigError("the Yeh–Hummer correction needs the temperature and a periodic box: give temperature_K, "
                              "or drop viscosity_mPa_s")
        edges = np.linalg.norm(boxes, axis=-1).mean(axis=0)
        if np.ptp(edges) > 0.02 * edges.mean():
            raise ConfigError(f"the Yeh–Hummer correction (ξ = 2.837297) holds for cubic boxes; this box has edges "
                              f"{', '.join(f'{e:.3f}' for e in edges)} nm: drop viscosity_mPa_s")
        dd = yeh_hummer_correction(temperature_K, viscosity_mPa_s, float(edges.mean()))
        out.update({"D_infinite_1e-5_cm2_per_s": (D + dd) * c, "yeh_hummer_1e-5_cm2_per_s": dd * c,
                    "viscosity_mPa_s": viscosity_mPa_s, "box_edge_nm": float(edges.mean())})
    return out
