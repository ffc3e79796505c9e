"""In-graph neighbour lists equal a brute-force numpy reference (property-based)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from helpers.physics import Tol, assert_forces_match_finite_differences, assert_zero_net_force_and_torque
from helpers.systems import ammonium_water_cluster, as_data, evaluate, make_model
from openmlip import units
from openmlip.nn.neighbors import brute_force_pairs, cell_list_pairs, minimum_image


def _reference(pos, cutoff, box, slack=0.0):
    """Pairs (i, j) with minimum-image distance < cutoff + slack, by explicit search over 5x5x5 images (numpy)."""
    n = len(pos)
    shifts = np.zeros((1, 3)) if box is None else (np.array(list(np.ndindex(5, 5, 5))) - 2) @ box
    d = np.linalg.norm(pos[None, :, None, :] - pos[:, None, None, :] + shifts[None, None], axis=-1).min(axis=2)
    i, j = np.nonzero((d < cutoff + slack) & ~np.eye(n, dtype=bool))
    return set(zip(i.tolist(), j.tolist()))


def _box(draw, triclinic, cutoff):
    L = draw(st.floats(2.0 * cutoff + 0.1, 4.0 * cutoff))
    box = np.diag([L, draw(st.floats(2.0 * cutoff + 0.1, 4.0 * cutoff)), draw(st.floats(2.0 * cutoff + 0.1, 4.0 * cutoff))])
    if triclinic:  # OpenMM's reduced form: |b_x| <= a_x/2, |c_x| <= a_x/2, |c_y| <= b_y/2
        box[1, 0] = draw(st.floats(-0.5, 0.5)) * box[0, 0]
        box[2, 0] = draw(st.floats(-0.5, 0.5)) * box[0, 0]
        box[2, 1] = draw(st.floats(-0.5, 0.5)) * box[1, 1]
    return box


@st.composite
def systems(draw):
    cutoff = draw(st.floats(1.5, 3.0))
    n = draw(st.integers(2, 60))
    periodic = draw(st.booleans())
    dense = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if periodic:
        box = _box(draw, draw(st.booleans()), cutoff)
        frac = rng.uniform(-0.5, 1.5, size=(n, 3))  # also atoms outside the primary cell
        pos = frac @ box
    else:
        box = None
        extent = cutoff * (1.5 if dense else 6.0)
        pos = rng.uniform(0, extent, size=(n, 3))
    return pos, cutoff, box


@settings(max_examples=60, deadline=None)
@given(systems())
def test_brute_and_cell_lists_equal_reference(system):
    pos, cutoff, box = system
    # a pair within 1e-9 of the cutoff may fall either side by rounding (float64 sums in another order)
    must, may = _reference(pos, cutoff, box, -1e-9), _reference(pos, cutoff, box, 1e-9)
    p = torch.tensor(pos)
    b = None if box is None else torch.tensor(box)
    for fn in (brute_force_pairs, cell_list_pairs):
        edge, shift = fn(p, cutoff, b)
        got = [(int(i), int(j)) for i, j in edge.t()]
        assert len(got) == len(set(got)), f"{fn.__name__} lists a pair twice"
        assert must <= set(got) <= may, fn.__name__
        vec = p[edge[1]] - p[edge[0]] + shift
        assert bool((torch.linalg.norm(vec, dim=1) < cutoff).all())


def _random_cell(rng, kind):
    if kind == "general":  # skewed, not reduced, either handedness (e.g. from ASE)
        return np.diag(rng.uniform(8.0, 14.0, 3)) + rng.uniform(-4.0, 4.0, (3, 3))
    if kind == "skewed":  # reduced, as skewed as allowed, a_x the shortest; turned at random
        a = rng.uniform(20.0, 30.0)
        b, c = rng.uniform(1.05, 1.3, 2) * a
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        half = lambda: rng.choice([-0.5, 0.5])  # noqa: E731
        return np.array([[a, 0, 0], [half() * a, b, 0], [half() * a, half() * b, c]]) @ q.T
    a, b, c = rng.uniform(20.0, 40.0, 3)  # OpenMM's reduced form: |b_x| <= a_x/2, |c_x| <= a_x/2, |c_y| <= b_y/2
    return np.array([[a, 0, 0], [rng.uniform(-0.5, 0.5) * a, b, 0], [rng.uniform(-0.5, 0.5) * a, rng.uniform(-0.5, 0.5) * b, c]])


def _half_diagonal(cell):
    """Half the smallest diagonal element of the cell turned lower triangular (a_x, b_y, c_z): |a|,
    |a x b|/|a|, V/|a x b| — OpenMM's cutoff limit for its reduced boxes."""
    a, b, c = cell
    ab = np.cross(a, b)
    return 0.5 * min(np.linalg.norm(a), np.linalg.norm(ab) / np.linalg.norm(a), abs(np.dot(c, ab)) / np.linalg.norm(ab))


