"""TorchScript export, periodic graphs, default configurations and configuration errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.neighborlist import neighbor_list as ase_neighbor_list

from helpers.physics import Tol, assert_charges_sum_to_total, assert_invariant_energy_equivariant_forces, assert_periodic_image_invariance
from helpers.systems import ARCH_AGG, ammonium_water_cluster, as_data, evaluate, make_model
from openmlip.models import ModelConfig, build_model, script_model
from openmlip.nn import SpeciesIndex, neighbor_list


@pytest.mark.parametrize("arch,agg", ARCH_AGG)
def test_scripted_equals_eager(arch, agg):
    model = make_model(arch, agg, torch.float64, electrostatics=True)
    scripted = script_model(model)
    z, pos = ammonium_water_cluster(seed=7)
    data = as_data(z, pos, torch.float64, charge=1.0)
    a, b = evaluate(model, data), evaluate(scripted, data)
    for key in ("energy", "forces", "charges", "atomic_energies"):
        torch.testing.assert_close(b[key], a[key], rtol=1e-6, atol=1e-12)
    # and the same scripted module runs in float32
    s32 = script_model(make_model(arch, agg, torch.float32, electrostatics=True))
    out = evaluate(s32, as_data(z, pos, torch.float32, charge=1.0))
    assert out["energy"].dtype == torch.float32 and torch.isfinite(out["forces"]).all()


@pytest.mark.parametrize("arch", ["allegro", "nequip"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_default_config_scripts_and_runs(arch, dtype):
    atoms = molecule("CH3CH2OH")
    model = build_model(architecture=arch, dtype=dtype)
    assert model.config_dict == ModelConfig(architecture=arch).to_dict()
    scripted = script_model(model)
    out = scripted({"pos": torch.tensor(atoms.positions, dtype=dtype),
                    "atomic_numbers": torch.tensor(atoms.numbers), "total_charge": torch.zeros(1, dtype=dtype)})
    assert out["forces"].shape == (len(atoms), 3) and torch.isfinite(out["energy"]).all()
    assert_charges_sum_to_total(out["charges"], 0.0, atol=1e-10 if dtype == torch.float64 else 1e-5)


def _triclinic_system(seed=0, n=24):
    rng = np.random.default_rng(seed)
    cell = np.array([[7.0, 0.0, 0.0], [1.5, 6.5, 0.0], [-1.0, 2.0, 8.0]])
    frac = rng.uniform(size=(n, 3))
    return frac @ cell, cell, rng.choice([1, 6, 8], size=n)


@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True)])
def test_neighbor_list_matches_ase(pbc):
    pos, cell, _ = _triclinic_system()
    cutoff = 5.0
    edge, shift = neighbor_list(torch.tensor(pos), torch.zeros(len(pos), dtype=torch.long), cutoff, 1,
                                torch.tensor(cell).unsqueeze(0), torch.tensor([pbc]))
    pos = pos + np.array([1, -2, 1]) @ cell * np.array(pbc)  # atoms outside the cell: must be handled
    i, j, S = ase_neighbor_list("ijS", _atoms(pos, cell, pbc), cutoff)
    ours = {(int(a), int(b), *np.round(np.linalg.solve(cell.T, s)).astype(int)) for a, b, s in zip(edge[0], edge[1], shift.numpy())}
    theirs = {(int(a), int(b), *s) for a, b, s in zip(i, j, S)}
    assert ours == theirs and len(ours) > 100


def _atoms(pos, cell, pbc):
    from ase import Atoms

    return Atoms("H" * len(pos), positions=pos, cell=cell, pbc=pbc)


@pytest.mark.parametrize("arch", ["allegro", "nequip"])
def test_periodic_invariance(arch):
    model = make_model(arch, "smoothmax", torch.float64, electrostatics=True, coulomb_cutoff=3.4)
    pos, cell, z = _triclinic_system(seed=1)
    base = as_data(z, pos, charge=0.0, cell=cell[None], pbc=np.array([[True, True, True]]))

    def energy_forces(p):
        out = evaluate(model, {**base, "pos": torch.tensor(p)})
        return out["energy"].item(), out["forces"]

    # atom 3 moved by b - 2c, atom 5 by -a
    assert_periodic_image_invariance(energy_forces, pos, cell, moves={3: (0, 1, -2), 5: (-1, 0, 0)},
                                     energy=Tol(rtol=1e-12, atol=1e-10), forces=Tol(rtol=1e-10, atol=1e-10))


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown architecture 'mace'"):
        ModelConfig(architecture="mace")
    with pytest.raises(ValueError, match="unknown aggregation 'mean'.*charge-gated"):
        ModelConfig(aggregation="mean")
    with pytest.raises(ValueError, match=r"unknown model option\(s\) \['chanels'\]"):
        ModelConfig.from_dict({"chanels": 8})
    with pytest.raises(ValueError, match="electrostatics needs the charge head"):
        ModelConfig(charges=False, electrostatics=True)
    with pytest.raises(ValueError, match="unknown element symbol 'Xx'"):
        ModelConfig(elements=["H", "Xx"])


def test_unsupported_element_message():
    idx = SpeciesIndex(["H", "C", "N", "O"])
    with pytest.raises(ValueError, match=r"element\(s\) Na, Cl not supported by this model; it knows H, C, N, O"):
        idx.check([1, 6, 17, 11])
    idx.check([1, 6, 7, 8])  # supported elements pass silently


@pytest.mark.parametrize("arch", ["allegro", "nequip"])
@pytest.mark.parametrize("l_max,parity", [(0, False), (2, True), (3, False)])
def test_other_irreps_settings_are_equivariant_and_script(arch, l_max, parity):
    """Full O(3) features (both parities) and l_max 0..3: invariant energy, equivariant forces, scriptable."""
    model = make_model(arch, "smoothmax", torch.float64, l_max=l_max, parity=parity, electrostatics=True)
    z, pos = ammonium_water_cluster(seed=8)
    data = as_data(z, pos, charge=1.0)
    # one improper element (rotation + inversion) and a translation
    assert_invariant_energy_equivariant_forces(model, data, trials=1, improper="always", permute=False,
                                               energy=Tol(rtol=1e-9, atol=1e-9), forces=Tol(atol=1e-9))
    scripted = script_model(model)
    torch.testing.assert_close(evaluate(scripted, data)["energy"], evaluate(model, data)["energy"], rtol=1e-6, atol=1e-12)
