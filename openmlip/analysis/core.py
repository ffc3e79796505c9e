"""Array-level analysis (numpy): no trajectory objects here, so everything is testable on synthetic data.

Units follow the inputs (openmlip's trajectory wrappers pass nm and ps, as mdtraj does).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from ..errors import ConfigError


def block_average(x: np.ndarray, n_blocks: int = 10) -> Tuple[float, float]:
    """Mean of a time series and its standard error from ``n_blocks`` contiguous blocks.

    Blocks longer than the correlation time make the block means independent, so the spread of
    block means gives an honest error for correlated MD data (Flyvbjerg & Petersen 1989).
    """
    x = np.asarray(x, dtype=float).reshape(-1)
    n_blocks = max(2, min(n_blocks, len(x)))
    size = len(x) // n_blocks
    means = x[: size * n_blocks].reshape(n_blocks, size).mean(axis=1)
    return float(x.mean()), float(means.std(ddof=1) / np.sqrt(n_blocks))


def rdf_edges(r_max: float, bin_width: float) -> np.ndarray:
    """Histogram edges 0, w, 2w, ... up to ``r_max``."""
    return np.arange(0.0, r_max + 0.5 * bin_width, bin_width)


def rdf_accumulate(distances: np.ndarray, volumes: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Σ_f hist_f(r) · V_f over frames: each frame's pair histogram weighted by its box volume (so frames of
    an NPT run are normalised by their own density).  distances [F, P], volumes [F]."""
    acc = np.zeros(len(edges) - 1)
    for d, v in zip(distances, volumes):
        acc += np.histogram(d, bins=edges)[0] * float(v)
    return acc


