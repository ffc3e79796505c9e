"""Physical adequacy of every architecture x aggregation (float64 unless a test says otherwise)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.physics import (Tol, assert_charges_sum_to_total, assert_forces_match_finite_differences,
                             assert_invariant_energy_equivariant_forces, assert_zero_net_force_and_torque,
                             random_coordinates, tolerance)
from helpers.systems import ARCH_AGG, ammonium, ammonium_water_cluster, as_data, evaluate, make_model, water
from openmlip.units import COULOMB_EV_ANGSTROM

pytestmark = pytest.mark.parametrize("arch,agg", ARCH_AGG)


def test_invariance_equivariance(arch, agg, dtype):
    """4 random rotations (2+ improper) + translations + permutations: E, F, q transform as they must."""
    model = make_model(arch, agg, dtype, electrostatics=True)
    z, pos = ammonium_water_cluster(seed=1)
    tol = tolerance(dtype)
    assert_invariant_energy_equivariant_forces(
        model, as_data(z, pos, dtype, charge=1.0), trials=4, seed=1234,
        energy=Tol(rtol=10 * tol, atol=10 * tol),  # 10 tol (|E| + 1)
        forces=Tol(rtol=100 * tol, atol=100 * tol * 1e-3, of="largest"),  # 100 tol (max|F| + 1e-3)
        charges=Tol(atol=100 * tol))


def test_forces_are_minus_gradient(arch, agg, dtype):
    model = make_model(arch, agg, dtype, electrostatics=True)
    z, pos = ammonium_water_cluster(seed=2)
    data = as_data(z, pos, dtype, charge=1.0)
    forces = evaluate(model, data)["forces"]
    h = 1e-5 if dtype == torch.float64 else 2e-3
    rtol = 1e-5 if dtype == torch.float64 else 3e-2

    def energy(p):
        return evaluate(model, {**data, "pos": p}, compute_forces=False)["energy"].item()

    # 8 random coordinates; error relative to the largest of the 8 force components
    assert_forces_match_finite_differences(energy, data["pos"], forces, h=h, coords=random_coordinates(len(z), 8, seed=0),
                                           tol=Tol(rtol=rtol, floor=1e-8, of="largest"))


def test_zero_net_force_and_torque(arch, agg):
    model = make_model(arch, agg, torch.float64, electrostatics=True)
    z, pos = ammonium_water_cluster(seed=3)
    data = as_data(z, pos, torch.float64, charge=1.0)
    assert_zero_net_force_and_torque(data["pos"], evaluate(model, data)["forces"], atol=1e-9, min_force=1e-3)


def test_continuous_across_cutoff(arch, agg):
    """A water molecule approaching NH4+ through the cutoff sphere: E and F continuous at r_c."""
    model = make_model(arch, agg, torch.float64)
    rc = model.cutoff
    z1, p1 = ammonium()
    z2, p2 = water()
    # put water's O on the x axis; its closest atom to NH4+ decides when it enters any cutoff
    def config(x):
        p = np.concatenate([p1, p2 + np.array([x, 0.0, 0.0])])
        return as_data(np.concatenate([z1, z2]), p, torch.float64, charge=1.0)
    # the first pair to enter: min distance between fragments equals rc
    def min_dist(x):
        p = np.concatenate([p1, p2 + np.array([x, 0.0, 0.0])])
        return np.min(np.linalg.norm(p[:5, None] - p[None, 5:], axis=-1))
    lo, hi = 3.0, 12.0  # bisection for the entering point
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if min_dist(mid) < rc else (lo, mid)
    x0 = 0.5 * (lo + hi)
    res = {}
    for delta in (1e-3, 1e-5):
        outs = [evaluate(model, config(x0 + s * delta)) for s in (-1, +1)]
        res[delta] = (abs(outs[0]["energy"].item() - outs[1]["energy"].item()),
                      (outs[0]["forces"] - outs[1]["forces"]).abs().max().item())
    # beyond the cutoff the fragments do not interact at all
    far = evaluate(model, config(x0 + 0.01))["energy"].item()
    farther = evaluate(model, config(x0 + 3.0))["energy"].item()
    assert abs(far - farther) <= 1e-12
    # C2 envelope: energy difference ~ delta^3, force difference ~ delta^2 (no jump)
    assert res[1e-5][0] <= 1e-12 and res[1e-5][1] <= 1e-8, res
    if agg != "max":
        assert res[1e-3][1] <= 1e-4, res


def _nh_scan_force(model, r):
    z, pos = ammonium()
    u = pos[1] / np.linalg.norm(pos[1])
    pos = pos.copy()
    pos[1] = u * r
    out = evaluate(model, as_data(z, pos, torch.float64, charge=1.0))
    return float(out["forces"][1].detach().numpy() @ u)


def test_nh_scan_force_jumps(arch, agg):
    """Scan one N–H distance 0.7–1.5 Å.  smooth modes: no jump anywhere; max: a jump exists.

    A jump is a force difference that does not shrink when the step shrinks.  At the tetrahedral
    point (r = 1.03 Å) all four N–H pair energies are equal, so ``max`` switches argmax there.
    """
    model = make_model(arch, agg, torch.float64, seed=5)
    # lift all pair energies above the max's zero baseline, so the argmax runs over real pairs
    head = model.core.readout if arch == "allegro" else model.core.pair_readout
    with torch.no_grad():
        head.net[-1].bias[0] += 3.0
    rs = np.linspace(0.7, 1.5, 81)
    f = np.array([_nh_scan_force(model, r) for r in rs])
    df = np.abs(np.diff(f))
    worst = []
    for k in np.argsort(df)[-3:]:  # the three largest steps: refine each 1000x
        r0 = rs[k]
        centre = r0 + 0.5 * (rs[1] - rs[0])
        fine = abs(_nh_scan_force(model, centre + 2.5e-6) - _nh_scan_force(model, centre - 2.5e-6))
        worst.append(fine / max(df[k], 1e-300))
    h = 1e-7
    at_switch = abs(_nh_scan_force(model, 1.03 + h) - _nh_scan_force(model, 1.03 - h))
    if agg == "max":
        # a jump at the tetrahedral argmax switch, or a largest step that does not shrink on refinement
        assert at_switch > 1e-4 or max(worst) > 0.3, (at_switch, worst)
    else:
        assert max(worst) < 0.05, worst  # every big step shrinks ~1000x on refinement: no jump
        assert at_switch < 1e-5


def test_total_charge_exact(arch, agg):
    model = make_model(arch, agg, torch.float64, electrostatics=True)
    z, pos = ammonium_water_cluster(seed=4)
    for q in (-2, -1, 0, 1, 2):
        out = evaluate(model, as_data(z, pos, torch.float64, charge=float(q)))
        assert_charges_sum_to_total(out["charges"], q, atol=1e-10, what=f"Q = {q}")
    # a batch of structures of different sizes and charges at once
    z2, p2 = water()
    data = {
        "pos": torch.tensor(np.concatenate([pos, p2]), dtype=torch.float64),
        "atomic_numbers": torch.tensor(np.concatenate([z, z2])),
        "batch": torch.tensor([0] * len(z) + [1] * len(z2)),
        "total_charge": torch.tensor([1.0, -2.0], dtype=torch.float64),
    }
    out = evaluate(model, data)
    assert_charges_sum_to_total(out["charges"], data["total_charge"], batch=data["batch"], atol=1e-10, what="batch")


def test_batch_equals_separate(arch, agg):
    model = make_model(arch, agg, torch.float64, electrostatics=True)
    z1, p1 = ammonium_water_cluster(seed=6)
    z2, p2 = water()
    sep = [evaluate(model, as_data(z1, p1, charge=1.0)), evaluate(model, as_data(z2, p2, charge=0.0))]
    data = {
        "pos": torch.tensor(np.concatenate([p1, p2]), dtype=torch.float64),
        "atomic_numbers": torch.tensor(np.concatenate([z1, z2])),
        "batch": torch.tensor([0] * len(z1) + [1] * len(z2)),
        "total_charge": torch.tensor([1.0, 0.0], dtype=torch.float64),
    }
    out = evaluate(model, data)
    torch.testing.assert_close(out["energy"], torch.stack([s["energy"][0] for s in sep]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out["forces"], torch.cat([s["forces"] for s in sep]), rtol=1e-10, atol=1e-12)


def test_locality(arch, agg):
    """Fragments farther apart than the cutoff: energies add; with electrostatics the difference is Coulomb."""
    z1, p1 = ammonium()
    z2, p2 = water((12.0, 1.0, -2.0))
    fc1 = np.array([1.0, 0, 0, 0, 0])  # formal charges locate the +1 on NH4+
    fc2 = np.zeros(3)
    union = dict(z=np.concatenate([z1, z2]), pos=np.concatenate([p1, p2]))
    for elec in (False, True):
        model = make_model(arch, agg, torch.float64, electrostatics=elec, coulomb_cutoff=0.0)
        a = evaluate(model, as_data(z1, p1, charge=1.0, formal_charges=fc1))
        b = evaluate(model, as_data(z2, p2, charge=0.0, formal_charges=fc2))
        ab = evaluate(model, as_data(union["z"], union["pos"], charge=1.0, formal_charges=np.concatenate([fc1, fc2])))
        diff = ab["energy"].item() - a["energy"].item() - b["energy"].item()
        qa, qb = a["charges"].detach().numpy(), b["charges"].detach().numpy()
        np.testing.assert_allclose(ab["charges"].detach().numpy(), np.concatenate([qa, qb]), atol=1e-12)
        if not elec:
            assert abs(diff) <= 1e-10
        else:
            from scipy.special import erf

            r = np.linalg.norm(p1[:, None] - p2[None], axis=-1)
            coulomb = COULOMB_EV_ANGSTROM * np.sum(qa[:, None] * qb[None] * erf(r / 1.0) / r)
            assert abs(coulomb) > 1e-4  # a real interaction is being checked
            assert abs(diff - coulomb) <= 1e-10


def test_atoms_without_neighbours_are_valid_input(arch, agg):
    """A lone ion or a fragment beyond the cutoff (zero edges) gives finite energy, zero force, exact charge."""
    model = make_model(arch, agg)
    pos = torch.tensor([[0.0, 0.0, 0.0], [20.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    out = model({"pos": pos, "atomic_numbers": torch.tensor([11, 17]), "total_charge": torch.tensor([0.0]),
                 "formal_charges": torch.tensor([1.0, -1.0], dtype=torch.float64)}, False)
    e = out["energy"].sum()
    assert torch.isfinite(e)
    (g,) = torch.autograd.grad(e, pos)
    assert torch.allclose(g, torch.zeros_like(g), atol=1e-12)
    assert torch.allclose(out["charges"], torch.tensor([1.0, -1.0], dtype=torch.float64), atol=1e-12)
