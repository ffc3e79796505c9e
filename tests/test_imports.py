"""Imported models (``openmlip import``) equal their framework's own calculator, in ASE and in OpenMM.

nequip and Allegro: tiny models trained with ``nequip-train`` for one epoch on EMT-labelled H/C/N/O data and
compiled with ``nequip-compile --mode torchscript`` (benchmarks/peers/nequip_models.py), compared with nequip's
``NequIPCalculator``.  MACE: the scripted fixture in tests/data/mace with the energies and forces MACE's own
``MACECalculator`` gave (benchmarks/peers/make_mace_fixture.py, run in MACE's venv); mace-torch is not needed.
Structures: acetamide, the charged cluster NH4+(H2O)2 and a periodic box of 20 waters split across the faces.
"""
from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import openmlip  # noqa: F401  -- torch before openmm
import openmm
import openmm.unit as u

from helpers.physics import (Tol, assert_energy_forces_match, assert_forces_match_finite_differences,
                             assert_invariant_energy_equivariant_forces, openmm_energy_forces)
from openmlip import units
from openmlip.errors import ConfigError, ModelFileError

ROOT = Path(__file__).resolve().parent.parent
MACE_DIR = ROOT / "tests" / "data" / "mace"
sys.path.insert(0, str(ROOT / "benchmarks" / "peers"))

KINDS = [("nequip", "float64"), ("allegro", "float64"), ("allegro", "float32")]
# relative energy tolerance and force tolerance (relative to the largest force component)
TOL = {"float64": 1e-6, "float32": 2e-5}


def structures():
    """The fixture's structures: list of (ase.Atoms, total charge)."""
    from ase import Atoms

    r = np.load(MACE_DIR / "mace-tiny-float64-reference.npz")
    out = []
    for k in range(3):
        a = Atoms(numbers=r[f"s{k}_numbers"], positions=r[f"s{k}_positions"], cell=r[f"s{k}_cell"], pbc=r[f"s{k}_pbc"])
        a.info["charge"] = int(r[f"s{k}_charge"])
        out.append(a)
    return out


@pytest.fixture(scope="session")
def nequip_models(tmp_path_factory):
    """{(kind, dtype): (compiled .nequip.pth, imported openmlip .pt)} built with the real nequip framework."""
    from nequip_models import build

    from openmlip.imports import import_model

    d = tmp_path_factory.mktemp("nequip")
    out = {}
    for kind, dtype in KINDS:
        compiled = build(d, kind, "tiny", dtype)
        imported = d / f"{kind}-{dtype}.openmlip.pt"
        import_model(compiled, imported)
        out[(kind, dtype)] = (compiled, imported)
    return out


@pytest.fixture(scope="session")
def mace_models(tmp_path_factory):
    from openmlip.imports import import_model

    d = tmp_path_factory.mktemp("mace")
    out = {}
    for dtype in ("float64", "float32"):
        imported = d / f"mace-{dtype}.openmlip.pt"
        import_model(MACE_DIR / f"mace-tiny-{dtype}.pt", imported)
        out[dtype] = imported
    return out


@functools.lru_cache(maxsize=None)
def nequip_calculator(compiled):
    from nequip.integrations.ase import NequIPCalculator

    default = torch.get_default_dtype()
    try:  # nequip's loader sets torch's default dtype to float64 for the whole process: keep other tests' default
        return NequIPCalculator.from_compiled_model(str(compiled), device="cpu", chemical_species_to_atom_type_map=True)
    finally:
        torch.set_default_dtype(default)


def nequip_reference(compiled, atoms):
    """nequip's own calculator, in the global state nequip sets for itself (default dtype float64: its ``from_ase``
    builds positions in the default dtype) and restores for the rest of the process afterwards."""
    a = atoms.copy()
    a.calc = nequip_calculator(str(compiled))
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return float(a.get_potential_energy()), np.asarray(a.get_forces())
    finally:
        torch.set_default_dtype(default)


def mace_reference(dtype):
    r = np.load(MACE_DIR / f"mace-tiny-{dtype}-reference.npz")
    return [(float(r[f"s{k}_energy"]), r[f"s{k}_forces"]) for k in range(3)]


def assert_same(e, f, e_ref, f_ref, dtype, what):
    """Energy to TOL relative (at least 1 eV scale); forces to 10 TOL of the largest force (at least 1e-3 eV/Å)."""
    tol = TOL[dtype]
    assert_energy_forces_match((e, f), (e_ref, f_ref), energy=Tol(rtol=tol, floor=1.0),
                               forces=Tol(rtol=10 * tol, floor=1e-3, of="largest"), what=what)


