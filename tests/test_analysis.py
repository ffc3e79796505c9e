"""Analysis against analytic answers: ideal gas, known lattice, random walks of known D, numpy bond lengths."""
from __future__ import annotations

import mdtraj
import numpy as np
import pytest

from openmlip.analysis import compute_bond_lengths, compute_msd, compute_rdf
from openmlip.analysis.core import block_average, diffusion_coefficient, msd_direct, msd_fft, unwrap


def _traj(xyz, box=None, elements=None, dt=1.0, bonds=()):
    top = mdtraj.Topology()
    res = top.add_residue("X", top.add_chain())
    atoms = [top.add_atom(f"A{k}", mdtraj.element.get_by_symbol(e), res) for k, e in enumerate(elements or ["Ar"] * xyz.shape[1])]
    for i, j in bonds:
        top.add_bond(atoms[i], atoms[j])
    t = mdtraj.Trajectory(xyz, top, time=np.arange(len(xyz)) * dt)
    if box is not None:
        t.unitcell_vectors = np.repeat(np.asarray(box, dtype=np.float32)[None], len(xyz), axis=0)
    return t


def test_ideal_gas_rdf_is_one_and_coordination_is_density():
    rng = np.random.default_rng(0)
    L, n, frames = 3.0, 400, 20
    xyz = rng.uniform(0, L, size=(frames, n, 3)).astype(np.float32)
    out = compute_rdf(_traj(xyz, np.eye(3) * L), "all", "all", r_max=1.2, bin_width=0.05)
    g = out["g"][4:]  # skip the first bins (few counts)
    assert abs(g.mean() - 1.0) < 0.02 and np.all(np.abs(g - 1.0) < 0.15)
    # coordination number of an ideal gas: (N-1)/V * 4/3 π r³
    r_edge = out["r"][-1] + 0.025
    assert out["coordination"][-1] == pytest.approx((n - 1) / L**3 * 4 / 3 * np.pi * r_edge**3, rel=0.03)


def test_rdf_of_a_simple_cubic_lattice_has_its_shells():
    a, m = 0.3, 6
    grid = np.stack(np.meshgrid(*[np.arange(m)] * 3, indexing="ij"), -1).reshape(-1, 3) * a
    out = compute_rdf(_traj(grid[None].astype(np.float32), np.eye(3) * a * m), "all", "all", r_max=0.55, bin_width=0.01)
    # first shell: 6 neighbours at a, second: 12 at a√2
    k1 = np.nonzero(out["g"])[0][0]  # nothing closer than the lattice constant
    assert abs(out["r"][k1] - a) < 0.01
    assert out["coordination"][np.searchsorted(out["r"], 0.35)] == pytest.approx(6.0, abs=1e-6)
    assert out["coordination"][np.searchsorted(out["r"], 0.45)] == pytest.approx(18.0, abs=1e-6)


def test_bond_lengths_equal_numpy_and_block_error():
    rng = np.random.default_rng(1)
    frames = 200
    n_pos = np.zeros((frames, 1, 3))
    h = np.array([[1, 1, 1], [-1, -1, 1], [-1, 1, -1], [1, -1, -1]]) / np.sqrt(3) * 0.103
    xyz = np.concatenate([n_pos, h[None] + rng.normal(scale=0.003, size=(frames, 4, 3))], axis=1).astype(np.float32)
    t = _traj(xyz, elements=["N", "H", "H", "H", "H"], bonds=[(0, k) for k in range(1, 5)])
    out = compute_bond_lengths(t, elements=("N", "H"))
    ref = np.linalg.norm(xyz[:, 1:] - xyz[:, :1], axis=-1)
    np.testing.assert_allclose(out["distances"], ref, rtol=1e-6)
    assert out["mean"] == pytest.approx(ref.mean(), rel=1e-6) and 0 < out["sem"] < 1e-3
    # without topology bonds: found by distance
    out2 = compute_bond_lengths(_traj(xyz, elements=["N", "H", "H", "H", "H"]), elements=("N", "H"))
    assert out2["pairs"].tolist() == [[0, 1], [0, 2], [0, 3], [0, 4]]
    with pytest.raises(ValueError, match="no O–H pairs"):
        compute_bond_lengths(t, elements=("O", "H"))


def test_block_average_of_uncorrelated_noise():
    x = np.random.default_rng(2).normal(size=100000)
    mean, sem = block_average(x, 20)
    assert abs(mean) < 5 * sem and sem == pytest.approx(1 / np.sqrt(len(x)), rel=0.4)


def test_msd_fft_equals_direct_and_random_walk_gives_D():
    rng = np.random.default_rng(3)
    D, dt, frames, n = 0.05, 0.1, 400, 60
    steps = rng.normal(scale=np.sqrt(2 * D * dt), size=(frames, n, 3))
    x = np.cumsum(steps, axis=0)
    np.testing.assert_allclose(msd_fft(x), msd_direct(x), rtol=1e-9, atol=1e-12)
    lags = np.arange(frames) * dt
    d_fit, err = diffusion_coefficient(lags, msd_fft(x), (1.0, 10.0))
    assert d_fit == pytest.approx(D, rel=0.15) and err > 0
    with pytest.raises(ValueError, match="widen it"):
        diffusion_coefficient(lags, msd_fft(x), (1.0, 1.05))


def test_msd_with_box_crossings_equals_unwrapped():
    rng = np.random.default_rng(4)
    L, frames, n = 2.0, 300, 30
    x = rng.uniform(0, L, size=(1, n, 3)) + np.cumsum(rng.normal(scale=0.05, size=(frames, n, 3)), axis=0)
    wrapped = np.mod(x, L)
    assert np.any(np.abs(np.diff(wrapped, axis=0)) > L / 2)  # there are crossings
    u = unwrap(wrapped, np.repeat(np.eye(3)[None] * L, frames, 0))
    np.testing.assert_allclose(u - u[0], x - x[0], atol=1e-9)  # same path, up to the starting image
    t_wrapped = _traj(wrapped.astype(np.float32), np.eye(3) * L, dt=0.5)
    t_free = _traj(x.astype(np.float32), None, dt=0.5)
    a = compute_msd(t_wrapped, "all")
    b = compute_msd(t_free, "all")
    np.testing.assert_allclose(a["msd"], b["msd"], rtol=1e-4, atol=1e-6)
    assert a["D_nm2_per_ps"] == pytest.approx(0.05**2 / (2 * 0.5), rel=0.25)  # σ² = 2 D dt per component


def test_diffusion_unit_conversion_is_exact():
    from openmlip.analysis import NM2_PER_PS_IN_1E5_CM2_PER_S

    # 1 nm²/ps in cm²/s, from the definitions, expressed in units of 1e-5 cm²/s
    assert NM2_PER_PS_IN_1E5_CM2_PER_S == pytest.approx((1e-7**2 / 1e-12) / 1e-5, rel=1e-12)
