"""Trajectory analysis in the style of mdtraj's ``compute_*`` functions (lengths in nm, times in ps).

Array-level cores live in :mod:`openmlip.analysis.core`; these wrappers take an ``mdtraj.Trajectory``
(HDF5/DCD/XTC + topology, as written by OpenMM or openmlip) and selections in mdtraj's language.
"""
from __future__ import annotations

import warnings
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .. import units
from ..errors import ConfigError, SelectionError
from .core import block_average, diffusion_coefficient, minimum_image, msd_fft, rdf, unwrap

#: RDF range (nm) when none is given; lowered to half the smallest box width when the box is smaller
DEFAULT_R_MAX_NM = 1.0


def _boxes(traj) -> Optional[np.ndarray]:
    return None if traj.unitcell_vectors is None else np.asarray(traj.unitcell_vectors, dtype=float)


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
    if not pairs:
        ia = [at.index for at in top.atoms if at.element.symbol == a and (chosen is None or at.index in chosen)]
        ib = [at.index for at in top.atoms if at.element.symbol == b and (chosen is None or at.index in chosen)]
        xyz = traj.xyz[0]
        box = None if traj.unitcell_vectors is None else traj.unitcell_vectors[0]
        pairs = [(i, j) for i in ia for j in ib if i != j
                 and np.linalg.norm(minimum_image(xyz[j] - xyz[i], box)) < max_distance]
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
    boxes = _boxes(traj)
    d = np.linalg.norm(minimum_image(traj.xyz[:, pairs[:, 1]] - traj.xyz[:, pairs[:, 0]],
                                     None if boxes is None else boxes[0]), axis=-1) if boxes is None or np.allclose(boxes, boxes[0]) else \
        np.stack([np.linalg.norm(minimum_image(x[pairs[:, 1]] - x[pairs[:, 0]], b), axis=-1) for x, b in zip(traj.xyz, boxes)])
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
    if same:
        ii, jj = np.triu_indices(len(a), 1)
        pairs = np.stack([a[ii], a[jj]], axis=1)
    else:
        pairs = np.array([(i, j) for i in a for j in b if i != j])
    d = np.stack([np.linalg.norm(minimum_image(x[pairs[:, 1]] - x[pairs[:, 0]], bx), axis=-1) for x, bx in zip(traj.xyz, boxes)])
    vol = np.abs(np.linalg.det(boxes))
    r, g, n = rdf(d, len(pairs), vol, r_max, bin_width, density_b=len(b) / vol if not same else (len(a) - 1) / vol)
    # coordination number counts B around one A: n = 4π ρ_B ∫ g r² dr
    return {"r": r, "g": g, "coordination": n, "r_max": float(r_max)}


NM2_PER_PS_IN_1E5_CM2_PER_S = units.NM2_PER_PS_TO_1E5_CM2_PER_S  # kept name: the analysis API exports it


def compute_msd(traj, selection: str, fit_window: Optional[Tuple[float, float]] = None) -> Dict[str, object]:
    """MSD (nm²) of a selection vs lag time (ps), PBC-unwrapped, FFT algorithm; D in nm²/ps and 1e-5 cm²/s."""
    idx = select(traj.topology, selection, "MSD selection")
    x = unwrap(np.asarray(traj.xyz[:, idx], dtype=float), _boxes(traj))
    msd = msd_fft(x)
    dt = float(traj.timestep) if traj.n_frames > 1 else 1.0
    lags = np.arange(traj.n_frames) * dt
    out: Dict[str, object] = {"lag_time": lags, "msd": msd}
    if fit_window is None:
        fit_window = (0.1 * lags[-1], 0.5 * lags[-1])
    D, err = diffusion_coefficient(lags, msd, fit_window)
    out.update({"D_nm2_per_ps": D, "D_err_nm2_per_ps": err, "D_1e-5_cm2_per_s": D * NM2_PER_PS_IN_1E5_CM2_PER_S,
                "D_err_1e-5_cm2_per_s": err * NM2_PER_PS_IN_1E5_CM2_PER_S,
                "fit_window_ps": fit_window})
    return out


__all__ = ["DEFAULT_R_MAX_NM", "NM2_PER_PS_IN_1E5_CM2_PER_S", "bonded_pairs", "block_average", "compute_bond_lengths",
           "compute_msd", "compute_rdf", "diffusion_coefficient", "half_smallest_box_width", "msd_fft", "rdf", "select",
           "selection_syntax_error", "unwrap"]
