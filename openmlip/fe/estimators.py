"""Free-energy estimators on reduced potentials and works (all in kT): MBAR, BAR, Jarzynski (EXP).

Every estimate comes with a bootstrap standard error: the samples of each λ window (after
subsampling to uncorrelated samples) or the works of each direction are drawn again with
replacement, ``n_bootstrap`` times, with a fixed seed, and the estimator rerun; the error is the
standard deviation of those estimates.  pymbar's analytic errors are reported beside them.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Any, Dict, List, Sequence

import numpy as np

from ..errors import DataFileError


#: neighbour overlap below which MBAR is reported without an error bar (the windows do not overlap)
NO_OVERLAP = 1e-3


def _pymbar():
    """pymbar, imported without its banner about JAX on stdout."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pymbar
            import pymbar.other_estimators  # noqa: F401
            import pymbar.timeseries  # noqa: F401
            import pymbar.utils  # noqa: F401
    except ImportError as exc:  # pragma: no cover
        raise ImportError("free-energy estimates need pymbar 4: pip install 'pymbar>=4'") from exc
    logging.getLogger("pymbar").setLevel(logging.ERROR)
    return pymbar


def statistical_inefficiency(x: np.ndarray) -> float:
    """g ≥ 1 of a time series (pymbar.timeseries); 1 for a constant series."""
    x = np.asarray(x, dtype=float)
    if len(x) < 3 or np.ptp(x) <= 1e-12 * max(1.0, float(np.max(np.abs(x)))):
        return 1.0
    ts = _pymbar().timeseries
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(max(1.0, ts.statistical_inefficiency(x)))


def subsample(x: np.ndarray, g: float) -> np.ndarray:
    """Indices of roughly uncorrelated samples, every ⌈g⌉-th from the end backwards (keeps the latest)."""
    n = len(x)
    step = max(1, int(np.ceil(g - 1e-9)))
    return np.arange(n - 1, -1, -step)[::-1]


def _mbar_df(u_kn: np.ndarray, n_k: np.ndarray, initial_f_k=None, uncertainty: bool = False):
    pymbar = _pymbar()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # pymbar's adaptive solver capped at 200 iterations (its default 10^4 spins for
        # minutes when windows do not overlap; the result is then flagged by the overlap matrix anyway)
        m = pymbar.MBAR(u_kn, n_k, initial_f_k=initial_f_k,
                        solver_protocol=(dict(method="adaptive", options=dict(min_sc_iter=0, maxiter=200)),))
        try:
            r = m.compute_free_energy_differences(compute_uncertainty=uncertainty)
        except pymbar.utils.ParameterError:
            # the asymptotic covariance refuses poorly converged weights (no overlap): ΔG without it
            r = m.compute_free_energy_differences(compute_uncertainty=False)
            r["dDelta_f"] = np.full_like(r["Delta_f"], np.nan)
    return m, r


