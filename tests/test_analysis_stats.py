"""Error bars that mean what they say: D from independent time blocks, the Yeh–Hummer correction, mdtraj's
periodic distances in the RDF of a triclinic box, and the plots carry the fit window and coordination."""
from __future__ import annotations

import mdtraj
import numpy as np
import pytest

from openmlip.analysis import compute_msd, compute_rdf, yeh_hummer_correction
from openmlip.analysis.report import MSD, RDF, analyze
from openmlip.errors import ConfigError


def _walkers(n: int, frames: int, sigma: float, dt: float, L: float = 3.0, seed: int = 0):
    """Independent random walkers (3D, σ per component per frame) in a cubic box, wrapped."""
    rng = np.random.default_rng(seed)
    xyz = (rng.uniform(0, L, (n, 3)) + np.cumsum(rng.normal(scale=sigma, size=(frames, n, 3)), axis=0)) % L
    top = mdtraj.Topology()
    chain = top.add_chain()
    for _ in range(n):
        top.add_atom("Ar", mdtraj.element.argon, top.add_residue("AR", chain))
    t = mdtraj.Trajectory(xyz.astype(np.float32), top, time=np.arange(frames) * dt)
    t.unitcell_vectors = np.repeat(np.eye(3, dtype=np.float32)[None] * L, frames, axis=0)
    return t


def test_block_error_of_d_covers_the_true_value_and_the_fit_error_does_not():
    """One particle: the least-squares error of one MSD fit is far too small; the spread of independent time
    blocks is not (over 40 independent runs, the block error's z-scores have a spread near 1)."""
    sigma, dt = 0.02, 0.1
    true = sigma**2 / (2 * dt)  # nm²/ps: σ² = 2 D dt per component
    z_block, z_fit = [], []
    for seed in range(40):
        r = compute_msd(_walkers(1, 500, sigma, dt, seed=seed), "all")
        d = r["D_nm2_per_ps"]
        z_block.append((d - true) / r["D_err_nm2_per_ps"])
        z_fit.append((d - true) / (r["D_fit_err_1e-5_cm2_per_s"] / 1000))
    assert 0.5 < np.std(z_block) < 2.0, np.std(z_block)  # calibrated (5 blocks: t-distributed, 4 dof)
    assert np.std(z_fit) > 3.0, np.std(z_fit)  # the fit's error understates the uncertainty several-fold
    assert "5 independent time blocks" in r["D_err_method"] and len(r["D_blocks_1e-5_cm2_per_s"]) == 5


def test_many_particles_give_the_error_from_groups_of_particles_and_d_is_their_mean():
    sigma, dt = 0.02, 0.1
    true = sigma**2 / (2 * dt)
    z = []
    for seed in range(20):
        r = compute_msd(_walkers(20, 200, sigma, dt, seed=seed), "all")
        assert r["D_err_method"] == "standard error over 5 groups of particles"
        assert r["D_1e-5_cm2_per_s"] == pytest.approx(np.mean(r["D_blocks_1e-5_cm2_per_s"]), rel=1e-9)
        z.append((r["D_nm2_per_ps"] - true) / r["D_err_nm2_per_ps"])
    assert 0.5 < np.std(z) < 2.0, np.std(z)


def test_a_short_run_of_one_particle_still_gets_d_with_the_whole_run_window():
    """Too few frames for a block-sized window (< 3 lags): the window of the whole run, and no block error."""
    r = compute_msd(_walkers(1, 12, 0.02, 0.1), "all")
    assert r["fit_window_ps"] == pytest.approx((0.11, 0.55)) and np.isfinite(r["D_1e-5_cm2_per_s"])
    assert np.isnan(r["D_err_nm2_per_ps"]) and "too short" in r["D_err_method"]


def test_too_short_for_blocks_says_so():
    r = compute_msd(_walkers(1, 30, 0.02, 0.1), "all", fit_window=(0.5, 2.0))
    assert np.isnan(r["D_err_nm2_per_ps"]) and "too short for two independent time blocks" in r["D_err_method"]


def test_yeh_hummer_correction_for_tip3p_in_a_3_nm_box():
    """k_B T ξ / (6 π η L) at 300 K, η = 0.321 mPa·s, L = 3 nm: 0.675e-5 cm²/s (by hand: 1.380649e-23 × 300 ×
    2.837297 / (6π × 0.321e-3 × 3e-9) m²/s)."""
    dd = yeh_hummer_correction(300.0, 0.321, 3.0)
    by_hand = 1.380649e-23 * 300 * 2.837297 / (6 * np.pi * 0.321e-3 * 3e-9)  # m²/s
    assert dd == pytest.approx(by_hand * 1e6, rel=1e-12)  # nm²/ps
    assert dd * 1000 == pytest.approx(0.6467, abs=1e-3)  # 1e-5 cm²/s
    r = compute_msd(_walkers(20, 200, 0.02, 0.1), "all", temperature_K=300.0, viscosity_mPa_s=0.321)
    assert r["D_infinite_1e-5_cm2_per_s"] == pytest.approx(r["D_1e-5_cm2_per_s"] + dd * 1000, rel=1e-12)
    with pytest.raises(ConfigError, match="needs the temperature"):
        compute_msd(_walkers(2, 50, 0.02, 0.1), "all", viscosity_mPa_s=0.321)


def test_rdf_in_a_triclinic_box_counts_every_neighbour_once():
    """A simple cubic lattice (a = 0.3 nm) described by a triclinic (sheared) cell: 6 first neighbours at a."""
    a, m = 0.3, 6
    grid = np.stack(np.meshgrid(*[np.arange(m)] * 3, indexing="ij"), -1).reshape(-1, 3) * a
    box = np.array([[m * a, 0, 0], [m * a / 2, m * a, 0], [0, 0, m * a]])  # same lattice, reduced triclinic cell
    top = mdtraj.Topology()
    chain = top.add_chain()
    for _ in range(len(grid)):
        top.add_atom("Ar", mdtraj.element.argon, top.add_residue("AR", chain))
    t = mdtraj.Trajectory(grid[None].astype(np.float32), top)
    t.unitcell_vectors = box[None].astype(np.float32)
    out = compute_rdf(t, "all", "all", r_max=0.45, bin_width=0.01)
    assert out["coordination"][np.searchsorted(out["r"], 0.35)] == pytest.approx(6.0, abs=1e-6)
    assert out["coordination"][np.searchsorted(out["r"], 0.44)] == pytest.approx(18.0, abs=1e-6)


def test_report_states_the_error_method_and_plots(tmp_path):
    t = _walkers(30, 300, 0.02, 0.1)
    res = analyze(t, tmp_path, [RDF("all", "all", 1.0, 0.02, "gr"), MSD("all", (2.0, 10.0), 0.321, "d")], temperature_K=300.0)
    assert res["d"]["fit_window_ps"] == [2.0, 10.0] and "D_infinite_1e-5_cm2_per_s" in res["d"]
    text = (tmp_path / "report.md").read_text()
    assert "standard error over 5 groups of particles" in text and "Yeh–Hummer" in text
    for name in ("gr.png", "d.png", "gr.csv", "d.csv"):
        assert (tmp_path / name).stat().st_size > 0
