"""Systems holding openmlip forces behave like any OpenMM System: XML round trips, deepcopy, pickle,
CustomCVForce, openmm-ml's interpolation inside a TorchForce (no PythonForce fallback).

These need an openmm/openmm-torch pair whose ABI matches (openmm 8.5.2 + openmmtorch 1.5: see
docs/design.md, "The stack"); on openmm >= 8.6 deserialising a TorchForce segfaults.
"""
from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import openmm
import openmm.app as app
from helpers.physics import Tol, assert_energy_forces_match, openmm_energy_forces
from helpers.systems import ammonium_water_mm, make_model
from openmlip.deploy import load_model, save_model
from openmlip.openmm import OpenMMPotential, create_force
from openmmml import MLPotential

SYSTEMS = Path(__file__).resolve().parent.parent / "systems"
NH4 = [0, 1, 2, 3, 4]  # the ammonium ion in systems/ammonium-water


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(make_model("allegro", "smoothmax", torch.float64, seed=5), path)
    return str(path)


@pytest.fixture(scope="module")
def water_box():
    return ammonium_water_mm()


def _state(system, positions, platform="Reference", params=None):
    return openmm_energy_forces(system, positions, platform=platform, params=params)


def _copies(system):
    xml = openmm.XmlSerializer.serialize(system)
    return {"xml": openmm.XmlSerializer.deserialize(xml), "deepcopy": copy.deepcopy(system),
            "pickle": pickle.loads(pickle.dumps(system))}


def _assert_same(system, positions, platforms=("Reference", "CPU"), params=None):
    """Energies and forces of the copies equal the original's: to rounding on Reference; to the CPU platform's
    own run-to-run reproducibility there (single-precision forces summed in a thread-dependent order: energies
    ~1e-10 relative, forces ~4e-6 relative)."""
    for platform in platforms:
        e0, f0 = _state(system, positions, platform, params)
        rel_e, rel_f, atol_f = (1e-12, 1e-10, 1e-8) if platform == "Reference" else (1e-8, 2e-5, 1e-2)
        for how, clone in _copies(system).items():
            # pytest.approx(rel=rel_e, abs=1e-9) is max(rel_e |E|, 1e-9); numpy's allclose for the forces
            assert_energy_forces_match(_state(clone, positions, platform, params), (e0, f0), energy=Tol(rtol=rel_e, floor=1e-9 / rel_e),
                                       forces=Tol(rtol=rel_f, atol=atol_f), what=f"{platform} {how}")