@pytest.mark.parametrize("kind", ["general", "reduced", "skewed"])
@pytest.mark.parametrize("seed", range(5))
def test_minimum_image_equals_brute_force_over_343_images(kind, seed):
    """Vectors v shorter than half the smallest diagonal element of the cell's triangular form, moved by up to
    three lattice vectors along each axis: the function returns v, which the search over the 343 neighbouring
    images also finds (float64, 1e-12); one shared cell [3,3] and per-vector cells [P,3,3], eager and
    TorchScript alike.  Rounding the fractional coordinates, exact only below half the smallest perpendicular
    width, misses some of these in skewed boxes (the shortest width below the shortest diagonal element; in OpenMM's
    cubic, dodecahedral and octahedral boxes the two are equal)."""
    rng = np.random.default_rng(seed)
    cell = _random_cell(rng, kind)
    u = rng.normal(size=(2000, 3))
    length = np.concatenate([rng.uniform(0.0, 0.999, 1000), rng.uniform(0.9, 0.999, 1000)]) * _half_diagonal(cell)
    v = u / np.linalg.norm(u, axis=1, keepdims=True) * length[:, None]
    raw = v + rng.integers(-3, 4, (2000, 3)) @ cell
    images = np.array(list(np.ndindex(7, 7, 7))) - 3
    cand = raw[:, None, :] + (images @ cell)[None]
    brute = cand[np.arange(2000), np.linalg.norm(cand, axis=2).argmin(axis=1)]
    np.testing.assert_allclose(brute, v, rtol=0, atol=1e-12)
    if kind == "skewed":
        fractional = raw - np.round(raw @ np.linalg.inv(cell)) @ cell
        assert (np.linalg.norm(fractional - v, axis=1) > 1e-6).sum() > 0, "the case that needs the triangular rounding"
    scripted = torch.jit.script(minimum_image)
    for fn in (minimum_image, scripted):
        for c in (torch.tensor(cell), torch.tensor(cell).expand(2000, 3, 3)):
            np.testing.assert_allclose(fn(torch.tensor(raw), c).numpy(), brute, rtol=0, atol=1e-12)


def test_cell_list_is_used_and_scales():
    """A 3,000-atom periodic system: the cell list finds the same pairs as brute force."""
    rng = np.random.default_rng(1)
    box = np.diag([30.0, 30.0, 30.0])
    pos = rng.uniform(0, 30.0, size=(3000, 3))
    a, _ = brute_force_pairs(torch.tensor(pos), 5.0, torch.tensor(box))
    b, _ = cell_list_pairs(torch.tensor(pos), 5.0, torch.tensor(box))
    assert {tuple(x) for x in a.t().tolist()} == {tuple(x) for x in b.t().tolist()}


# ------------------------------------------------------------------------------- a model on the periodic paths

_BOXES = {"cubic": np.diag([14.0, 14.0, 14.0]),  # 14 Å / 4.5 Å cutoff: 3 cells per direction, the cell list's minimum
          "triclinic": np.array([[15.0, 0.0, 0.0], [3.0, 15.0, 0.0], [-2.5, 3.5, 15.0]])}  # OpenMM's reduced form