@functools.lru_cache(maxsize=None)
def openmlip_calculator(imported, dtype):
    from openmlip.ase import Calculator

    return Calculator(imported, dtype=getattr(torch, dtype))


def openmlip_ase(imported, atoms, dtype):
    a = atoms.copy()
    a.calc = openmlip_calculator(str(imported), dtype)
    return float(a.get_potential_energy()), np.asarray(a.get_forces())


def openmm_route(model_path, atoms, platforms, precision):
    """{platform: (energy eV, forces eV/Å)} of ``atoms`` as one whole-ML OpenMM System built by openmm-ml."""
    from openmmml import MLPotential

    from openmlip.md.structure import xyz_topology

    top = xyz_topology(atoms)
    n = len(atoms)
    kwargs = dict(charge=atoms.info["charge"], precision=precision)
    box = None
    if atoms.pbc.any():
        box = np.asarray(atoms.cell) * units.ANGSTROM_TO_NM
        top.setPeriodicBoxVectors(box)
        kwargs["formalCharges"] = [0.0] * n  # split molecules have no bonds to infer formal charges from
    system = MLPotential("openmlip", modelPath=str(model_path)).createSystem(top, **kwargs)
    out = {}
    for platform in platforms:
        e, f = openmm_energy_forces(system, atoms.positions * units.ANGSTROM_TO_NM, platform=platform, box=box)
        out[platform] = (e * units.KJ_PER_MOL_TO_EV, f * units.KJ_PER_MOL_NM_TO_EV_PER_ANGSTROM)
    return out


