"""One charge-state resolver (openmlip.charges) for OpenMM, ASE and specs: total charge, multiplicity, formal charges."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import openmm
import openmm.app as app
import openmm.unit as u
from ase import Atoms
from helpers.physics import Tol, assert_energy_forces_match, openmm_energy_forces
from helpers.systems import ammonium, ammonium_water_mm, water
from openmlip import units
from openmlip.charges import bonds_from_positions, formal_charges_from_bonds, resolve_charge_state, total_charge
from openmlip.errors import ChargeError, ConfigError, GeometryError, ModelFileError, SelectionError
from openmmml import MLPotential

SYSTEMS = Path(__file__).resolve().parent.parent / "systems"
NAME = "openmlip-xtb-v7"  # the shipped default
pytestmark = pytest.mark.filterwarnings("ignore:The .grad attribute")


@pytest.fixture(scope="module")
def pot():
    return MLPotential(NAME)


def _calc(**kw):
    from openmlip.ase import Calculator
    from openmlip.openmm.registry import shipped_models

    return Calculator(shipped_models()[NAME], **kw)


def _energy(system, positions, params=None):
    """(kJ/mol, kJ/mol/nm) on the Reference platform, virtual sites (link-atom caps) placed."""
    return openmm_energy_forces(system, positions, params=params, virtual_sites=True)


def _nh4():
    """NH4+ alone (Topology with bonds, positions in nm) from the shipped ammonium-water system."""
    pdb = app.PDBFile(str(SYSTEMS / "ammonium-water" / "ammonium-water.pdb"))
    m = app.Modeller(pdb.topology, pdb.positions)
    m.delete([r for r in m.topology.residues() if r.name != "NH4"])
    m.topology.setPeriodicBoxVectors(None)
    return m.topology, m.positions


def _water_topology():
    top = app.Topology()
    res = top.addResidue("HOH", top.addChain())
    o = top.addAtom("O", app.element.oxygen, res)
    for name in ("H1", "H2"):
        top.addBond(o, top.addAtom(name, app.element.hydrogen, res))
    return top, (water()[1] * 0.1).tolist() * u.nanometer


def _alanine_dipeptide():
    base = SYSTEMS / "alanine-dipeptide" / "vacuum" / "alanine-dipeptide"
    prm = app.AmberPrmtopFile(str(base) + ".prmtop")
    crd = app.AmberInpcrdFile(str(base) + ".crd")
    system = prm.createSystem(nonbondedMethod=app.NoCutoff, constraints=None)
    ala = [a.index for a in prm.topology.atoms() if a.residue.name == "ALA"]
    return prm.topology, list(crd.getPositions()), system, ala


# -- the resolver itself -------------------------------------------------------------------------------

def test_total_charge_one_rule():
    assert [total_charge(v) for v in (1, 1.0, "1", " +1 ", "-2", "1.0", np.int64(3), np.float32(-1.0))] == [1, 1, 1, 1, -2, 1, 3, -1]
    for bad, words in ((0.5, "not an integer"), (float("nan"), "not finite"), (float("inf"), "not finite"),
                       ("1.5", "not an integer"), ("one", "not a number"), (None, "not a number"), (True, "not a number"),
                       ([1], "not a number")):
        with pytest.raises(ChargeError, match=words + r".*pass charge=<integer"):
            total_charge(bad)


def test_resolver_rules_on_plain_element_and_bond_lists():
    z = [7, 1, 1, 1, 1, 8, 6, 8, 1]  # NH4+ and formate HC(=O)O-
    bonds = [(0, 1), (0, 2), (0, 3), (0, 4), (6, 5), (6, 7), (6, 8)]
    assert formal_charges_from_bonds(z, bonds, 0.0) == [1.0, 0, 0, 0, 0, 0, 0, -1.0, 0]
    assert formal_charges_from_bonds(z, bonds, 1.0) is None
    # dimethyl phosphate COP(=O)([O-])OC, methyl phosphate dianion, methanesulfonate, and neutral look-alikes
    dmp = ([6, 8, 15, 8, 8, 8, 6], [(0, 1), (1, 2), (2, 3), (2, 4), (2, 5), (5, 6)])
    assert formal_charges_from_bonds(*dmp, -1.0) == [0, 0, 0, 0, -1.0, 0, 0]
    assert formal_charges_from_bonds([6, 8, 15, 8, 8, 8], [(0, 1), (1, 2), (2, 3), (2, 4), (2, 5)], -2.0) == [0, 0, 0, 0, -1.0, -1.0]
    assert formal_charges_from_bonds([6, 16, 8, 8, 8], [(0, 1), (1, 2), (1, 3), (1, 4)], -1.0) == [0, 0, 0, 0, -1.0]
    assert formal_charges_from_bonds([7, 16, 8, 8, 6], [(0, 1), (1, 2), (1, 3), (1, 4)], 0.0) == [0.0] * 5  # sulfonamide
    assert formal_charges_from_bonds([6, 8, 15, 8, 8, 8, 1, 1], [(0, 1), (1, 2), (2, 3), (2, 4), (2, 5), (4, 6), (5, 7)],
                                     0.0) == [0.0] * 8  # methyl phosphoric acid
    state = resolve_charge_state(z[:5], total=1, bonds=bonds[:4])
    assert (state.total, state.formal, state.multiplicity, state.source) == (1, (1.0, 0, 0, 0, 0), 1, "bonds")
    with pytest.raises(ChargeError, match=r"formalCharges sum to \+0 e but the total charge is \+1 e"):
        resolve_charge_state(z[:5], total=1, formal=[0] * 5)
    with pytest.raises(ChargeError, match="has 4 values but the ML region has 5 atoms"):
        resolve_charge_state(z[:5], total=1, formal=[1, 0, 0, 0])
    with pytest.raises(ConfigError, match="not a spin multiplicity"):
        resolve_charge_state(z[:5], total=1, multiplicity=0.5)


def test_bonds_from_positions_minimum_image_and_ions():
    z, pos = water()
    cell = np.eye(3) * 6.0
    shifted = pos - pos[0] + [5.95, 3.0, 3.0]  # O at the +x face: H1 wraps to the -x face
    assert bonds_from_positions(z, shifted % 6.0, cell, True) == [(0, 1), (0, 2)]
    assert bonds_from_positions(z, shifted % 6.0) == [(0, 2)]  # not periodic: H1 is 5 Å away
    zn = np.array([11, 8, 1, 1])
    pn = np.concatenate([[[0.0, 0.0, 0.0]], water((2.35, 0.0, 0.0))[1]])  # Na+ 2.35 Å from a water O
    assert bonds_from_positions(zn, pn) == [(1, 2), (1, 3)]
    assert resolve_charge_state(zn, total=1, bonds=bonds_from_positions(zn, pn)).formal == (1.0, 0, 0, 0)
    zh, ph = ammonium(1.03)
    assert len(bonds_from_positions(zh, ph)) == 4


# -- case 2: formal charges of the wrong length; link-atom caps ---------------------------------------------

def test_formal_charges_length_and_caps_in_a_subprocess(tmp_path):
    """Before: both calls segfaulted (the wrong-length buffer reached the TorchScript graph)."""
    script = tmp_path / "case2.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import warnings; warnings.simplefilter("ignore")
        from test_charge_states import _water_topology, _alanine_dipeptide, _energy, NAME
        from openmmml import MLPotential
        from openmlip.errors import ChargeError
        pot = MLPotential(NAME)
        top, pos = _water_topology()
        try:
            pot.createSystem(top, formalCharges=[0, 0])
        except ChargeError as exc:
            print("WATER", exc)
        top, pos, system, ala = _alanine_dipeptide()
        for formal in ([0.0] * (len(ala) + 2), [0.0] * len(ala)):
            try:
                info = pot.createMixedSystem(top, system, ala, returnInfo=True, formalCharges=formal)
            except ChargeError as exc:
                print("ALA", len(formal), exc)
                continue
            n = info["topology"].getNumAtoms() - len(pos)
            implicit = pot.createMixedSystem(top, system, ala)
            e1, e0 = _energy(info["system"], pos + [pos[0]] * n)[0], _energy(implicit, pos + [pos[0]] * n)[0]
            print("ALAOK", len(formal), n, e1, e0)
        """))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    assert "WATER formalCharges has 2 values but the ML region has 3 atoms" in out
    assert "ALA 12 formalCharges has 12 values but the ML region has 10 atoms" in out
    line = next(x for x in out.splitlines() if x.startswith("ALAOK"))
    _, n_formal, n_caps, e1, e0 = line.split()
    assert (n_formal, n_caps) == ("10", "2")  # 10 values for 10 ML atoms; openmm-ml added 2 caps (formal charge 0)
    assert float(e1) == pytest.approx(float(e0), rel=1e-12)  # the rules also give 0 everywhere


