"""model -> TorchScript -> TorchForce/PythonForce -> OpenMM Context, on the Reference and CPU platforms."""
from __future__ import annotations

from typing import Dict

import numpy as np
import pytest
import torch

import openmm
import openmm.unit as u
from helpers.physics import Tol, assert_energy_forces_match, assert_periodic_image_invariance, in_openmm_units, openmm_energy_forces
from helpers.systems import ammonium_water_cluster, make_model
from openmlip import units
from openmlip.openmm import OpenMMPotential, create_force

PLATFORMS = ["Reference", "CPU"]


class Analytic(torch.nn.Module):
    """Follows the model contract in model units, translation invariance included (the module shifts the
    positions it passes by a whole number of nm): E = Σ|x − x̄|² (eV, x in Å), F = −2(x − x̄)."""

    def __init__(self):
        super().__init__()
        self.cutoff = 5.0

    def forward(self, data: Dict[str, torch.Tensor], compute_forces: bool = True) -> Dict[str, torch.Tensor]:
        d = data["pos"] - data["pos"].mean(0)
        e = (d**2).sum()
        out = {"energy": e.reshape(1)}
        if compute_forces:
            out["forces"] = -2.0 * d
        return out


def _context(potential, platform, n_particles, backend="torchforce", box=None):
    system = openmm.System()
    for _ in range(n_particles):
        system.addParticle(12.0)
    if box is not None:
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    system.addForce(create_force(potential, backend))
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName(platform))
    return ctx


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("output_forces", [False, True])
def test_analytic_wiring_exact(platform, output_forces):
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(6, 3))
    pot = OpenMMPotential(Analytic(), [1] * 6, dtype=torch.float64, output_forces=output_forces)
    e, f = openmm_energy_forces(_context(pot, platform, 6), pos)
    d_a = (pos - pos.mean(0)) * 10.0
    np.testing.assert_allclose(e, (d_a**2).sum() * units.EV_TO_KJ_PER_MOL, rtol=1e-6)  # platform stores float energies
    np.testing.assert_allclose(f, -2.0 * d_a * units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM, rtol=1e-6)


def _reference(model, z, pos_nm, charge, dtype):
    """The model called directly, in OpenMM's units (kJ/mol, kJ/mol/nm)."""
    data = {"pos": torch.tensor(pos_nm * 10.0, dtype=dtype), "atomic_numbers": torch.tensor(z),
            "total_charge": torch.tensor([charge], dtype=dtype)}
    return in_openmm_units(model(data))


@pytest.mark.parametrize("arch", ["allegro", "nequip"])
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-6), (torch.float32, 1e-4)], ids=["float64", "float32"])
@pytest.mark.parametrize("backend", ["torchforce", "pythonforce"])
def test_openmm_equals_model(arch, dtype, rtol, backend):
    model = make_model(arch, "smoothmax", dtype, electrostatics=True)
    z, pos_a = ammonium_water_cluster(seed=11)
    pos = pos_a / 10.0
    e_ref, f_ref = _reference(model, z, pos, 1.0, dtype)
    for platform in PLATFORMS:
        for output_forces in (False, True):
            pot = OpenMMPotential(model, z, total_charge=1.0, dtype=dtype, output_forces=output_forces)
            got = openmm_energy_forces(_context(pot, platform, len(z), backend), pos)
            assert_energy_forces_match(got, (e_ref, f_ref), energy=Tol(rtol=rtol), forces=Tol(rtol=rtol, of="largest"),
                                       what=f"{platform}, output_forces={output_forces}")


def test_subset_of_particles_and_md_finite():
    """ML on 11 of 14 particles: forces on the others are zero; 100 MD steps stay finite."""
    model = make_model("allegro", "sum", torch.float32)
    z, pos_a = ammonium_water_cluster(seed=12)
    extra = np.array([[9.0, 9.0, 9.0], [-9.0, 9.0, 0.0], [0.0, -9.0, 9.0]])
    order = [2, 0, 13, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]  # ML atoms scattered among particles
    ml_index = [order.index(k) for k in range(len(z))]
    all_pos = np.zeros((14, 3))
    for k, p in enumerate(pos_a):
        all_pos[ml_index[k]] = p
    for k, p in enumerate(extra):
        all_pos[order.index(11 + k)] = p
    pot = OpenMMPotential(model, z, indices=ml_index, num_particles=14, total_charge=1.0, dtype=torch.float32)
    ctx = _context(pot, "CPU", 14)
    e, f = openmm_energy_forces(ctx, all_pos / 10.0)
    others = [i for i in range(14) if i not in ml_index]
    assert np.abs(f[others]).max() == 0.0
    e_ref, f_ref = _reference(model, z, pos_a / 10.0, 1.0, torch.float32)
    assert_energy_forces_match((e, f[ml_index]), (e_ref, f_ref), energy=Tol(rtol=1e-4), forces=Tol(rtol=1e-7, rtol_largest=1e-4))
    integ = openmm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, 0.25 * u.femtosecond)
    system = openmm.System()
    for _ in range(14):
        system.addParticle(12.0)
    system.addForce(create_force(pot))
    ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName("CPU"))
    ctx.setPositions(all_pos / 10.0)
    energies = []
    for _ in range(10):
        integ.step(10)
        energies.append(ctx.getState(getEnergy=True).getPotentialEnergy()._value)
    assert np.all(np.isfinite(energies)) and len(set(energies)) > 1  # moving, finite