def test_torchforce_xml_round_trip_does_not_crash_the_interpreter(model_file):
    """The ABI check in a child process: on a mismatched openmm/openmm-torch pair this is a segfault."""
    code = textwrap.dedent(f"""
        import openmlip, openmm
        from openmlip.deploy import load_model
        from openmlip.openmm import OpenMMPotential, create_force
        model, _ = load_model({model_file!r})
        s = openmm.System(); [s.addParticle(1.0) for _ in range(5)]
        s.addForce(create_force(OpenMMPotential(model, [7, 1, 1, 1, 1], total_charge=1)))
        s2 = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(s))
        print("ROUNDTRIP", 'type="TorchForce"' in openmm.XmlSerializer.serialize(s2))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (
        f"XmlSerializer round trip of a TorchForce failed with rc {res.returncode} (segfault = -11): "
        f"openmm {openmm.__version__} and openmmtorch do not match; use the pins in pyproject.toml.\n{res.stderr[-2000:]}")
    assert "ROUNDTRIP True" in res.stdout


def test_whole_ml_system_survives_xml_deepcopy_and_pickle(model_file):
    pdb = app.PDBFile(str(SYSTEMS / "ammonium-water" / "ammonium-water.pdb"))
    top = app.Topology()
    chain = top.addChain()
    res = top.addResidue("NH4", chain)
    atoms = [top.addAtom(a.name, a.element, res) for a in list(pdb.topology.atoms())[:5]]
    for h in atoms[1:]:
        top.addBond(atoms[0], h)
    system = MLPotential("openmlip", modelPath=model_file).createSystem(top, charge=1)
    _assert_same(system, pdb.positions[:5])


@pytest.mark.parametrize("embedding", ["mechanical", "electrostatic"])
@pytest.mark.parametrize("interpolate", [False, True], ids=["plain", "interpolated"])
def test_mixed_systems_survive_xml_deepcopy_and_pickle(model_file, water_box, embedding, interpolate):
    pdb, mm = water_box
    mixed = MLPotential("openmlip", modelPath=model_file).createMixedSystem(
        pdb.topology, mm, NH4, embedding=embedding, interpolate=interpolate)
    # CPU only: Reference PME on 1,000 atoms is slow, and the CPU platform is the one that once rejected the
    # interpolated electrostatic System ("All Forces must have identical exclusions")
    _assert_same(mixed, pdb.positions, platforms=("CPU",), params={"lambda_interpolate": 0.3} if interpolate else None)


def test_mechanical_interpolation_runs_the_ml_terms_in_a_torchforce(model_file, water_box):
    """openmm-ml clones the ML terms into a CustomCVForce through XML: on this stack they stay TorchForces."""
    pdb, mm = water_box
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the old PythonForce fallback warned
        mixed = MLPotential("openmlip", modelPath=model_file).createMixedSystem(pdb.topology, mm, NH4, interpolate=True)
    cvs = [f for f in mixed.getForces() if isinstance(f, openmm.CustomCVForce)]
    xml = [openmm.XmlSerializer.serialize(cv.getCollectiveVariable(k)) for cv in cvs for k in range(cv.getNumCollectiveVariables())]
    assert any('type="TorchForce"' in x for x in xml) and not any("PythonForce" in x for x in xml)
    plain = MLPotential("openmlip", modelPath=model_file).createMixedSystem(pdb.topology, mm, NH4)
    e_mm, _ = _state(mm, pdb.positions)
    e_ml, f_ml = _state(plain, pdb.positions)
    e1, f1 = _state(mixed, pdb.positions, params={"lambda_interpolate": 1.0})
    e0, _ = _state(mixed, pdb.positions, params={"lambda_interpolate": 0.0})
    assert e0 == pytest.approx(e_mm, rel=1e-9)
    assert_energy_forces_match((e1, f1), (e_ml, f_ml), energy=Tol(rtol=1e-9, floor=1e-3), forces=Tol(rtol=1e-7, atol=1e-6))


def test_openmlip_torchforce_as_a_collective_variable(model_file):
    """A CustomCVForce of an openmlip TorchForce: E = 2 e + 0.5 k (e - e0)^2, forces by the chain rule, and MD runs."""
    model, _ = load_model(model_file)
    d = 0.103 / np.sqrt(3.0)
    pos = np.array([[0, 0, 0], [d, d, d], [-d, -d, d], [-d, d, -d], [d, -d, -d]]) + 0.002 * np.arange(15).reshape(5, 3) ** 0.5
    force = create_force(OpenMMPotential(model, [7, 1, 1, 1, 1], total_charge=1, formal_charges=[1, 0, 0, 0, 0],
                                         output_forces=True))
    plain = openmm.System()
    for m in (14.0, 1.0, 1.0, 1.0, 1.0):
        plain.addParticle(m)
    cv_system = copy.deepcopy(plain)
    plain.addForce(copy.deepcopy(force))
    e, f = _state(plain, pos)
    e0 = e + 3.0
    cv = openmm.CustomCVForce("2*e + 0.5*k*(e - e0)^2")
    cv.addGlobalParameter("k", 0.7)
    cv.addGlobalParameter("e0", e0)
    cv.addCollectiveVariable("e", force)
    cv_system.addForce(cv)
    for platform in ("Reference", "CPU"):
        ecv, fcv = _state(cv_system, pos, platform)
        assert ecv == pytest.approx(2 * e + 0.5 * 0.7 * 9.0, rel=1e-10)
        np.testing.assert_allclose(fcv, (2 + 0.7 * (e - e0)) * f, rtol=1e-8, atol=1e-8)
    ctx = openmm.Context(cv_system, openmm.LangevinMiddleIntegrator(300, 1, 0.0002), openmm.Platform.getPlatformByName("CPU"))
    ctx.setPositions(pos)
    ctx.getIntegrator().step(20)
    assert np.isfinite(ctx.getState(getEnergy=True).getPotentialEnergy()._value)
