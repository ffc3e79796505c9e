"""Array-level analysis (numpy): no trajectory objects here, so everything is testable on synthetic data.

Units follow the inputs (openmlip's trajectory wrappers pass nm and ps, as mdtraj does).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..errors import ConfigError


def minimum_image(vec: np.ndarray, box: Optional[np.ndarray]) -> np.ndarray:
    """Minimum-image vectors ``vec`` [..., 3] for a box [3, 3] (rows = vectors, OpenMM reduced form) or None."""
    if box is None:
        return vec
    frac = vec @ np.linalg.inv(box)
    return (frac - np.round(frac)) @ box


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


def rdf(distances: np.ndarray, n_pairs: int, volumes: np.ndarray, r_max: float, bin_width: float,
        density_b: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """g(r) from pair distances.

    Parameters
    ----------
    distances : [F, P] pair distances per frame (minimum image)
    n_pairs : number of distinct pairs per frame (P)
    volumes : [F] box volumes
    r_max, bin_width : histogram range (0, r_max]
    density_b : [F] number density of the second selection (for the coordination number); default none

    Returns
    -------
    r : bin centres; g : g(r); n : running coordination number 4π ρ_B ∫ g r² dr (zeros if no density)
    """
    edges = np.arange(0.0, r_max + 0.5 * bin_width, bin_width)
    r = 0.5 * (edges[1:] + edges[:-1])
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    g = np.zeros(len(r))
    for d, v in zip(distances, volumes):
        hist, _ = np.histogram(d, bins=edges)
        g += hist / (n_pairs / v * shell)
    g /= len(distances)
    n = np.zeros(len(r))
    if density_b is not None:
        n = np.cumsum(np.mean(density_b) * g * shell)  # exact shell volumes: n counts neighbours exactly
    return r, g, n


def unwrap(positions: np.ndarray, boxes: Optional[np.ndarray]) -> np.ndarray:
    """Undo periodic wrapping: successive displacements taken as minimum images. positions [F, N, 3]."""
    if boxes is None:
        return positions.copy()
    out = np.empty_like(positions)
    out[0] = positions[0]
    for t in range(1, len(positions)):
        step = minimum_image(positions[t] - positions[t - 1], boxes[t])
        out[t] = out[t - 1] + step
    return out


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
        raise ConfigError(f"the MSD fit window {tuple(fit_window)} ps holds {int(sel.sum())} lag times; widen it or run "
                          "longer (need >= 3)")
    t, y = lag_times[sel], msd[sel]
    a = np.vstack([t, np.ones_like(t)]).T
    coef, res, *_ = np.linalg.lstsq(a, y, rcond=None)
    dof = max(len(t) - 2, 1)
    sigma2 = float(np.sum((y - a @ coef) ** 2) / dof)
    cov = sigma2 * np.linalg.inv(a.T @ a)
    return float(coef[0] / 6.0), float(np.sqrt(cov[0, 0]) / 6.0)
