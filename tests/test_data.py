"""SPICE HDF5 and extxyz readers/writers, and the ASE calculator."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from helpers.physics import Tol, assert_charges_sum_to_total, assert_forces_match_finite_differences
from helpers.systems import ammonium, ammonium_water_cluster, make_model
from openmlip import units
from openmlip.data import ReadStats, SpiceFormatError, Structure, read_extxyz, read_spice, smiles_formal_charge, write_extxyz, write_spice


def _structures(rng):
    z, pos = ammonium_water_cluster()
    out = []
    for k in range(3):
        out.append(Structure(numbers=z, positions=pos + rng.normal(scale=0.05, size=pos.shape), total_charge=1.0,
                             energy=float(rng.normal()), forces=rng.normal(size=pos.shape), charges=rng.normal(size=len(z)),
                             name="nh4-w2", subset="test"))
    zn, pn = ammonium()
    out.append(Structure(numbers=zn, positions=pn, total_charge=1.0, energy=-1.5, forces=np.zeros((5, 3)),
                         charges=np.full(5, 0.2), formal_charges=np.array([1.0, 0, 0, 0, 0]), name="nh4", subset="ions"))
    return out


def test_spice_round_trip_exact_units(tmp_path):
    rng = np.random.default_rng(0)
    src = _structures(rng)
    path = tmp_path / "d.h5"
    assert write_spice(path, src) == {"nh4-w2": 3, "nh4": 1}
    # stored in SPICE units: bohr, hartree, hartree/bohr gradient (= -forces)
    with h5py.File(path) as fh:
        g = fh["nh4-w2"]
        np.testing.assert_allclose(g["conformations"][0], src[0].positions / units.BOHR_TO_ANGSTROM, rtol=1e-14)
        np.testing.assert_allclose(g["dft_total_energy"][1], src[1].energy / units.HARTREE_TO_EV, rtol=1e-14)
        np.testing.assert_allclose(g["dft_total_gradient"][2], -src[2].forces / units.HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM, rtol=1e-14)
        assert g["conformations"].attrs["units"] == "bohr"
    back = list(read_spice(path))
    assert len(back) == 4
    src = sorted(src, key=lambda s: s.name)  # HDF5 lists groups by name; conformers keep their order
    for a, b in zip(src, back):
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_allclose(b.positions, a.positions, rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(b.forces, a.forces, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(b.charges, a.charges, rtol=1e-14)
        assert b.energy == pytest.approx(a.energy, rel=1e-14, abs=1e-15) and b.total_charge == 1.0
    np.testing.assert_array_equal(back[0].formal_charges, [1.0, 0, 0, 0, 0])
    assert [s.name for s in read_spice(path, subsets=["ions"])] == ["nh4"]
    assert len(list(read_spice(path, max_atoms=5))) == 1
    assert len(list(read_spice(path, elements=[1, 7]))) == 1
    assert len(list(read_spice(path, total_charges=[0]))) == 0


def test_spice_smiles_charge_and_published_layout(tmp_path):
    """A file in the published layout (SMILES, float32 arrays, no charge field)."""
    assert smiles_formal_charge("[H:2][N+:1]([H:3])([H:4])[H:5]") == 1
    assert smiles_formal_charge("[O-:3]C(=O)C") == -1 and smiles_formal_charge("[Ca+2].[Cl-].[Cl-]") == 0
    assert smiles_formal_charge("[Mg++]") == 2 and smiles_formal_charge("CCO") == 0
    path = tmp_path / "spice.h5"
    z, pos = ammonium()
    with h5py.File(path, "w") as fh:
        g = fh.create_group("[H:2][N+:1]([H:3])([H:4])[H:5]")
        g["atomic_numbers"] = z.astype(np.int16)
        g["smiles"] = np.array([b"[H:2][N+:1]([H:3])([H:4])[H:5]"])
        g["subset"] = np.array([b"DES370K Monomers"])
        g["conformations"] = (pos / units.BOHR_TO_ANGSTROM)[None].astype(np.float32)
        g["dft_total_energy"] = np.array([-56.8])
        g["dft_total_gradient"] = np.full((1, 5, 3), 0.01, dtype=np.float32)
        g["mbis_charges"] = np.full((1, 5, 1), 0.2, dtype=np.float32)
    (s,) = list(read_spice(path))
    assert s.total_charge == 1.0 and s.subset == "DES370K Monomers"
    assert s.energy == pytest.approx(-56.8 * units.HARTREE_TO_EV)
    np.testing.assert_allclose(s.forces, -0.01 * units.HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM, rtol=1e-6)  # sign flip
    np.testing.assert_allclose(s.positions, pos, atol=1e-6)


def test_spice_bad_files(tmp_path):
    path = tmp_path / "d.h5"
    write_spice(path, _structures(np.random.default_rng(1)))
    data = path.read_bytes()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(data[: len(data) // 3])
    with pytest.raises(SpiceFormatError, match="cannot read SPICE file .*trunc.h5.*truncated or not HDF5"):
        list(read_spice(trunc))
    with h5py.File(path, "a") as fh:
        del fh["nh4"]["dft_total_gradient"]
    with pytest.raises(SpiceFormatError, match=r"group 'nh4' of .* lacks \['dft_total_gradient'\]"):
        list(read_spice(path))
    stats = ReadStats()
    kept = list(read_spice(path, on_error="skip", stats=stats))
    assert len(kept) == 3 and list(stats.skipped) == ["nh4"] and stats.groups_read == 1


def test_extxyz_round_trip(tmp_path):
    src = _structures(np.random.default_rng(2))
    path = tmp_path / "d.xyz"
    write_extxyz(path, src)
    back = list(read_extxyz(path))
    assert len(back) == 4
    for a, b in zip(src, back):
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-7)
        np.testing.assert_allclose(b.forces, a.forces, atol=1e-7)
        np.testing.assert_allclose(b.charges, a.charges, atol=1e-7)
        assert b.energy == pytest.approx(a.energy) and b.total_charge == 1.0 and b.name == a.name


def test_ase_calculator_forces_and_charges(tmp_path):
    from ase import Atoms

    from openmlip.ase import Calculator
    from openmlip.deploy import save_model

    path = tmp_path / "m.pt"
    save_model(make_model("nequip", "charge-gated", torch.float64, electrostatics=True), path)
    z, pos = ammonium_water_cluster(seed=5)
    atoms = Atoms(numbers=z, positions=pos)
    atoms.info["charge"] = 1
    atoms.calc = Calculator(path)
    f = atoms.get_forces()
    assert_charges_sum_to_total(atoms.get_charges(), 1.0, atol=1e-10)

    def energy(p):
        atoms.positions = p
        return atoms.get_potential_energy()

    assert_forces_match_finite_differences(energy, pos, f, h=1e-5, coords=[(0, 0), (3, 2), (7, 1)], tol=Tol(rtol=1e-5, floor=1e-3))
    atoms.positions = pos
    atoms.info["charge"] = -1
    atoms.calc.reset()
    assert_charges_sum_to_total(atoms.get_charges(), -1.0, atol=1e-10)
    assert atoms.get_potential_energies().sum() == pytest.approx(atoms.get_potential_energy(), rel=1e-12)


def test_ase_calculator_passes_formal_charges_like_the_model_input(tmp_path):
    """atoms.arrays["formal_charges"] reaches the model: the same numbers as a direct call with them; the
    default (total charge only) infers the same +1 on N from the bonds; a charge spread as Q/N differs."""
    from ase import Atoms

    from openmlip.ase import Calculator
    from openmlip.deploy import load_model, save_model

    path = tmp_path / "m.pt"
    save_model(make_model("allegro", "charge-gated", torch.float64), path)
    z, pos = ammonium_water_cluster(seed=5)
    fc = np.zeros(len(z))
    fc[list(z).index(7)] = 1.0
    atoms = Atoms(numbers=z, positions=pos)
    atoms.info["charge"] = 1
    atoms.calc = Calculator(path)
    e_default = atoms.get_potential_energy()
    atoms.arrays["formal_charges"] = fc
    atoms.calc.reset()
    e_formal = atoms.get_potential_energy()
    model, _ = load_model(path)
    one = torch.tensor([1.0], dtype=torch.float64)
    out = model.to(torch.float64)({"pos": torch.tensor(pos), "atomic_numbers": torch.tensor(z), "total_charge": one,
                                   "spin_multiplicity": one, "formal_charges": torch.tensor(fc)}, True)
    assert e_formal == pytest.approx(float(out["energy"].detach().sum()), rel=1e-12, abs=1e-12)
    assert e_default == pytest.approx(e_formal, rel=1e-12)
    atoms.arrays["formal_charges"] = np.full(len(z), 1.0 / len(z))
    atoms.calc.reset()
    assert abs(atoms.get_potential_energy() - e_formal) > 1e-6
    atoms.arrays["formal_charges"] = fc
    atoms.calc.reset()
    assert_charges_sum_to_total(atoms.get_charges(), 1.0, atol=1e-10)
