"""The electrostatic embedding's long range: reference charges in OpenMM's PME + Δq in the graph ('split', the
default) against the exact mode (the predicted charges in a PME inside the graph, 'pme') and against OpenMM itself;
net charge, forces, NVE, free energy, λ derivatives and openmmtools' alchemy of an embedded region."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import openmm
import openmm.app as app
import openmm.unit as u
from helpers.physics import Tol, assert_forces_match_finite_differences, langevin_frames, openmm_energy_forces
from helpers.stubs import FixedChargeModel, install, mm_intramolecular_terms
from helpers.systems import SYSTEMS, make_model
from openmlip import units
from openmlip.deploy import save_model
from openmlip.errors import ConfigError
from openmmml import MLPotential

ML = [0, 1, 2, 3, 4]  # NH4+
Q_MM = [-0.40, 0.35, 0.35, 0.35, 0.35]  # its charges in ammonium.xml
FOLDER = SYSTEMS / "ammonium-water"
NB_GROUP, ML_GROUP = 2, 1


def _mm(cutoff=0.9, tolerance=1e-6, alpha=None, constraints=None, switch=None, structure="ammonium-water.pdb"):
    """ammonium-water's MM System (NH4+, Cl-, 338 TIP3P, 2.2 nm box, PME; ``ammonium-water-small.pdb``: 122 waters,
    1.6 nm), NonbondedForce in its own group."""
    pdb = app.PDBFile(str(FOLDER / structure))
    ff = app.ForceField("amber14/tip3p.xml", str(FOLDER / "ammonium.xml"))
    system = ff.createSystem(pdb.topology, nonbondedMethod=app.PME, nonbondedCutoff=cutoff * u.nanometer,
                             constraints=constraints, rigidWater=True,
                             **({} if switch is None else {"switchDistance": switch * u.nanometer}))
    for f in system.getForces():
        f.setForceGroup(NB_GROUP if isinstance(f, openmm.NonbondedForce) else 0)
        if isinstance(f, openmm.NonbondedForce):
            f.setEwaldErrorTolerance(tolerance)
            if alpha is not None:  # the mesh of OpenMM's default rule at this tolerance, with a chosen α
                n = int(np.ceil(2 * alpha * 2.2 / (3 * tolerance ** 0.2)))
                f.setPMEParameters(alpha, n, n, n)
    return pdb, system


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(make_model("allegro", "charge-gated", torch.float64, seed=3), path)
    return str(path)


def _mixed(model_file, system, topology, stub=None, **kw):
    pot = MLPotential("openmlip", modelPath=model_file)
    if stub is not None:
        install(pot, stub)
    return pot.createMixedSystem(topology, system, ML, embedding="electrostatic", forceGroup=ML_GROUP, **kw)


def _nb_charges(system):
    nb = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    return np.array([nb.getParticleParameters(i)[0].value_in_unit(u.elementary_charge) for i in range(system.getNumParticles())])


def _damping_sum(pos_nm, box_nm, q_ml, q_mm, a_nm):
    """k_e Σ_{i∈ML, j∈MM} q_i Q_j (erf(r/a) − 1)/r, minimum image (kJ/mol)."""
    from scipy.special import erf

    d = pos_nm[None, 5:] - pos_nm[ML][:, None]
    d -= np.round(d / np.diag(box_nm)) * np.diag(box_nm)
    r = np.linalg.norm(d, axis=-1)
    return units.COULOMB_EV_ANGSTROM * units.EV_TO_KJ_PER_MOL / units.NM_TO_ANGSTROM * np.sum(
        np.asarray(q_ml)[:, None] * np.asarray(q_mm)[None, 5:] * (erf(r / a_nm) - 1.0) / r)


# -- 1. identity and 2. the exact mode against OpenMM ------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["split", "pme"])
def test_charges_equal_to_the_mm_charges_reproduce_the_mm_coulomb(model_file, mode):
    """A model predicting the MM charges: NonbondedForce + TorchForce = the MM NonbondedForce alone (the ML–ML pairs
    of NH4+ are all exclusions there) — to 1e-9 relative for 'split' (the same PME), to 2e-6 for 'pme' (torch-pme's
    mesh against OpenMM's at tolerance 1e-6); forces to 1e-6 kJ/mol/nm and 3e-5 of the largest force.  With the default damping the
    difference is the closed-form damping sum (0.1 nm here)."""
    pdb, system = _mm()
    pos = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer))
    box = np.array([[system.getDefaultPeriodicBoxVectors()[i][j].value_in_unit(u.nanometer) for j in range(3)] for i in range(3)])
    e_mm, f_mm = openmm_energy_forces(system, pos, groups={NB_GROUP})
    mixed = _mixed(model_file, system, pdb.topology, FixedChargeModel(Q_MM), embeddingLongRange=mode,
                   embeddingDampingLength=1e-6)
    e, f = openmm_energy_forces(mixed, pos, groups={NB_GROUP, ML_GROUP})
    rtol, ftol = (1e-9, 1e-6) if mode == "split" else (2e-6, 3e-5 * np.abs(f_mm).max())
    assert abs(e - e_mm) <= rtol * abs(e_mm), (e, e_mm)
    assert np.abs(f - f_mm).max() <= ftol
    e_ml, _ = openmm_energy_forces(mixed, pos, groups={ML_GROUP})
    if mode == "split":
        assert e_ml == 0.0 and np.allclose(_nb_charges(mixed)[ML], Q_MM, atol=1e-12)
    else:  # the graph carries all ML-MM electrostatics, and the ML region's images (OpenMM: E(all) - E(ML charges 0))
        assert abs(e_ml) > 100.0 and np.all(_nb_charges(mixed)[ML] == 0.0)
    damped = _mixed(model_file, system, pdb.topology, FixedChargeModel(Q_MM), embeddingLongRange=mode,
                    embeddingDampingLength=0.1)  # the default 0.05 nm changes this frame by 3e-5 kJ/mol only
    e_damped, _ = openmm_energy_forces(damped, pos, groups={NB_GROUP, ML_GROUP})
    expected = _damping_sum(pos, box, Q_MM, _nb_charges(system), 0.1)
    assert abs(expected) > 0.1  # the first shell's H-bonds feel a 0.1 nm smearing
    assert abs((e_damped - e) - expected) <= (1e-10 if mode == "split" else 1e-6) * abs(e_mm)


def test_the_capturable_mesh_is_torch_pme_s_mesh_ewald():
    """openmlip.nn.mesh_ewald.MeshEwald (the mesh size as Python integers: no host synchronisation) against torch-pme
    0.5.0's MeshInterpolator + KSpaceFilter on a triclinic cell, two charge channels, particles outside the cell: equal
    to float64 rounding (measured 4e-16 of potentials ~1), eager and scripted; forces through it by autograd."""
    import math

    from torchpme import CoulombPotential
    from torchpme.lib import KSpaceFilter, MeshInterpolator

    from openmlip.nn.mesh_ewald import MeshEwald

    gen = torch.Generator().manual_seed(0)
    alpha, ns = 0.35, [20, 18, 24]
    cell = torch.tensor([[22.0, 0, 0], [1.0, 21.0, 0], [-0.5, 0.7, 23.0]], dtype=torch.float64)
    pos = torch.rand(50, 3, dtype=torch.float64, generator=gen) @ cell * 1.3 - 2.0
    q = torch.randn(50, 2, dtype=torch.float64, generator=gen)
    mesh = torch.tensor(ns)
    interpolator = MeshInterpolator(cell, mesh, 4, "Lagrange")
    kspace = KSpaceFilter(cell, mesh, kernel=CoulombPotential(smearing=1 / (math.sqrt(2) * alpha)), fft_norm="backward",
                          ifft_norm="forward")
    interpolator.compute_weights(pos)
    volume = torch.abs(torch.linalg.det(cell))
    expected = (interpolator.mesh_to_points(kspace.forward(interpolator.points_to_mesh(q))) / volume
                - 2 * alpha / math.sqrt(math.pi) * q - math.pi / alpha ** 2 * q.sum(0, keepdim=True) / volume)
    ours = MeshEwald(alpha, ns)
    for module in (ours, torch.jit.script(ours)):
        assert (module(q, pos, cell) - expected).abs().max() < 1e-13 * expected.abs().max()
    p = pos.clone().requires_grad_(True)
    energy = 0.5 * (q[:, :1] * ours(q[:, :1], p, cell)).sum()
    (grad,) = torch.autograd.grad(energy, p)
    step = torch.zeros_like(pos)
    step[7, 1] = 1e-5
    fd = (0.5 * (q[:, :1] * ours(q[:, :1], pos + step, cell)).sum() - 0.5 * (q[:, :1] * ours(q[:, :1], pos - step, cell)).sum()) / 2e-5
    assert abs(float(fd) - float(grad[7, 1])) < 1e-6 * max(1.0, abs(float(fd)))


def test_split_is_within_a_kj_per_mol_of_the_exact_mode_on_md_frames(model_file):
    """20 MD frames of ammonium-water, the shipped default's predicted charges: the split mode's energy within 1.5
    kJ/mol of the exact mode's on every frame, mean |error| < 0.5, at MM cutoffs 0.7, 0.9 and 1.1 nm, while the old
    cutoff-only sum was off by ~100 kJ/mol.  The error depends on the Δq kernel's cutoff alone (0.99 nm by default
    here, 0.45 of the 2.2 nm box, for the two shorter MM cutoffs): measured mean 0.73, 0.47, 0.41, 0.34 kJ/mol at
    Δq cutoffs 0.7, 0.9, 1.0, 1.05 nm with either MM cutoff."""
    pdb, system = _mm(0.9, 5e-4)
    frames = [p for p, _ in langevin_frames(system, pdb.positions, frames=20, interval=100, seed=7)]
    pot = MLPotential("openmlip-xtb-v7")
    worst = {}
    for cutoff in (0.7, 0.9, 1.1):
        _, mm = _mm(cutoff, 1e-5)
        energies = []
        for mode in ("split", "pme"):
            mixed = pot.createMixedSystem(pdb.topology, mm, ML, embedding="electrostatic", embeddingLongRange=mode,
                                          precision="double")
            c = openmm.Context(mixed, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
            energies.append([openmm_energy_forces(c, p, forces=False)[0] for p in frames])
        err = np.abs(np.subtract(*energies))
        worst[cutoff] = (err.max(), err.mean())
    print("split - exact, max and mean |error| (kJ/mol) by MM cutoff:", worst)
    assert all(mx < 1.5 and mean < 0.5 for mx, mean in worst.values()), worst


# -- 3. a net-charged region: no dependence on the Ewald α --------------------------------------------------------------
@pytest.mark.parametrize("mode", ["split", "pme"])
def test_net_charge_energy_is_independent_of_ewald_alpha(model_file, mode):
    """NH4+ (ML, +1) with a Cl- in MM: the total energy with α = 3.2 and 4.6 /nm (cutoff 1.1 nm: erfc(α r_c) < 1e-6
    for both) agrees to 0.01 kJ/mol; the neutralising-background terms alone differ by 1 kJ/mol between the two."""
    energies = []
    for alpha in (3.2, 4.6):
        pdb, system = _mm(1.1, 1e-6, alpha=alpha)
        mixed = _mixed(model_file, system, pdb.topology, embeddingLongRange=mode)
        energies.append(openmm_energy_forces(mixed, pdb.positions, forces=False)[0])
    assert abs(energies[0] - energies[1]) < 0.01, energies
    # the neutralising-background terms the graph adds (ML +1 against its own images' background and the MM's -1):
    # k pi (Q_ML^2 / 2 + Q_ML Q_MM) / (V alpha^2) differs by > 1 kJ/mol between the two α, so dropping them would show
    k = units.COULOMB_EV_ANGSTROM * units.EV_TO_KJ_PER_MOL / units.NM_TO_ANGSTROM  # kJ/mol nm
    background = [k * np.pi * (0.5 - 1.0) / (2.2 ** 3 * a ** 2) for a in (3.2, 4.6)]
    assert abs(background[0] - background[1]) > 1.0


# -- 4. forces and NVE --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["split", "pme"])
def test_forces_are_minus_the_gradient_on_ml_atoms_and_far_mm_atoms(model_file, mode):
    pdb, system = _mm(0.9, 1e-5)
    pos = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer))
    mixed = _mixed(model_file, system, pdb.topology, embeddingLongRange=mode)
    e, f = openmm_energy_forces(mixed, pos, groups={ML_GROUP})
    d = pos - pos[0]
    d -= np.round(d / 2.2) * 2.2
    dist = np.linalg.norm(d, axis=1)
    far = int(np.argmin(np.abs(dist - 1.2) + 10.0 * (_nb_charges(system) == 0.0)))  # a charged MM atom 1.2 nm away
    assert abs(dist[far] - 1.2) < 0.05
    coords = [(a, k) for a in (0, 1, far) for k in range(3)]
    assert_forces_match_finite_differences(lambda p: openmm_energy_forces(mixed, p, groups={ML_GROUP}, forces=False)[0],
                                           pos, f, h=1e-5, coords=coords, tol=Tol(rtol=1e-5, floor=1e-2))
    if mode == "pme":  # beyond the embedding cutoff only the mesh reaches it: the ML charges' field
        assert np.linalg.norm(f[far]) > 1e-3
    else:  # beyond the cutoff the graph gives it nothing: OpenMM's PME of the reference charges does
        assert np.linalg.norm(f[far]) < 1e-10


def test_nve_error_scales_as_dt_squared_and_drifts_like_mm(model_file):
    """Velocity Verlet on the embedded NH4+ in 122 rigid waters (SETTLE at 1e-10, LJ switched from 0.6 to 0.7 nm,
    PME at 1e-6): the RMS fluctuation of the total energy at 0.5 fs is 4 ± 1 times that at 0.25 fs (measured 4.0, as
    for the MM System; at PME tolerance 5e-5 the mesh's own noise brings both to 3), and its drift over 0.1 ps at most
    twice that of the same MM System (plus 0.05 kJ/mol of noise)."""
    def start(system):
        ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
        ctx.setPositions(pdb.positions)
        openmm.LocalEnergyMinimizer.minimize(ctx, 1.0, 200)
        return ctx.getState(getPositions=True).getPositions()

    def run(system, dt_fs, steps, positions, samples=40):
        integ = openmm.VerletIntegrator(dt_fs * u.femtosecond)
        integ.setConstraintTolerance(1e-10)
        ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
        ctx.setPositions(positions)
        ctx.applyConstraints(1e-10)
        ctx.setVelocitiesToTemperature(300 * u.kelvin, 11)
        total = []
        for _ in range(samples):
            integ.step(steps // samples)
            st = ctx.getState(getEnergy=True)
            total.append((st.getPotentialEnergy() + st.getKineticEnergy()).value_in_unit(u.kilojoule_per_mole))
        t = np.arange(samples)
        fit = np.polyfit(t, total, 1)
        return np.std(np.asarray(total) - np.polyval(fit, t)), abs(fit[0] * samples)

    pdb, mm = _mm(0.7, 1e-6, switch=0.6, structure="ammonium-water-small.pdb")
    mixed = _mixed(model_file, mm, pdb.topology, precision="double")
    minimised = start(copy.deepcopy(mixed))  # once: both time steps start from the same state
    rms_half, drift = run(copy.deepcopy(mixed), 0.5, 200, minimised)
    rms_quarter, _ = run(copy.deepcopy(mixed), 0.25, 400, minimised)
    _, drift_mm = run(mm, 0.5, 200, start(mm))
    assert 3.0 <= rms_half / rms_quarter <= 5.0, (rms_half, rms_quarter)
    assert drift <= 2.0 * drift_mm + 0.05, (drift, drift_mm)


# -- 5. free energy: an ML/MM System that is the MM System has ΔU ≡ 0 ------------------------------------------------------
@pytest.mark.parametrize("mode", ["split", "pme"])
def test_interpolation_of_a_model_equal_to_mm_changes_nothing(model_file, mode):
    """q = q_MM and E_ML = the MM intramolecular energy of NH4+: ΔU = E(λ=1) − E(λ=0) vanishes (< 1e-6 kJ/mol for
    'split', < 1e-3 for 'pme', whose mesh is a second PME) on perturbed frames."""
    pdb, system = _mm(0.9, 1e-6)
    bonds, angles = mm_intramolecular_terms(system, ML)
    stub = FixedChargeModel(Q_MM, bonds=bonds, angles=angles)
    interp = _mixed(model_file, system, pdb.topology, stub, interpolate=True, embeddingLongRange=mode,
                    embeddingDampingLength=1e-6)
    ctx = openmm.Context(interp, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    rng = np.random.default_rng(1)
    pos0 = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer))
    for _ in range(3):
        pos = pos0.copy()
        pos[ML] += rng.normal(scale=0.005, size=(5, 3))
        e = [openmm_energy_forces(ctx, pos, params={"lambda_interpolate": lam}, forces=False)[0] for lam in (0.0, 1.0)]
        assert abs(e[1] - e[0]) < (1e-6 if mode == "split" else 1e-3), e


# -- 6. λ: exact parameter derivatives, openmmtools decoupling ---------------------------------------------------------
def _derivative(ctx, name):
    return ctx.getState(getParameterDerivatives=True).getEnergyParameterDerivatives()[name]


def test_lambda_interpolate_derivative_is_exact(model_file):
    """dE/dλ of lambda_interpolate from OpenMM = E(λ=1) − E(λ=0) (E is linear in λ) = a central difference."""
    pdb, system = _mm(0.9, 5e-4)
    interp = _mixed(model_file, system, pdb.topology, interpolate=True)
    ctx = openmm.Context(interp, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(pdb.positions)
    e = {}
    for lam in (0.0, 0.5 - 1e-4, 0.5 + 1e-4, 1.0):
        ctx.setParameter("lambda_interpolate", lam)
        e[lam] = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    ctx.setParameter("lambda_interpolate", 0.5)
    d = _derivative(ctx, "lambda_interpolate")
    assert abs(e[1.0] - e[0.0]) > 100.0  # the model's energy zero: a real difference
    assert d == pytest.approx(e[1.0] - e[0.0], rel=1e-8)
    assert d == pytest.approx((e[0.5 + 1e-4] - e[0.5 - 1e-4]) / 2e-4, rel=1e-6)


def test_openmmtools_decouples_the_embedded_region_exactly(model_file):
    """AbsoluteAlchemicalFactory on the ML region: its reference charges are decoupled by openmmtools (exact PME), the
    graph's Δq term follows lambda_electrostatics: at λ = 0 moving the region costs only its internal energy (zero for
    a rigid move), and the graph's dE/dλ_elec equals a central difference."""
    from openmmtools.alchemy import AbsoluteAlchemicalFactory, AlchemicalRegion, AlchemicalState

    pdb, system = _mm(0.9, 5e-4)
    mixed = _mixed(model_file, system, pdb.topology)
    alch = AbsoluteAlchemicalFactory().create_alchemical_system(mixed, AlchemicalRegion(alchemical_atoms=ML))
    ctx = openmm.Context(alch, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    pos = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer))
    moved = pos.copy()
    moved[ML] += np.array([0.25, -0.1, 0.15])

    def energy(x, lam_elec, lam_sterics=1.0, groups=None):
        state = AlchemicalState.from_system(alch)
        state.lambda_electrostatics, state.lambda_sterics = lam_elec, lam_sterics
        state.apply_to_context(ctx)
        return openmm_energy_forces(ctx, x, forces=False, **({"groups": groups} if groups else {}))[0]

    # λ = 1: the embedded System's energy (to the PME error of openmmtools' own mesh at tolerance 5e-4)
    assert energy(pos, 1.0) == pytest.approx(openmm_energy_forces(mixed, pos, forces=False)[0], abs=0.01)
    assert energy(pos, 0.0, 0.0) == pytest.approx(energy(moved, 0.0, 0.0), abs=1e-4)
    assert abs(energy(pos, 1.0, 0.0) - energy(moved, 1.0, 0.0)) > 1.0  # coupled, the move costs electrostatics
    h = 1e-4
    central = (energy(pos, 0.5 + h, groups={ML_GROUP}) - energy(pos, 0.5 - h, groups={ML_GROUP})) / (2 * h)
    energy(pos, 0.5)
    torch_derivative = _derivative(ctx, "lambda_electrostatics")
    assert abs(central) > 1e-2
    assert torch_derivative == pytest.approx(central, rel=1e-5)


