"""openmmtools on openmlip ML/MM systems: alchemical factory (ligand decoupled, ML force kept) and a
multistate sampler that writes its storage file, stops, and resumes from it."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

import openmlip  # noqa: F401  (torch before openmm)
import openmm
import openmm.app as app
import openmm.unit as u
import openmmtorch  # noqa: F401  (so that System.getForce returns TorchForce, not a bare Force)

openmmtools = pytest.importorskip("openmmtools")
from openmmml import MLPotential  # noqa: E402

from helpers.physics import openmm_energy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "plugins" / "openmlip-xtb-v7" / "openmlip_plugin_openmlip_xtb_v7" / "model.pt"  # the shipped default
ML_ATOMS = [0, 1, 2, 3, 4]  # NH4+


@pytest.fixture(scope="module")
def cluster():
    """NH4+ with its 12 nearest TIP3P waters, no box (NoCutoff): ML NH4+ (mechanical embedding), MM water."""
    pdb = app.PDBFile(str(ROOT / "systems" / "ammonium-water" / "ammonium-water-small.pdb"))
    pos = pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer)
    n = pos[0]
    waters = [r for r in pdb.topology.residues() if r.name == "HOH"]
    waters.sort(key=lambda r: np.linalg.norm(pos[next(r.atoms()).index] - n))
    keep = {r.index for r in waters[:12]} | {0}
    m = app.Modeller(pdb.topology, pdb.positions)
    m.delete([r for r in m.topology.residues() if r.index not in keep])
    m.topology.setPeriodicBoxVectors(None)
    ff = app.ForceField("amber14/tip3p.xml", str(ROOT / "systems" / "ammonium-water" / "ammonium.xml"))
    mm = ff.createSystem(m.topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=True)
    pot = MLPotential("openmlip", modelPath=str(MODEL))
    mixed = pot.createMixedSystem(m.topology, mm, ML_ATOMS, charge=1, precision="double")
    assert [f for f in mixed.getForces() if _is_ml(f)], [type(f).__name__ for f in mixed.getForces()]
    return m.topology, mixed, np.asarray(m.getPositions().value_in_unit(u.nanometer))


def _is_ml(force) -> bool:
    return type(force).__name__ in ("TorchForce", "PythonForce") or force.getName() in ("TorchForce", "PythonForce")


def _energy(system, pos, params=None, groups=None):
    return openmm_energy(system, pos, platform="CPU", properties={"Threads": "1"}, params=params, groups=groups)


def test_alchemical_factory_on_mlmm_system(cluster):
    from openmmtools.alchemy import AbsoluteAlchemicalFactory, AlchemicalRegion, AlchemicalState

    top, mixed, pos = cluster
    factory = AbsoluteAlchemicalFactory()
    alch = factory.create_alchemical_system(mixed, AlchemicalRegion(alchemical_atoms=ML_ATOMS))
    assert [f for f in alch.getForces() if _is_ml(f)]  # the ML force is kept

    state = AlchemicalState.from_system(alch)
    full = _energy(alch, pos)
    e_orig = _energy(mixed, pos)
    assert full == pytest.approx(e_orig, abs=1e-3)  # λ = 1: the original ML/MM energy

    def at(lam, x):
        s = copy.deepcopy(alch)
        st = AlchemicalState.from_system(s)
        st.lambda_electrostatics = lam
        st.lambda_sterics = lam
        st.apply_to_system(s)
        return _energy(s, x)

    far = pos.copy()
    far[ML_ATOMS] += np.array([5.0, 0.0, 0.0])  # NH4+ 5 nm away from its waters
    # decoupled: the ligand–environment interaction is gone, so moving the ion away costs nothing ...
    assert at(0.0, pos) == pytest.approx(at(0.0, far), abs=1e-3)
    # ... while in the original system it does (NH4+ ... water hydrogen bonds: tens of kJ/mol)
    e_int = e_orig - _energy(mixed, far)
    assert e_int < -20.0
    # and at λ = 1 the alchemical system still feels it exactly
    assert full - at(1.0, far) == pytest.approx(e_int, abs=1e-3)
    # the ML force is still there: stretching an N–H bond of the decoupled ion changes the energy by exactly the
    # ML energy change (its MM bonds were removed by the ML/MM embedding)
    stretched = pos.copy()
    stretched[1] += 0.01 * (pos[1] - pos[0]) / np.linalg.norm(pos[1] - pos[0])
    grouped = copy.deepcopy(mixed)
    for f in grouped.getForces():
        f.setForceGroup(5 if _is_ml(f) else 0)
    d_ml = _energy(grouped, stretched, groups={5}) - _energy(grouped, pos, groups={5})
    assert abs(d_ml) > 1.0
    assert at(0.0, stretched) - at(0.0, pos) == pytest.approx(d_ml, abs=1e-3)
    assert state.lambda_sterics == 1.0


def test_multistate_storage_stop_and_resume(cluster, tmp_path):
    """Replica exchange (2 temperatures) over the ML/MM system: 2 iterations written to a .nc file, the sampler
    dropped, reopened from storage, continued to 4; the storage says 4 and the stored System has the same energy."""
    from openmmtools import cache, mcmc, multistate, states

    top, mixed, pos = cluster
    cache.global_context_cache.platform = openmm.Platform.getPlatformByName("CPU")
    path = str(tmp_path / "rex.nc")
    thermo = [states.ThermodynamicState(mixed, temperature=t * u.kelvin) for t in (300.0, 330.0)]
    box = None
    sampler_state = states.SamplerState(pos * u.nanometer, box_vectors=box)
    move = mcmc.LangevinDynamicsMove(timestep=0.5 * u.femtosecond, collision_rate=5 / u.picosecond, n_steps=10,
                                     reassign_velocities=True)
    sampler = multistate.ReplicaExchangeSampler(mcmc_moves=move, number_of_iterations=4)
    reporter = multistate.MultiStateReporter(path, checkpoint_interval=1)
    sampler.create(thermodynamic_states=thermo, sampler_states=[sampler_state], storage=reporter)
    sampler.run(n_iterations=2)
    assert sampler.iteration == 2
    reporter.close()
    del sampler  # "killed" after iteration 2

    resumed = multistate.ReplicaExchangeSampler.from_storage(path)
    assert resumed.iteration == 2  # continues where the file says
    resumed.run()  # up to number_of_iterations
    assert resumed.iteration == 4
    resumed._reporter.close()

    reporter = multistate.MultiStateReporter(path, open_mode="r")
    try:
        assert reporter.read_last_iteration() == 4
        energies, _, _ = reporter.read_energies()
        assert energies.shape[0] == 5 and np.all(np.isfinite(energies))  # iterations 0..4
        stored, _ = reporter.read_thermodynamic_states()
        e_stored = _energy(stored[0].system, pos)
    finally:
        reporter.close()
    assert e_stored == pytest.approx(_energy(mixed, pos), abs=1e-4)  # the TorchForce survived the round trip
