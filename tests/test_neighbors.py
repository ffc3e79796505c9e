"""In-graph neighbour lists equal a brute-force numpy reference (property-based)."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from openmlip.nn.neighbors import brute_force_pairs, cell_list_pairs


def _reference(pos, cutoff, box):
    """Pairs (i, j) with minimum-image distance < cutoff, by explicit image search (numpy)."""
    n = len(pos)
    out = set()
    images = [np.zeros(3)] if box is None else [np.array(s) @ box for s in np.ndindex(5, 5, 5)]
    if box is not None:
        images = [np.array([a - 2, b - 2, c - 2]) @ box for a, b, c in np.ndindex(5, 5, 5)]
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            d = min(np.linalg.norm(pos[j] - pos[i] + s) for s in images)
            if d < cutoff:
                out.add((i, j))
    return out


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
    ref = _reference(pos, cutoff, box)
    p = torch.tensor(pos)
    b = None if box is None else torch.tensor(box)
    for fn in (brute_force_pairs, cell_list_pairs):
        edge, shift = fn(p, cutoff, b)
        got = [(int(i), int(j)) for i, j in edge.t()]
        assert len(got) == len(set(got)), f"{fn.__name__} lists a pair twice"
        assert set(got) == ref, fn.__name__
        vec = p[edge[1]] - p[edge[0]] + shift
        assert bool((torch.linalg.norm(vec, dim=1) < cutoff).all())


def test_cell_list_is_used_and_scales():
    """A 3,000-atom periodic system: the cell list finds the same pairs as brute force."""
    rng = np.random.default_rng(1)
    box = np.diag([30.0, 30.0, 30.0])
    pos = rng.uniform(0, 30.0, size=(3000, 3))
    a, _ = brute_force_pairs(torch.tensor(pos), 5.0, torch.tensor(box))
    b, _ = cell_list_pairs(torch.tensor(pos), 5.0, torch.tensor(box))
    assert {tuple(x) for x in a.t().tolist()} == {tuple(x) for x in b.t().tolist()}