# -- 7. what works today keeps working ---------------------------------------------------------------------------------
def test_exact_mode_serialises_and_refuses_what_it_cannot_do(model_file):
    pdb, system = _mm(0.9, 5e-4)
    mixed = _mixed(model_file, system, pdb.topology, embeddingLongRange="pme")
    clone = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(mixed))
    a = openmm_energy_forces(mixed, pdb.positions, forces=False)[0]
    b = openmm_energy_forces(clone, pdb.positions, forces=False)[0]
    assert a == b
    with pytest.raises(ConfigError, match="embeddingLongRange='spme' is not one of 'split', 'pme'"):
        _mixed(model_file, system, pdb.topology, embeddingLongRange="spme")
    ff = app.ForceField("amber14/tip3p.xml", str(FOLDER / "ammonium.xml"))
    cut = ff.createSystem(pdb.topology, nonbondedMethod=app.CutoffPeriodic, nonbondedCutoff=0.9 * u.nanometer)
    with pytest.raises(ConfigError, match="embeddingLongRange='pme' needs a System whose NonbondedForce uses PME"):
        _mixed(model_file, cut, pdb.topology, embeddingLongRange="pme")
    with pytest.raises(ConfigError, match="needs backend='torchforce'"):
        _mixed(model_file, system, pdb.topology, backend="pythonforce")