def _water_box(n_side=4, spacing=3.1, seed=0, triclinic=False):
    rng = np.random.default_rng(seed)
    z, pos = [], []
    for i in range(n_side):
        for j in range(n_side):
            for k in range(n_side):
                o = np.array([i, j, k]) * spacing + rng.normal(scale=0.1, size=3)
                z += [8, 1, 1]
                pos += [o, o + [0.96, 0, 0], o + [-0.24, 0.93, 0]]
    L = n_side * spacing
    box = np.diag([L, L, L])
    if triclinic:
        box[1, 0] = 0.3 * L
        box[2, 0], box[2, 1] = -0.2 * L, 0.25 * L
    return np.array(z), np.array(pos), box


@pytest.mark.parametrize("triclinic", [False, True], ids=["orthorhombic", "triclinic"])
@pytest.mark.parametrize("method", ["brute", "cell"])
def test_periodic_translation_and_wrapping(triclinic, method):
    model = make_model("allegro", "sum", torch.float64)
    z, pos, box = _water_box(triclinic=triclinic)
    pot = OpenMMPotential(model, z.tolist(), periodic=True, dtype=torch.float64, neighbor_method=method)
    ctx = _context(pot, "Reference", len(z), box=box / 10.0)
    # atom 4 moved by b, atom 17 by -(a + c); then every atom wrapped into the cell
    assert_periodic_image_invariance(lambda p: openmm_energy_forces(ctx, p / 10.0), pos, box, moves={4: (0, 1, 0), 17: (-1, 0, -1)},
                                     wrap=True, energy=Tol(rtol=1e-9), forces=Tol(rtol=1e-7, rtol_largest=1e-8))


def test_box_too_small_and_bad_indices(tmp_path):
    from openmlip.errors import BoxError, ConfigError, SelectionError

    model = make_model("allegro", "sum", torch.float64)
    pot = OpenMMPotential(model, [8, 1, 1], periodic=True, dtype=torch.float64)
    with pytest.raises(BoxError, match=r"shorter than twice the model cutoff \(9 Å\); use a larger box"):
        pot.check_box(torch.eye(3) * 0.85)
    pot.check_box(torch.eye(3) * 1.2)
    # a model with its own Coulomb term between predicted charges: the box must hold that cutoff's sphere too
    # (minimum image), or the Coulomb energy silently loses the pairs between half the box and the cutoff
    es = make_model("allegro", "sum", torch.float64, electrostatics=True, coulomb_cutoff=7.0)
    pot = OpenMMPotential(es, [8, 1, 1], periodic=True, dtype=torch.float64)
    with pytest.raises(BoxError, match=r"shorter than twice the model's Coulomb cutoff \(14 Å\); use a larger box"):
        pot.check_box(torch.eye(3) * 1.2)
    pot.check_box(torch.eye(3) * 1.41)
    OpenMMPotential(es, [8, 1, 1], periodic=False, dtype=torch.float64)  # no box: no limit
    from ase import Atoms

    from openmlip.ase import Calculator
    from openmlip.deploy import save_model

    save_model(es, tmp_path / "es.pt")  # the ASE route refuses the same cells
    water = Atoms("OH2", positions=[[0, 0, 0], [0.957, 0, 0], [-0.24, 0.927, 0]], cell=[14.5, 13.9, 14.5], pbc=True)
    water.calc = Calculator(tmp_path / "es.pt")
    with pytest.raises(BoxError, match=r"periodic cell \(atoms.cell\) widths \[13.9\] Å are shorter than twice the model's "
                                       r"Coulomb cutoff \(14 Å\)"):
        water.pbc = [False, True, False]
        water.get_potential_energy()
    water.cell = [14.5, 14.1, 14.5]
    water.pbc = True
    assert np.isfinite(water.get_potential_energy())
    with pytest.raises(ConfigError, match=r"Coulomb term .* has no cutoff \(coulomb_cutoff <= 0\), which a periodic box"):
        OpenMMPotential(make_model("allegro", "sum", torch.float64, electrostatics=True, coulomb_cutoff=0.0), [8, 1, 1],
                        periodic=True)
    with pytest.raises(SelectionError, match=r"ML atom indices \[7\] out of range for a system of 5 particles"):
        OpenMMPotential(model, [8, 1, 1], indices=[0, 1, 7], num_particles=5)
    with pytest.raises(SelectionError, match="duplicates"):
        OpenMMPotential(model, [8, 1, 1], indices=[0, 1, 1], num_particles=5)