def rdf_normalise(acc: np.ndarray, frames: int, n_pairs: int, edges: np.ndarray,
                  density_b: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(r, g, n) from :func:`rdf_accumulate`'s sum over ``frames`` frames of ``n_pairs`` pairs; ``n`` is the
    running coordination number 4π ρ_B ∫ g r² dr (exact shell volumes; zeros without ``density_b``)."""
    r = 0.5 * (edges[1:] + edges[:-1])
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    g = acc / (frames * n_pairs * shell)
    n = np.zeros(len(r)) if density_b is None else np.cumsum(density_b * g * shell)
    return r, g, n


def rdf(distances: np.ndarray, n_pairs: int, volumes: np.ndarray, r_max: float, bin_width: float,
        density_b: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """g(r) from pair distances [F, P] (minimum image) in boxes of ``volumes`` [F]; returns bin centres, g and
    the running coordination number (with ``density_b``, the second selection's number density [F])."""
    edges = rdf_edges(r_max, bin_width)
    return rdf_normalise(rdf_accumulate(distances, volumes, edges), len(distances), n_pairs, edges,
                         None if density_b is None else float(np.mean(density_b)))


def unwrap(positions: np.ndarray, boxes: Optional[np.ndarray]) -> np.ndarray:
    """Undo periodic wrapping: successive displacements taken as minimum images. positions [F, N, 3], boxes [F, 3, 3]."""
    if boxes is None:
        return positions.copy()
    from ..nn.neighbors import minimum_image  # here: importing openmlip.nn (e3nn) at module level would slow importing the analysis
    steps = minimum_image(torch.from_numpy(np.diff(positions, axis=0).astype(np.float64)),
                          torch.tensor(boxes[1:], dtype=torch.float64).unsqueeze(1)).numpy()
    return np.cumsum(np.concatenate([positions[:1], steps]), axis=0).astype(positions.dtype, copy=False)


def msd_fft(x: np.ndarray) -> np.ndarray:
    """Mean squared displacement for every lag, O(F log F) per atom (Calandrini et al. 2011).

    x : [F, N, 3] unwrapped positions.  Returns [F] MSD(lag) averaged over atoms and time origins.
    """
    f = x.shape[0]
    d2 = np.square(x).sum(axis=2)  # [F, N]
    d2 = np.concatenate([d2, np.zeros((1, d2.shape[1]))])
    q = 2.0 * d2.sum(axis=0)
    s1 = np.zeros((f, x.shape[1]))
    for m in range(f):
        q = q - d2[m - 1] - d2[f - m]
        s1[m] = q / (f - m)
    # S2(m) = (1/(F-m)) Σ_k x_k · x_{k+m} via FFT autocorrelation, per atom and component
    n_fft = 2 * f
    fx = np.fft.rfft(x, n=n_fft, axis=0)
    ac = np.fft.irfft(fx * np.conj(fx), n=n_fft, axis=0)[:f].sum(axis=2)  # [F, N]
    s2 = ac / (f - np.arange(f))[:, None]
    return (s1 - 2.0 * s2).mean(axis=1)


def msd_direct(x: np.ndarray) -> np.ndarray:
    """O(F²) reference for :func:`msd_fft` (kept for testing)."""
    f = x.shape[0]
    return np.array([np.mean(np.sum((x[m:] - x[: f - m]) ** 2, axis=2)) for m in range(f)])


def diffusion_coefficient(lag_times: np.ndarray, msd: np.ndarray, fit_window: Tuple[float, float]) -> Tuple[float, float]:
    """Einstein relation in 3D: MSD = 6 D t + c over ``fit_window`` (same time unit as ``lag_times``).

    Returns (D, standard error of D from the least-squares fit) in length²/time.
    """
    sel = (lag_times >= fit_window[0]) & (lag_times <= fit_window[1])
    if sel.sum() < 3:
        raise ConfigError(f"the MSD fit window {float(fit_window[0]):g}-{float(fit_window[1]):g} ps holds "
                          f"{int(sel.sum())} lag times; widen it or run "
                          "longer (need >= 3)")
    t, y = lag_times[sel], msd[sel]
    a = np.vstack([t, np.ones_like(t)]).T
    coef, res, *_ = np.linalg.lstsq(a, y, rcond=None)
    dof = max(len(t) - 2, 1)
    sigma2 = float(np.sum((y - a @ coef) ** 2) / dof)
    cov = sigma2 * np.linalg.inv(a.T @ a)
    return float(coef[0] / 6.0), float(np.sqrt(cov[0, 0]) / 6.0)


def diffusion_replicas(x: np.ndarray, dt: float, fit_window: Tuple[float, float], n_blocks: int = 5,
                       ) -> Tuple[np.ndarray, str]:
    """Diffusion coefficients of independent parts of unwrapped positions x [F, N, 3], all fitted over the same
    ``fit_window`` (absolute lag times), for the error of D (Maginn et al., LiveCoMS 1, 6324 (2019)).

    With at least ``2 * n_blocks`` particles the parts are ``n_blocks`` groups of particles over the whole
    run (the whole run's D is then exactly their mean); with fewer, contiguous time blocks, as many (up to
    ``n_blocks``) as leave each block's lags twice the window's end.  The least-squares error of one fit
    does not measure this: consecutive MSD points are strongly correlated.  Returns (D per part, what
    the parts are); no parts (an empty array) when the run is too short for two.
    """
    f, n = x.shape[:2]
    lags = np.arange(f) * dt
    if n >= 2 * n_blocks:
        groups = np.array_split(np.arange(n), n_blocks)
        return (np.array([diffusion_coefficient(lags, msd_fft(x[:, g]), fit_window)[0] for g in groups]),
                f"{n_blocks} groups of particles")
    blocks = min(n_blocks, int(lags[-1] // (2.0 * fit_window[1])))
    if blocks < 2:
        return np.zeros(0), "too short for two independent time blocks"
    size = f // blocks
    return (np.array([diffusion_coefficient(lags[:size], msd_fft(x[b * size:(b + 1) * size]), fit_window)[0]
                      for b in range(blocks)]), f"{blocks} independent time blocks")


YEH_HUMMER_XI = 2.837297  # cubic lattice constant ξ of the Yeh–Hummer finite-size correction


def yeh_hummer_correction(temperature_K: float, viscosity_mPa_s: float, box_length_nm: float) -> float:
    """ΔD = k_B T ξ / (6 π η L) in nm²/ps (Yeh & Hummer, J. Phys. Chem. B 108, 15873 (2004)): add it to a
    diffusion coefficient measured in a cubic periodic box of edge L to estimate the infinite-system value."""
    from .. import units

    d_m2_per_s = units.BOLTZMANN_J_PER_K * temperature_K * YEH_HUMMER_XI / (
        6.0 * np.pi * viscosity_mPa_s * units.MPA_S_TO_PA_S * box_length_nm * units.NM_TO_M)
    return float(d_m2_per_s * units.M2_PER_S_TO_NM2_PER_PS)