def _cluster_across_the_corner(box):
    """NH4+(H2O)2 centred on a corner of ``box`` and wrapped into it: its atoms sit at all faces and interact
    only through the periodic boundary.  Returns (z, wrapped positions, unwrapped positions), Å."""
    z, pos = ammonium_water_cluster(seed=9)
    pos = pos - pos.mean(0) + 0.01  # off the corner itself (no atom exactly on a face)
    frac = np.linalg.solve(box.T, pos.T).T
    return z, (frac - np.floor(frac)) @ box, pos


@pytest.mark.parametrize("box_name", list(_BOXES))
@pytest.mark.parametrize("route", ["openmm-cell-list", "model-periodic"])
def test_periodic_paths_forces_are_minus_gradient_across_the_boundary(route, box_name, monkeypatch):
    """A model evaluated through a periodic neighbour list (the OpenMM module with the cell list, or the model's
    own list given a cell) on a cluster split by the box faces: the forces on four atoms whose pairs cross the
    boundary equal −dE/dx by central differences (float64, every Cartesian component), the net force vanishes,
    and the energy is that of the unsplit cluster without a box (its images are beyond the cutoff)."""
    from openmlip.nn import neighbors
    from openmlip.openmm import OpenMMPotential

    box = _BOXES[box_name]
    model = make_model("allegro", "smoothmax", torch.float64)
    z, pos, unwrapped = _cluster_across_the_corner(box)
    e_open = evaluate(model, as_data(z, unwrapped))["energy"].item()
    if route == "openmm-cell-list":
        def boom(*args):
            raise AssertionError("cell_list_pairs fell back to brute force: the box holds fewer than 3 cells")

        monkeypatch.setattr(neighbors, "brute_force_pairs", boom)  # the cell list itself must run
        pots = {flag: OpenMMPotential(model, z.tolist(), periodic=True, neighbor_method="cell", output_forces=flag,
                                      dtype=torch.float64) for flag in (False, True)}
        box_nm = torch.tensor(box / 10.0)

        def energy_forces(p, forces=True):  # Å in, eV and eV/Å out (the module works in nm and kJ/mol)
            e, f = pots[forces](torch.as_tensor(p) / 10.0, box_nm)
            return e.item() * units.KJ_PER_MOL_TO_EV, f.numpy() * units.KJ_PER_MOL_NM_TO_EV_PER_ANGSTROM

        edges, shifts = neighbors.cell_list_pairs(torch.tensor(pos), model.cutoff, torch.tensor(box))
    else:
        base = as_data(z, pos, cell=box[None], pbc=np.array([[True, True, True]]))

        def energy_forces(p, forces=True):
            out = evaluate(model, {**base, "pos": torch.as_tensor(p)}, compute_forces=forces)
            return out["energy"].item(), out["forces"].detach().numpy() if forces else None

        edges, shifts = neighbors.neighbor_list(torch.tensor(pos), torch.zeros(len(z), dtype=torch.long), model.cutoff, 1,
                                                torch.tensor(box)[None], torch.ones((1, 3), dtype=torch.bool))
    across = sorted({int(i) for i in edges[:, shifts.abs().sum(1) > 0].reshape(-1)})
    assert len(across) >= 4, "the cluster must interact through the boundary"
    e, f = energy_forces(pos)
    assert e == pytest.approx(e_open, rel=1e-12, abs=1e-12)
    assert_zero_net_force_and_torque(pos, f, atol=1e-10, min_force=1e-3, torque=False)
    assert_forces_match_finite_differences(lambda p: energy_forces(p, forces=False)[0], pos, f, h=1e-5,
                                           coords=[(a, k) for a in across[:4] for k in range(3)],
                                           tol=Tol(rtol=1e-6, floor=1e-2), what=f"{route}, {box_name} box")