def mbar(windows: Sequence[np.ndarray], n_bootstrap: int = 200, seed: int = 0) -> Dict[str, Any]:
    """MBAR ΔG (kT) from λ_0 to λ_last.

    Parameters
    ----------
    windows : list of arrays [K, n_k] float
        For window k, the reduced potential of each of its (uncorrelated) samples at all K λ values.
    """
    k = len(windows)
    if k < 2 or any(w.shape[0] != k for w in windows):
        raise DataFileError(f"MBAR needs K ≥ 2 windows each with reduced potentials at all K λ values; "
                            f"got shapes {[w.shape for w in windows]}")
    n_k = np.array([w.shape[1] for w in windows])
    if np.any(n_k < 1):
        raise DataFileError(f"every window needs at least one sample; samples per window {n_k.tolist()}")
    # a per-sample constant cancels from MBAR's equations: measure every state from state 0 (removes the
    # absolute energies, ~10^4 kT, that leave only a few significant digits for the differences)
    windows = [w - w[:1] for w in windows]
    u_kn = np.concatenate(windows, axis=1)
    # condition the problem: ML and MM energies differ by ~10^4 kT (atomisation-like offsets of the ML model),
    # which MBAR's solvers do not converge through.  A constant s_k per state shifts f_k by −s_k exactly.
    shift = np.mean(u_kn - u_kn[0], axis=1)
    windows = [w - shift[:, None] for w in windows]
    u_kn = u_kn - shift[:, None]
    m, r = _mbar_df(u_kn, n_k, uncertainty=True)
    f_k = np.asarray(m.f_k)
    dg = float(r["Delta_f"][0, -1] + shift[-1] - shift[0])
    analytic = float(r["dDelta_f"][0, -1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        overlap = np.asarray(m.compute_overlap()["matrix"])
    neighbour = [float(overlap[i, i + 1]) for i in range(k - 1)]
    if min(neighbour) < NO_OVERLAP:
        # neighbouring windows share no samples: ΔG is not determined by the data and resampling it only makes
        # the solver spin; report no error (NaN) so that nobody quotes it
        n_bootstrap = 0
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_bootstrap):
        parts = [w[:, rng.integers(0, w.shape[1], w.shape[1])] for w in windows]
        _, rb = _mbar_df(np.concatenate(parts, axis=1), n_k, initial_f_k=f_k)
        boots.append(float(rb["Delta_f"][0, -1] + shift[-1] - shift[0]))
    err = float(np.std(boots, ddof=1)) if len(boots) > 1 else float("nan")
    return {"dg_kT": dg, "err_kT": err, "err_analytic_kT": analytic, "f_k_kT": (f_k + shift - shift[0]).tolist(),
            "overlap": overlap.tolist(), "min_neighbour_overlap": float(min(neighbour)),
            "neighbour_overlap": neighbour, "samples": n_k.tolist(), "n_bootstrap": n_bootstrap}


def _bar(w_f: np.ndarray, w_r: np.ndarray, uncertainty: bool = False) -> Dict[str, float]:
    pymbar = _pymbar()
    c = 0.5 * (float(np.mean(w_f)) - float(np.mean(w_r)))  # conditioning shift (works of ~10^4 kT), added back
    tol = 1e-8 * max(1.0, abs(c))
    if np.ptp(w_f) < tol and np.ptp(w_r) < tol and abs(float(np.mean(w_f)) + float(np.mean(w_r))) < tol:
        return {"dg": c, "err": 0.0}  # reversible (e.g. states differing by a constant): BAR's bracket is empty
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = pymbar.other_estimators.bar(w_f - c, w_r + c, compute_uncertainty=uncertainty)
    return {"dg": float(r["Delta_f"]) + c, "err": float(r["dDelta_f"]) if uncertainty else float("nan")}


def _exp(w: np.ndarray) -> float:
    """−ln ⟨exp(−w)⟩, computed stably."""
    w = np.asarray(w, dtype=float)
    m = np.min(w)
    return float(m - np.log(np.mean(np.exp(-(w - m)))))


def neq(w_forward: np.ndarray, w_reverse: np.ndarray, n_bootstrap: int = 200, seed: int = 0) -> Dict[str, Any]:
    """BAR (Crooks) from forward (0→1) and reverse (1→0) works, and Jarzynski (EXP) each way, in kT.

    Jarzynski: ΔG = −ln⟨e^{−W_F}⟩ forward and ΔG = +ln⟨e^{−W_R}⟩ reverse.
    """
    w_f = np.asarray(w_forward, dtype=float)
    w_r = np.asarray(w_reverse, dtype=float)
    if len(w_f) < 2 or len(w_r) < 2:
        raise DataFileError(f"BAR needs at least two switches each way; got {len(w_f)} forward, {len(w_r)} reverse")
    b = _bar(w_f, w_r, uncertainty=True)
    jf, jr = _exp(w_f), -_exp(w_r)
    rng = np.random.default_rng(seed)
    bb, bf, br = [], [], []
    for _ in range(n_bootstrap):
        sf = w_f[rng.integers(0, len(w_f), len(w_f))]
        sr = w_r[rng.integers(0, len(w_r), len(w_r))]
        bb.append(_bar(sf, sr)["dg"])
        bf.append(_exp(sf))
        br.append(-_exp(sr))
    sd = (lambda x: float(np.std(x, ddof=1))) if n_bootstrap > 1 else (lambda x: float("nan"))
    # dissipation: ⟨W_F⟩ − ΔG and ⟨W_R⟩ + ΔG (≥ 0 by the second law; large values mean too fast switches)
    return {"bar": {"dg_kT": b["dg"], "err_kT": sd(bb), "err_analytic_kT": b["err"]},
            "jarzynski_forward": {"dg_kT": jf, "err_kT": sd(bf)},
            "jarzynski_reverse": {"dg_kT": jr, "err_kT": sd(br)},
            "switches": [int(len(w_f)), int(len(w_r))],
            "mean_work_kT": [float(np.mean(w_f)), float(np.mean(w_r))],
            "std_work_kT": [float(np.std(w_f)), float(np.std(w_r))],
            "dissipation_kT": [float(np.mean(w_f) - b["dg"]), float(np.mean(w_r) + b["dg"])],
            "n_bootstrap": n_bootstrap}


def mbar_convergence(windows: Sequence[np.ndarray], fractions: Sequence[float] = (0.2, 0.4, 0.6, 0.8, 1.0),
                     n_bootstrap: int = 20, seed: int = 0) -> Dict[str, List[Dict[str, float]]]:
    """MBAR ΔG on the first (forward in time) and last (reverse in time) fraction of each window's samples."""
    out: Dict[str, List[Dict[str, float]]] = {"forward": [], "reverse": []}
    for frac in fractions:
        for key, pick in (("forward", lambda w, m: w[:, :m]), ("reverse", lambda w, m: w[:, w.shape[1] - m:])):
            parts = [pick(w, max(1, int(round(frac * w.shape[1])))) for w in windows]
            r = mbar(parts, n_bootstrap=n_bootstrap, seed=seed)
            if not np.isfinite(r["err_kT"]) and n_bootstrap:
                return {"forward": [], "reverse": []}  # no overlap: no convergence curve either
            out[key].append({"fraction": float(frac), "dg_kT": r["dg_kT"], "err_kT": r["err_kT"]})
    return out


def neq_convergence(w_forward, w_reverse, fractions: Sequence[float] = (0.2, 0.4, 0.6, 0.8, 1.0),
                    n_bootstrap: int = 50, seed: int = 0) -> List[Dict[str, float]]:
    """BAR and Jarzynski ΔG with the first fraction of the switches of each direction."""
    rows = []
    for frac in fractions:
        nf = max(2, int(round(frac * len(w_forward))))
        nr = max(2, int(round(frac * len(w_reverse))))
        r = neq(np.asarray(w_forward)[:nf], np.asarray(w_reverse)[:nr], n_bootstrap=n_bootstrap, seed=seed)
        rows.append({"fraction": float(frac), "bar_kT": r["bar"]["dg_kT"], "bar_err_kT": r["bar"]["err_kT"],
                     "jf_kT": r["jarzynski_forward"]["dg_kT"], "jr_kT": r["jarzynski_reverse"]["dg_kT"]})
    return rows


__all__ = ["mbar", "neq", "mbar_convergence", "neq_convergence", "statistical_inefficiency", "subsample"]
