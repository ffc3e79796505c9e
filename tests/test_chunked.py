"""Large structures are evaluated in blocks of edges (Potential._blocks): the same numbers as one pass."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.systems import make_model

from openmlip.openmm.module import OpenMMPotential


def _water_box(n_side=4, spacing=3.1, seed=0):
    rng = np.random.default_rng(seed)
    pos, z = [], []
    for ijk in np.ndindex(n_side, n_side, n_side):
        c = np.array(ijk) * spacing + rng.normal(scale=0.2, size=3)
        pos += [c, c + [0.9572, 0.0, 0.0], c + [-0.24, 0.9266, 0.0]]
        z += [8, 1, 1]
    return np.array(pos), z, np.eye(3) * n_side * spacing


@pytest.mark.parametrize("agg", ["charge-gated", "sum"])
def test_chunked_evaluation_equals_one_pass(agg):
    model = make_model("allegro", agg)
    pos, z, box = _water_box()
    data = {"pos": torch.tensor(pos), "atomic_numbers": torch.tensor(z), "total_charge": torch.tensor([0.0], dtype=torch.float64),
            "cell": torch.tensor(box).unsqueeze(0), "pbc": torch.ones((1, 3), dtype=torch.bool)}
    model.edge_chunk = 0
    one = model({k: v.clone() for k, v in data.items()})
    model.edge_chunk = 500  # ~7,000 edges: 14 blocks
    blocks = torch.jit.script(model)({k: v.clone() for k, v in data.items()})
    assert one["forces"].shape == blocks["forces"].shape
    for key in ("energy", "atomic_energies", "charges", "forces"):
        assert torch.allclose(one[key], blocks[key], rtol=0, atol=1e-10), key


def test_chunked_path_taken_only_where_it_is_exact():
    """Blocks are used for Allegro without electrostatics, with forces, in inference; the OpenMM module's
    energies and forces are the same either way."""
    pos, z, box = _water_box(3)
    results = []
    for chunk in (0, 300):
        model = make_model("allegro", "charge-gated")
        model.edge_chunk = chunk
        pot = torch.jit.script(OpenMMPotential(model, z, periodic=True, dtype=torch.float64, output_forces=True))
        frozen = torch.jit.freeze(pot.eval())  # as openmm-torch runs it (freezing drops detach())
        positions = torch.tensor(pos / 10.0, requires_grad=True)  # openmm-torch's positions may require grad
        results.append(frozen(positions, torch.tensor(box / 10.0)))
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-13)
    assert torch.allclose(results[0][1], results[1][1], rtol=0, atol=1e-8)
    # NequIP passes messages beyond one cutoff: never cut into blocks (same result with any edge_chunk)
    nequip = make_model("nequip", "sum")
    nequip.edge_chunk = 10
    data = {"pos": torch.tensor(pos), "atomic_numbers": torch.tensor(z), "total_charge": torch.tensor([0.0], dtype=torch.float64)}
    out = nequip(dict(data))
    nequip.edge_chunk = 0
    assert torch.allclose(out["forces"], nequip(dict(data))["forces"], rtol=0, atol=1e-12)