def test_formal_charges_that_miss_the_total_are_an_error(pot):
    top, _ = _nh4()
    with pytest.raises(ChargeError, match=r"formalCharges sum to \+0 e but the total charge is \+1 e"):
        pot.createSystem(top, charge=1, formalCharges=[0] * 5)
    system = pot.createSystem(top, formalCharges=[1, 0, 0, 0, 0])  # the total is their sum: no Amber template needed
    assert system.getNumForces() == 2


def test_formal_charges_placed_unlike_the_bond_rules_warn(pot):
    """Issue #34: +1 on an H of NH4+ instead of its N (the placement the models were trained with) warns; the
    rules' own placement, and a carboxylate's charge on either O (resonance), do not (before: silently used)."""
    from openmlip.charges import resolve_charge_state

    top, _ = _nh4()
    with pytest.warns(UserWarning, match=r"formalCharges give \+0 e to atom 0 \(Z=7\), where the bond rules put \+1 e"):
        pot.createSystem(top, formalCharges=[0, 1, 0, 0, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pot.createSystem(top, formalCharges=[1, 0, 0, 0, 0])
        # acetate C(H3)-C(=O)-O-: atoms C0 C1 O2 O3 H4 H5 H6; the rules put -1 on one O, the user on the other
        z, bonds = [6, 6, 8, 8, 1, 1, 1], [(0, 1), (1, 2), (1, 3), (0, 4), (0, 5), (0, 6)]
        for formal in ([0, 0, -1, 0, 0, 0, 0], [0, 0, 0, -1, 0, 0, 0]):
            assert resolve_charge_state(z, formal=formal, bonds=bonds).total == -1


# -- case 4 (ASE): non-finite and coincident coordinates --------------------------------------------------

def test_ase_calculator_precision_and_shipped_names():
    """float16 gave NaN energies and bfloat16 -138.0 instead of -137.988 eV: only float32/float64 (names as strings
    too); a shipped potential's name resolves like everywhere else (it said "model file does not exist")."""
    import torch

    from openmlip.ase import Calculator

    for bad in (torch.float16, torch.bfloat16, "half", 64):
        with pytest.raises(ConfigError, match=r"dtype=.* is not supported; pass torch.float32 or torch.float64"):
            Calculator(NAME, dtype=bad)
    z, p = water()
    energies = []
    for dtype in (torch.float64, "float64", "torch.float64", " Double "):
        a = Atoms(numbers=z, positions=p)
        a.calc = Calculator(NAME, dtype=dtype)
        assert a.calc.dtype == torch.float64
        energies.append(a.get_potential_energy())
    assert len(set(energies)) == 1
    with pytest.raises(ModelFileError, match=r"'openmlip-xtb-v99' is neither an installed openmlip potential \(.*"
                                             r"openmlip-xtb-v7.*\) nor a model file"):
        Calculator("openmlip-xtb-v99")


def test_ase_non_finite_and_coincident_positions():
    z, pos = ammonium()
    calc = _calc()
    for value, atom in ((np.nan, 3), (np.inf, 0)):
        bad = pos.copy()
        bad[atom, 1] = value
        a = Atoms(numbers=z, positions=bad, info={"charge": 1})
        a.calc = calc
        with pytest.raises(GeometryError, match=rf"not finite .*atom\(s\) \[{atom}\]"):
            a.get_potential_energy()
    bad = pos.copy()
    bad[4] = bad[2] + [1e-4, 0.0, 0.0]
    a = Atoms(numbers=z, positions=bad, info={"charge": 1})
    a.calc = calc
    with pytest.raises(GeometryError, match=r"atoms 2 and 4 are 0.0001 Å apart \(closer than 0.1 Å\)"):
        a.get_potential_energy()


# -- case 5: one rule for the total charge ----------------------------------------------------------------

@pytest.mark.parametrize("bad", [0.5, float("nan"), "abc", "1.5"])
def test_non_integer_total_charge_is_an_error_everywhere(pot, bad):
    top, _ = _water_topology()
    with pytest.raises(ChargeError, match=r"charge=.* is not (an integer|finite|a number)"):
        pot.createSystem(top, charge=bad)
    z, pos = water()
    a = Atoms(numbers=z, positions=pos, info={"charge": bad})
    a.calc = _calc()
    with pytest.raises(ChargeError, match=r"atoms.info\['charge'\]=.* is not (an integer|finite|a number)"):
        a.get_potential_energy()


def test_string_charge_is_converted_and_both_routes_warn_alike(pot):
    top, pos = _nh4()
    e1, _ = _energy(pot.createSystem(top, charge=1), pos)
    assert _energy(pot.createSystem(top, charge="1"), pos)[0] == e1
    wtop, wpos = _water_topology()
    with pytest.warns(UserWarning) as openmm_route:
        pot.createSystem(wtop, charge=4)  # 6 electrons: a singlet exists
    z, p = water()
    a = Atoms(numbers=z, positions=p, info={"charge": 4})
    a.calc = _calc()
    with pytest.warns(UserWarning) as ase_route:
        a.get_potential_energy()
    msgs = [[str(w.message) for w in rec if "formal-charge rules" in str(w.message)] for rec in (openmm_route, ase_route)]
    assert msgs[0] == msgs[1] and len(msgs[0]) == 1
    assert "place +0 e on the 3 atoms, but the total charge is +4 e" in msgs[0][0]


def test_explicit_charge_that_disagrees_with_mm_charges_warns(pot):
    pdb, system = ammonium_water_mm()
    nh4 = [a.index for a in pdb.topology.atoms() if a.residue.name == "NH4"]
    with pytest.warns(UserWarning, match=r"charge=-1 e was given, but the MM partial charges of the ML atoms sum to \+1\.0000 e"):
        pot.createMixedSystem(pdb.topology, system, nh4, charge=-1, formalCharges=[-1, 0, 0, 0, 0])


def _pxylene():
    """p-xylene (the T4 lysozyme ligand) alone: a Topology with bonds and no Amber14 template, positions in nm."""
    prm = app.AmberPrmtopFile(str(SYSTEMS / "t4l99a-pxylene" / "complex.prmtop"))
    crd = app.AmberInpcrdFile(str(SYSTEMS / "t4l99a-pxylene" / "complex.crd"))
    m = app.Modeller(prm.topology, crd.getPositions())
    m.delete([r for r in m.topology.residues() if r.name != "TMP"])
    return m.topology, m.positions


@pytest.mark.parametrize("molecule", ["nh4", "pxylene"])
def test_both_routes_infer_the_same_total_charge_without_charge(pot, molecule):
    """Without charge=, the OpenMM route takes the total from the bond rules of the Topology (+1 for NH4+, 0 for
    p-xylene, which has no Amber template: before, a ChargeError quoting OpenMM's template matcher), the ASE route
    from the bonds it finds in the geometry: the same Hamiltonian, equal to the explicit charge's."""
    top, pos_nm = _nh4() if molecule == "nh4" else _pxylene()
    expected = 1 if molecule == "nh4" else 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no spreading, no disagreement: nothing to warn about
        e_inferred, f_inferred = _energy(pot.createSystem(top), pos_nm)
    e_explicit, f_explicit = _energy(pot.createSystem(top, charge=expected), pos_nm)
    assert e_inferred == e_explicit and np.array_equal(f_inferred, f_explicit)
    a = Atoms(numbers=[x.element.atomic_number for x in top.atoms()], positions=np.array(pos_nm.value_in_unit(u.angstrom)))
    a.calc = _calc()
    e_ase = a.get_potential_energy() * units.EV_TO_KJ_PER_MOL
    assert a.calc._state.total == expected and a.calc._state.source == "bonds"
    assert_energy_forces_match((e_inferred, None), (e_ase, None), energy=Tol(rtol=1e-6, floor=1e-6))


def test_a_topology_without_bonds_is_refused_not_spread(pot):
    """NH4+ from a PDB without CONECT: before, +1 spread evenly (+0.2 e per atom, -11821 kJ/mol against -11801 with
    the bonds); now a ChargeError naming both fixes, with or without charge=; formalCharges= is enough."""
    top, pos = _nh4()
    bare = app.Topology()
    res = bare.addResidue("NH4", bare.addChain())
    for atom in top.atoms():
        bare.addAtom(atom.name, atom.element, res)
    for kw in ({}, {"charge": 1}):
        with pytest.raises(ChargeError, match=r"5 ML atom\(s\) have no bonds in the Topology \(atom 0, N of NH4\).*add the "
                                              r"bonds \(CONECT.*Topology.addBond.*or pass formalCharges="):
            pot.createSystem(bare, **kw)
    e_bonded, _ = _energy(pot.createSystem(top), pos)
    assert _energy(pot.createSystem(bare, formalCharges=[1, 0, 0, 0, 0]), pos)[0] == e_bonded
    ions = app.Topology()  # monatomic ions need no bonds
    res = ions.addResidue("NA", ions.addChain())
    ions.addAtom("NA", app.element.sodium, res)
    ions.addAtom("CL", app.element.chlorine, ions.addResidue("CL", ions.chains().__next__()))
    pos_ions = [openmm.Vec3(0, 0, 0), openmm.Vec3(0.3, 0, 0)] * u.nanometer
    assert _energy(pot.createSystem(ions), pos_ions)[0] == _energy(pot.createSystem(ions, formalCharges=[1, -1]), pos_ions)[0]


def test_mm_charges_that_disagree_with_the_bond_rules_warn(pot):
    """The MM charges are a cross-check of the inferred total: NH4+ whose MM charges sum to -0.2 keeps the rules' +1
    and warns with both numbers and the fix."""
    pdb, system = ammonium_water_mm()
    nh4 = [a.index for a in pdb.topology.atoms() if a.residue.name == "NH4"]
    nb = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    for i in nh4:
        q, sigma, eps = nb.getParticleParameters(i)
        nb.setParticleParameters(i, q - 0.24 * u.elementary_charge, sigma, eps)
    with pytest.warns(UserWarning, match=r"the formal-charge rules \(bonds\) give a total charge of \+1 e, but the MM partial "
                                         r"charges of the ML atoms sum to -0.2000 e; using \+1 e. To fix, pass charge="):
        mixed = pot.createMixedSystem(pdb.topology, system, nh4)
    with pytest.warns(UserWarning, match=r"charge=\+1 e was given, but the MM partial charges of the ML atoms sum to -0.2000"):
        explicit = pot.createMixedSystem(pdb.topology, system, nh4, charge=1, formalCharges=[1, 0, 0, 0, 0])
    assert _energy(mixed, pdb.positions)[0] == _energy(explicit, pdb.positions)[0]


# -- case 6: constructor arguments, multiplicity, unknown names ----------------------------------------------

def test_constructor_arguments_are_defaults_and_unknown_names_fail(pot):
    top, pos = _nh4()
    e1, _ = _energy(pot.createSystem(top, charge=1), pos)
    assert _energy(MLPotential(NAME, charge=1, multiplicity=1).createSystem(top), pos)[0] == e1
    assert _energy(MLPotential(NAME, charge=0).createSystem(top, charge=1), pos)[0] == e1  # the call wins
    e3 = _energy(pot.createSystem(top, charge=1, multiplicity=3), pos)[0]
    assert e3 != e1 and _energy(pot.createSystem(top, charge=1, spinMultiplicity=3), pos)[0] == e3
    assert _energy(MLPotential(NAME, multiplicity=3).createSystem(top, charge=1), pos)[0] == e3
    with pytest.raises(ConfigError, match=r"unknown argument\(s\) 'modelPth' \(did you mean 'modelPath'\?\).*known: modelPath, charge"):
        MLPotential("openmlip", modelPth="model.pt")
    with pytest.raises(ConfigError, match=r"'chrage' \(did you mean 'charge'\?\) for createSystem.*known: charge, multiplicity"):
        pot.createSystem(top, chrage=1)
    pdb, system = ammonium_water_mm()
    with pytest.raises(ConfigError, match="'embeddingCutoff' for createMixedSystem\\(embedding='mechanical'\\)"):
        pot.createMixedSystem(pdb.topology, system, [0, 1, 2, 3, 4], embeddingCutoff=1.0)  # electrostatic only
    with pytest.raises(ConfigError, match="multiplicity=1 and spinMultiplicity=3 disagree"):
        pot.createSystem(top, charge=1, multiplicity=1, spinMultiplicity=3)
    with pytest.raises(ConfigError, match="precision='half' is not one of 'single', 'double'"):
        MLPotential(NAME, precision="half")


# -- case 7: mechanical interpolation gets the charge from the MM System -------------------------------------

@pytest.mark.filterwarnings("ignore:openmlip. interpolated ML terms run through openmm.PythonForce")
def test_mechanical_interpolation_without_template_or_with_link_atoms(pot):
    """Before: ChargeError (openmm-ml builds the ML terms in an empty System without MM charges)."""
    top, pos, system, ala = _alanine_dipeptide()  # cuts two peptide bonds: link-atom residues V0, V1
    plain = pot.createMixedSystem(top, system, ala)
    interp = pot.createMixedSystem(top, system, ala, interpolate=True)
    caps = [pos[0]] * (interp.getNumParticles() - len(pos))
    e_mm, e_mixed = _energy(system, pos)[0], _energy(plain, pos + caps)[0]
    assert _energy(interp, pos + caps, {"lambda_interpolate": 0.0})[0] == pytest.approx(e_mm, rel=1e-6)
    assert _energy(interp, pos + caps, {"lambda_interpolate": 1.0})[0] == pytest.approx(e_mixed, rel=1e-6)
    pdb, wsystem = ammonium_water_mm()  # NH4+ has no Amber14 template; its charge comes from the MM System (+1)
    nh4 = [a.index for a in pdb.topology.atoms() if a.residue.name == "NH4"]
    interp = pot.createMixedSystem(pdb.topology, wsystem, nh4, interpolate=True)
    plain = pot.createMixedSystem(pdb.topology, wsystem, nh4)
    assert _energy(interp, pdb.positions, {"lambda_interpolate": 1.0})[0] == pytest.approx(
        _energy(plain, pdb.positions)[0], rel=1e-6)


# -- case 8: ASE infers formal charges like OpenMM ------------------------------------------------------------

def test_ase_infers_formal_charges_like_the_openmm_route(pot):
    top, pos_nm = _nh4()
    pos = np.array(pos_nm.value_in_unit(u.angstrom))
    z = [a.element.atomic_number for a in top.atoms()]
    results = []
    for setup in ({}, {"formal_charges": [1.0, 0, 0, 0, 0]}, {"initial_charges": [1.0, 0, 0, 0, 0]}):
        a = Atoms(numbers=z, positions=pos, info={"charge": 1})
        for k, v in setup.items():
            a.arrays[k] = np.array(v)
        a.calc = _calc()
        results.append((a.get_potential_energy(), a.get_forces()))
    for e, f in results[1:]:
        assert e == results[0][0] and np.array_equal(f, results[0][1])
    e_openmm, f_openmm = _energy(pot.createSystem(top, charge=1), pos_nm)
    # float32 model: energies to 1e-6 (pytest.approx(rel=1e-6): max(1e-6 |E|, 1e-12))
    assert_energy_forces_match((e_openmm, None), (results[0][0] * units.EV_TO_KJ_PER_MOL, None), energy=Tol(rtol=1e-6, floor=1e-6))
    # double precision on both routes: equal to float64 rounding
    e64, f64 = _energy(pot.createSystem(top, charge=1, precision="double"), pos_nm)
    a = Atoms(numbers=z, positions=pos, info={"charge": 1})
    import torch

    a.calc = _calc(dtype=torch.float64)
    ase_route = (a.get_potential_energy() * units.EV_TO_KJ_PER_MOL, a.get_forces() * units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM)
    assert_energy_forces_match((e64, f64), ase_route,
                               energy=Tol(rtol=1e-12, floor=1.0), forces=Tol(rtol=1e-9, atol=1e-8), what="OpenMM vs ASE, float64")


def test_ase_nh4_bond_length_with_only_the_total_charge():
    """Before: 1.013 Å (charge spread evenly); the model's training method (GFN2-xTB) gives 1.0296 Å."""
    from ase.optimize import BFGS

    z, pos = ammonium(1.0)
    a = Atoms(numbers=z, positions=pos, info={"charge": 1})
    a.calc = _calc()
    BFGS(a, logfile=None).run(fmax=1e-3, steps=200)
    r = np.linalg.norm(a.positions[1:] - a.positions[0], axis=1)
    assert np.all(np.abs(r - 1.0295) < 1e-3), r


def test_ase_per_atom_charges_that_miss_the_total_are_an_error():
    z, pos = ammonium()
    a = Atoms(numbers=z, positions=pos, info={"charge": 1})
    a.arrays["formal_charges"] = np.zeros(5)
    a.calc = _calc()
    with pytest.raises(ChargeError, match=r"formal_charges'\] sum to \+0 e but the total charge is \+1 e"):
        a.get_potential_energy()
    b = Atoms(numbers=z, positions=pos, charges=[-0.4, 0.35, 0.35, 0.35, 0.35], info={"charge": 1})
    b.calc = _calc()
    with pytest.raises(ChargeError, match=r"get_initial_charges\(\) are read as formal charges but atom 0 has -0.4"):
        b.get_potential_energy()


# -- case 9: the ASE cache follows the charge state -------------------------------------------------------

def test_ase_cache_invalidated_by_charge_changes():
    z, pos = ammonium()
    a = Atoms(numbers=z, positions=pos, info={"charge": 1})
    calc = _calc()
    a.calc = calc
    e1 = a.get_potential_energy()
    a.info["charge"], a.info["spin"] = 0, 2  # the neutral NH4 radical: 11 electrons, a doublet
    a.arrays["formal_charges"] = np.zeros(5)
    e0 = a.get_potential_energy()
    fresh = Atoms(numbers=z, positions=pos, info={"charge": 0, "spin": 2})
    fresh.arrays["formal_charges"] = np.zeros(5)
    fresh.calc = _calc()
    assert e0 != e1 and e0 == fresh.get_potential_energy()
    a.arrays["formal_charges"] = np.array([0.0, 0, 0, 0, 0.0]) + [0.5, -0.5, 0, 0, 0]
    assert a.get_potential_energy() not in (e0, e1)


# -- weak messages ---------------------------------------------------------------------------------------

def test_openmm_ml_arguments_of_the_wrong_kind_are_named(pot):
    """Issue #34, weak answers: each is one typed line naming the fix (before: a bare KeyError from openmm-ml's
    registry; "unknown argument" for openmm-ml's own mlLongRange; "100" read as [1, 0, 0]; a ValueError from
    unpacking; a System of another Topology built without a word)."""
    from openmmml.embeddings import utilities

    pdb, system = ammonium_water_mm()
    nh4 = [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError, match=r"unknown embedding 'electrostatc' \(did you mean 'electrostatic'\?\); "
                                          r"choose one of 'electrostatic', 'mechanical'"):
        pot.createMixedSystem(pdb.topology, system, nh4, embedding="electrostatc")
    assert list(pot._impl.getSupportedEmbeddings()) == ["electrostatic", "mechanical"]
    # openmm-ml's mlLongRange: openmlip's models are local, so False is accepted (the same System), True explained
    plain = pot.createMixedSystem(pdb.topology, system, nh4)
    local = pot.createMixedSystem(pdb.topology, system, nh4, mlLongRange=False)
    assert openmm_energy_forces(local, pdb.positions)[0] == openmm_energy_forces(plain, pdb.positions)[0]
    with pytest.raises(ConfigError, match=r"mlLongRange=True: openmlip's models are local.*pass mlLongRange=False"):
        pot.createMixedSystem(pdb.topology, system, nh4, mlLongRange=True)
    with pytest.raises(ChargeError, match=r"formalCharges must be a list of numbers .*got the string '100'"):
        pot.createMixedSystem(pdb.topology, system, nh4, formalCharges="100")
    small = openmm.System()
    for _ in range(375):
        small.addParticle(1.0)
    with pytest.raises(SelectionError, match=r"the Topology has 1020 atoms but the System has 375 particles"):
        pot.createMixedSystem(pdb.topology, small, nh4)
    # linkAtomDistances: openmm-ml's (ML atom, MM atom, distance) triples, the distance in nm or a Quantity
    top, pos, system, ala = _alanine_dipeptide()
    links = utilities.findLinkBonds(top, ala)
    caps = [pos[0]] * len(links)  # placed by computeVirtualSites
    e_default = _energy(pot.createMixedSystem(top, system, ala), pos + caps)[0]
    z = [a.element.atomic_number for a in top.atoms()]
    radius = lambda k: utilities.COVALENT_RADII[k].value_in_unit(u.nanometer)  # noqa: E731
    given = [(i, j, radius(z[i]) + radius(1)) for i, j in links]  # openmm-ml's default, as plain nm
    e_given = _energy(pot.createMixedSystem(top, system, ala, linkAtomDistances=given), pos + caps)[0]
    assert e_given == pytest.approx(e_default, abs=1e-9)
    shorter = [(i, j, 0.100 * u.nanometer) for i, j in links]
    assert abs(_energy(pot.createMixedSystem(top, system, ala, linkAtomDistances=shorter), pos + caps)[0] - e_default) > 0.1
    for bad, words in (({"C": -1}, r"must be a list of \(ML atom, MM atom, distance\) triples.*got \{'C': -1\}"),
                       ([(links[0][0], links[0][1], -0.1)], r"the cap distance -0.1 nm must be > 0"),
                       ([(0, 1)], r"triples.*got \(0, 1\)"),
                       ([(0, 1, 1.0 * u.kilojoule_per_mole)], r"is not a length")):
        with pytest.raises(ConfigError, match=words):
            pot.createMixedSystem(top, system, ala, linkAtomDistances=bad)


def test_spin_states_that_no_electron_count_allows_are_refused(pot):
    """One H atom and H2O+ as singlets (an odd number of electrons needs an even multiplicity), NH4+ as a
    doublet: a ChargeError on both routes naming the fix (before: an energy)."""
    from openmlip.charges import check_electron_parity

    check_electron_parity([1], 0, 2)
    check_electron_parity([8, 1, 1], 1, 2)
    check_electron_parity([7, 1, 1, 1, 1], 1, 3)
    with pytest.raises(ChargeError, match=r"1 electrons \(total charge \+0 e\) cannot have spin multiplicity 1: an odd "
                                          r"number of electrons needs an even multiplicity 2S\+1; pass atoms.info\['spin'\]=2"):
        a = Atoms("H", positions=[[0.0, 0.0, 0.0]])
        a.calc = _calc()
        a.get_potential_energy()
    z, pos = water()
    a = Atoms(numbers=z, positions=pos, info={"charge": 1})
    a.calc = _calc()
    with pytest.raises(ChargeError, match=r"9 electrons \(total charge \+1 e\) cannot have spin multiplicity 1"):
        a.get_potential_energy()
    a.info["spin"] = 2
    assert np.isfinite(a.get_potential_energy())
    top, _ = _nh4()
    with pytest.raises(ChargeError, match=r"10 electrons .* cannot have spin multiplicity 2: an even number of electrons "
                                          r"needs an odd multiplicity 2S\+1; pass multiplicity=1"):
        pot.createSystem(top, charge=1, multiplicity=2)
    with pytest.raises(ChargeError, match=r"charge=\+12 e leaves -1 electrons"):
        pot.createSystem(top, charge=12)


def test_ase_periodic_cell_without_volume_is_refused():
    """pbc=True with ASE's default zero cell (before: a GeometryError about a wrong 0.04 Å distance)."""
    z, pos = water()
    a = Atoms(numbers=z, positions=pos, pbc=True)
    a.calc = _calc()
    with pytest.raises(GeometryError, match=r"atoms.pbc is periodic along abc but atoms.cell spans no volume there.*"
                                            r"set atoms.cell \(Å\), or atoms.pbc = False"):
        a.get_potential_energy()
    a = Atoms(numbers=z, positions=pos, pbc=[True, True, False], cell=[[10, 0, 0], [20, 0, 0], [0, 0, 0]])
    a.calc = _calc()
    with pytest.raises(GeometryError, match=r"periodic along ab but"):
        a.get_potential_energy()


@pytest.mark.parametrize("shift_nm", [1e2, 1e4, 1e6])
def test_float32_open_system_far_from_the_origin_loses_nothing(pot, shift_nm):
    """A float32 model on NH4+ moved 1e2-1e6 nm (double-precision positions: Reference platform, ASE): the energy
    and forces at the origin to float32 precision (the float64 sum's last bits move the cast by an ulp).  Before,
    the cast to float32 lost 1e-3 kJ/mol and 2.6 kJ/mol/nm at 1e2 nm, 0.21 and 212 at 1e4 nm, 474 kJ/mol at 1e6."""
    top, pos = _nh4()
    pos = np.asarray(pos.value_in_unit(u.nanometer))
    system = pot.createSystem(top, precision="single")
    e0, f0 = _energy(system, pos * u.nanometer)
    e, f = _energy(system, (pos + shift_nm) * u.nanometer)
    assert_energy_forces_match((e, f), (e0, f0), energy=Tol(atol=1e-4), forces=Tol(atol=1e-2))
    a = Atoms(numbers=[at.element.atomic_number for at in top.atoms()], positions=pos * 10.0, info={"charge": 1})
    a.calc = _calc(dtype="float32")
    e0, f0 = a.get_potential_energy(), a.get_forces()
    a.positions += shift_nm * 10.0
    ev = units.EV_TO_KJ_PER_MOL
    assert_energy_forces_match((a.get_potential_energy() * ev, a.get_forces() * ev * 10.0), (e0 * ev, f0 * ev * 10.0),
                               energy=Tol(atol=1e-4), forces=Tol(atol=1e-2))


def test_unknown_potential_and_index_out_of_range(pot):
    with pytest.raises(ModelFileError, match=rf"no installed openmlip potential named 'openmlip-xtb-v9'; installed: .*{NAME}"):
        MLPotential("openmlip-xtb-v9")
    with pytest.raises(KeyError):
        MLPotential("not-an-openmlip-name")  # other names: openmm-ml's behaviour unchanged
    top, pos, system, ala = _alanine_dipeptide()
    for kw in ({}, {"interpolate": True}, {"embedding": "electrostatic", "charge": 0}):
        with pytest.raises(SelectionError, match=r"indices \[99\] out of range for a Topology of 22 atoms"):
            pot.createMixedSystem(top, system, [0, 99], **kw)
    with pytest.raises(SelectionError, match="duplicates"):
        pot.createMixedSystem(top, system, [0, 0])