@pytest.mark.parametrize("kind,dtype", KINDS)
def test_nequip_import_equals_nequip_calculator(nequip_models, kind, dtype):
    """ASE route on all three structures; OpenMM (openmm-ml createSystem) on the periodic water box (Reference
    and CPU platforms for nequip, CPU for Allegro) and the charged cluster (nequip, CPU)."""
    compiled, imported = nequip_models[(kind, dtype)]
    for k, atoms in enumerate(structures()):
        e_ref, f_ref = nequip_reference(compiled, atoms)
        e, f = openmlip_ase(imported, atoms, dtype)
        assert_same(e, f, e_ref, f_ref, dtype, f"{kind} {dtype} ASE structure {k}")
        platforms = {0: (), 1: ("CPU",) if kind == "nequip" else (), 2: ("Reference", "CPU") if kind == "nequip" else ("CPU",)}
        if platforms[k]:
            got = openmm_route(imported, atoms, platforms[k], "double" if dtype == "float64" else "single")
            for platform, (e, f) in got.items():
                assert_same(e, f, e_ref, f_ref, dtype, f"{kind} {dtype} OpenMM {platform} structure {k}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mace_import_equals_mace_calculator(mace_models, dtype):
    for k, (atoms, (e_ref, f_ref)) in enumerate(zip(structures(), mace_reference(dtype))):
        e, f = openmlip_ase(mace_models[dtype], atoms, dtype)
        assert_same(e, f, e_ref, f_ref, dtype, f"MACE {dtype} ASE structure {k}")
        if k == 2 or (k == 1 and dtype == "float64"):
            e, f = openmm_route(mace_models[dtype], atoms, ["CPU"], "double" if dtype == "float64" else "single")["CPU"]
            assert_same(e, f, e_ref, f_ref, dtype, f"MACE {dtype} OpenMM CPU structure {k}")


def test_imported_energy_is_conservative_and_invariant(nequip_models, mace_models):
    """The energy openmlip returns differentiates to the framework's forces (what openmm-torch and the
    λ-scaled modules use) and is invariant under rotation + translation."""
    from openmlip.deploy import load_model

    atoms = structures()[0]
    rng = np.random.default_rng(0)
    for path in (nequip_models[("nequip", "float64")][1], nequip_models[("allegro", "float64")][1], mace_models["float64"]):
        model, _ = load_model(path)
        z = torch.tensor(atoms.numbers)
        pos = torch.tensor(atoms.positions, dtype=torch.float64, requires_grad=True)
        out = model({"pos": pos, "atomic_numbers": z}, True)
        (g,) = torch.autograd.grad(out["energy"].sum(), pos)
        assert torch.allclose(-g, out["forces"], atol=1e-12)
        # finite difference of the energy along a random direction equals -F·d
        d = torch.tensor(rng.normal(size=pos.shape))
        assert_forces_match_finite_differences(lambda p: model({"pos": p, "atomic_numbers": z}, False)["energy"].item(),
                                               pos.detach(), out["forces"], h=1e-5, directions=[d], tol=Tol(atol=1e-6))
        # one rotation, proper or improper at random, and a translation: |ΔE| <= 1e-9 max(1, |E|)
        assert_invariant_energy_equivariant_forces(model, {"pos": pos.detach(), "atomic_numbers": z}, trials=1, permute=False,
                                                   energy=Tol(rtol=1e-9, floor=1.0))


def test_imported_model_in_mlmm_mechanical_only(mace_models, nequip_models):
    """NH4+ (ML, imported model) in TIP3P (MM), periodic: the mechanical embedding's ML energy equals the
    model's own energy of the ion; the electrostatic embedding is refused (no predicted charges)."""
    from openmmml import MLPotential

    from helpers.systems import ammonium_water_mm
    from openmlip.ase import Calculator

    pdb, mm = ammonium_water_mm()
    ml_atoms = [a.index for a in pdb.topology.atoms() if a.residue.name == "NH4"]
    path = nequip_models[("nequip", "float64")][1]
    pot = MLPotential("openmlip", modelPath=str(path))
    mixed = pot.createMixedSystem(pdb.topology, mm, ml_atoms, forceGroup=5, precision="double")
    ml_groups = {5}
    ctx = openmm.Context(mixed, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    ctx.setPositions(pdb.positions)
    e_ml = ctx.getState(getEnergy=True, groups=ml_groups).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    from ase import Atoms

    pos = np.array([[v.x, v.y, v.z] for v in pdb.positions])[ml_atoms] * units.NM_TO_ANGSTROM
    ion = Atoms(symbols=[a.element.symbol for a in pdb.topology.atoms() if a.index in ml_atoms], positions=pos)
    ion.info["charge"] = 1
    ion.calc = Calculator(path)
    assert abs(e_ml * units.KJ_PER_MOL_TO_EV - ion.get_potential_energy()) < 1e-8
    with pytest.raises(ConfigError, match="no electrostatic embedding"):
        pot.createMixedSystem(pdb.topology, mm, ml_atoms, embedding="electrostatic")


def test_import_refuses_what_it_cannot_run(tmp_path):
    from openmlip.imports import import_model
    from openmlip.imports.shell import symbols_for_types

    pickled = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}}, pickled)
    with pytest.raises(ModelFileError, match="never loaded"):
        import_model(pickled, tmp_path / "out.pt")
    with pytest.raises(ModelFileError, match="no such file"):
        import_model(tmp_path / "missing.pth", tmp_path / "out.pt")
    with pytest.raises(ConfigError, match="--type-map Cw=C"):
        symbols_for_types(["H", "Cw"], None, "m")
    assert symbols_for_types(["H", "Cw"], {"Cw": "C"}, "m") == ["H", "C"]
    with pytest.raises(ConfigError, match="several atom types map to H"):
        symbols_for_types(["H", "Hw"], {"Hw": "H"}, "m")
    # issue #34: a mapped symbol that is no element is named as such (before: "atom type 'Hw' is not an element
    # symbol"), and element-named types cannot be relabelled (before: H=O O=H swapped the model's elements)
    with pytest.raises(ConfigError, match=r"--type-map Hw=Xx: 'Xx' is not an element symbol"):
        symbols_for_types(["H", "Hw"], {"Hw": "Xx"}, "m")
    with pytest.raises(ConfigError, match=r"--type-map H=O: the atom type 'H' is the element H already"):
        symbols_for_types(["H", "O"], {"H": "O", "O": "H"}, "m")
    assert symbols_for_types(["H", "O"], {"H": "H"}, "m") == ["H", "O"]
    with pytest.raises(ConfigError, match="Å and eV"):
        import_model(MACE_DIR / "mace-tiny-float64.pt", tmp_path / "out.pt", length_unit="nm")
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("r_max", ["0", "-3", "nan", "1e6", "five"])
def test_a_cutoff_that_is_not_one_is_refused_at_import_and_at_load(nequip_models, mace_models, tmp_path, r_max):
    """Before: nequip models with r_max 0, -3 or NaN imported (isolated-atom energies, odd errors later) and 1e6 asked
    for a 24 PB allocation.  Refused at import, and a model file whose metadata says so is refused at load."""
    import json

    from openmlip.deploy import METADATA_NAME, load_model
    from openmlip.imports import import_model
    from openmlip.imports.nequip import METADATA_KEYS

    compiled = nequip_models[KINDS[0]][0]
    extra = {k: "" for k in METADATA_KEYS}
    module = torch.jit.load(str(compiled), _extra_files=extra)
    extra["r_max"] = r_max
    bad = tmp_path / "bad.nequip.pth"
    torch.jit.save(module, str(bad), _extra_files=extra)
    with pytest.raises(ModelFileError, match=r"bad.nequip.pth: r_max .* is .*, not a cutoff in \(0, 50\] Å"):
        import_model(bad, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()
    files = {METADATA_NAME: ""}
    model = torch.jit.load(str(mace_models["float64"]), _extra_files=files)
    meta = json.loads(files[METADATA_NAME])
    meta["cutoff"] = float(r_max) if r_max != "five" else r_max
    edited = tmp_path / "edited.pt"
    torch.jit.save(model, str(edited), _extra_files={METADATA_NAME: json.dumps(meta)})
    with pytest.raises(ModelFileError, match=r"edited.pt': cutoff is .*, not a cutoff in \(0, 50\] Å"):
        load_model(edited)


def test_import_cli_and_units(nequip_models, tmp_path):
    """``openmlip import`` records provenance; a model trained in kcal/mol and nm is converted at the boundary."""
    import hashlib
    import json

    from openmlip.deploy import load_model
    from openmlip.ase import Calculator

    compiled, imported = nequip_models[("nequip", "float64")]
    out = tmp_path / "kcal.pt"
    res = subprocess.run([sys.executable, "-m", "openmlip.cli", "import", str(compiled), str(out), "--energy-unit", "kcal/mol",
                          "--length-unit", "nm"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    meta = load_model(out)[1]
    assert meta["imported"]["source_sha256"] == hashlib.sha256(compiled.read_bytes()).hexdigest()
    assert meta["imported"]["framework"] == "nequip" and meta["imported"]["framework_version"]
    assert meta["charges"] is False and meta["cutoff"] == pytest.approx(40.0)
    json.dumps(meta)
    # the same network read in nm / kcal/mol: E(x nm) in kcal/mol = E_Å-model(x) * kcal→eV
    atoms = structures()[0]
    scaled = atoms.copy()
    scaled.positions = atoms.positions * 10.0  # 1 "model length" = 1 nm = 10 Å
    scaled.calc = Calculator(out)
    ref = atoms.copy()
    ref.calc = Calculator(imported)
    assert scaled.get_potential_energy() == pytest.approx(ref.get_potential_energy() * units.KCAL_PER_MOL_TO_EV, rel=1e-10)
    np.testing.assert_allclose(scaled.get_forces(), ref.get_forces() * units.KCAL_PER_MOL_TO_EV / 10.0, rtol=1e-8, atol=1e-12)


def test_imported_model_errors_in_graph_are_typed_not_a_crash(mace_models, tmp_path):
    """Two ML atoms on one position reaching an imported model inside a TorchForce is a GeometryError from
    getState (in a child process: a crash there would otherwise take pytest down)."""
    script = tmp_path / "coincident.py"
    script.write_text(f"""
import numpy as np, openmlip, openmm
from openmmml import MLPotential
from openmlip.errors import GeometryError, from_graph
from openmlip.md.structure import xyz_topology
from ase.build import molecule
a = molecule("CH3OH")
system = MLPotential("openmlip", modelPath={str(mace_models['float32'])!r}).createSystem(xyz_topology(a), charge=0)
ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
pos = a.positions * 0.1
pos[2] = pos[1]
ctx.setPositions(pos)
try:
    ctx.getState(getEnergy=True)
except openmm.OpenMMException as exc:
    err = from_graph(exc)
    assert isinstance(err, GeometryError), exc
    print("typed:", err)
""")
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "typed: ML particles 1 and 2 are closer than 1e-4" in res.stdout


def test_energy_only_torchforce_equals_forces_output(mace_models):
    """``outputForces=False`` (openmm-torch differentiates the energy after freezing the module) gives the
    framework's forces too: the imported energy's gradient survives torch.jit.freeze (which drops detach)."""
    atoms = structures()[2]
    from openmmml import MLPotential

    from openmlip.md.structure import xyz_topology

    top = xyz_topology(atoms)
    top.setPeriodicBoxVectors(np.asarray(atoms.cell) * units.ANGSTROM_TO_NM)
    pot = MLPotential("openmlip", modelPath=str(mace_models["float64"]))
    got = []
    for output_forces in (True, False):
        system = pot.createSystem(top, charge=0, formalCharges=[0.0] * len(atoms), precision="double",
                                  outputForces=output_forces)
        ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
        ctx.setPeriodicBoxVectors(*(np.asarray(atoms.cell) * units.ANGSTROM_TO_NM))
        for _ in range(2):  # a second evaluation must not reuse a freed graph
            e, f = openmm_energy_forces(ctx, atoms.positions * units.ANGSTROM_TO_NM)
        got.append((e, f))
    (e1, f1), (e2, f2) = got
    assert abs(e1 - e2) < 1e-9 * abs(e1)
    assert np.abs(f1 - f2).max() < 1e-9 * np.abs(f1).max()
