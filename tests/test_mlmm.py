"""openmm-ml integration: MLPotential('openmlip'), mechanical and electrostatic ML/MM embedding."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import openmm
import openmm.app as app
import openmm.unit as u
from helpers.physics import (Tol, assert_bonds_intact, assert_charges_sum_to_total, assert_energy_forces_match,
                             assert_forces_match_finite_differences,
                             in_openmm_units, langevin_frames, openmm_energy_forces)
from helpers.systems import ammonium_water_mm, make_model
from openmlip import units
from openmlip.deploy import save_model
from openmlip.errors import ChargeError, ConfigError, ModelFileError, SelectionError, UnsupportedElementError
from openmmml import MLPotential

SYSTEMS = Path(__file__).resolve().parent.parent / "systems"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(make_model("allegro", "smoothmax", torch.float64, seed=3), path)
    return str(path)


def _t4l():
    prm = app.AmberPrmtopFile(str(SYSTEMS / "t4l99a-pxylene" / "complex.prmtop"))
    crd = app.AmberInpcrdFile(str(SYSTEMS / "t4l99a-pxylene" / "complex.crd"))
    system = prm.createSystem(nonbondedMethod=app.NoCutoff, constraints=None)
    ligand = [a.index for a in prm.topology.atoms() if a.residue.name == "TMP"]
    return prm, crd, system, ligand


def test_entry_point_and_whole_system(model_file):
    import openmlip  # noqa: F401

    pdb = app.PDBFile(str(SYSTEMS / "ammonium-water" / "ammonium-water.pdb"))
    nh4 = app.Modeller(pdb.topology, pdb.positions)
    nh4.delete([r for r in nh4.topology.residues() if r.name != "NH4"])
    nh4.topology.setPeriodicBoxVectors(None)
    pot = MLPotential("openmlip", modelPath=model_file)
    system = pot.createSystem(nh4.topology)  # no charge=: the bond rules of the Topology give +1 (N with 4 bonds)
    e, f = openmm_energy_forces(system, nh4.positions)
    from openmlip.deploy import load_model

    model, _ = load_model(model_file)
    pos = torch.tensor(np.array(nh4.positions.value_in_unit(u.angstrom)))
    # no formalCharges given: the plugin puts the +1 on N (4 bonds), as the training data do
    ref = model({"pos": pos, "atomic_numbers": torch.tensor([7, 1, 1, 1, 1]), "total_charge": torch.tensor([1.0], dtype=torch.float64),
                 "formal_charges": torch.tensor([1.0, 0, 0, 0, 0], dtype=torch.float64)})
    assert_energy_forces_match((e, f), in_openmm_units(ref), energy=Tol(rtol=1e-6), forces=Tol(rtol=1e-6, atol=1e-6))


def test_errors_with_fixes(model_file, tmp_path):
    with pytest.raises(ModelFileError, match="needs modelPath"):
        MLPotential("openmlip")
    with pytest.raises(ModelFileError, match="does not exist"):
        MLPotential("openmlip", modelPath=str(tmp_path / "missing.pt"))
    prm, crd, system, ligand = _t4l()
    pot = MLPotential("openmlip", modelPath=model_file)
    with pytest.raises(ChargeError, match=r"formalCharges has 3 values but the ML region has 15 atoms"):
        pot.createMixedSystem(prm.topology, system, ligand[:-3], formalCharges=[0, 0, 0])  # cuts p-xylene
    sulfur = [a.index for a in prm.topology.atoms() if a.element is not None and a.element.symbol == "S"][:1]
    with pytest.raises(UnsupportedElementError, match="element\\(s\\) S not supported.*it knows H, C, N, O, Na, Cl"):
        pot.createMixedSystem(prm.topology, system, ligand + sulfur, charge=0)
    with pytest.raises(SelectionError, match="out of range"):
        pot.createMixedSystem(prm.topology, system, [0, 999999], charge=0, embedding="electrostatic")
    pdb, wsystem = ammonium_water_mm()
    wsystem.setDefaultPeriodicBoxVectors(*(np.eye(3) * 0.8))
    from openmlip.errors import BoxError

    with pytest.raises(BoxError, match="use a larger box"):
        pot.createMixedSystem(pdb.topology, wsystem, [0, 1, 2, 3, 4])


def test_mechanical_protein_ligand_decomposition(model_file):
    """E(mixed) − E(MM) = E_ML(ligand) − E_MM(ligand internal); λ=0 is MM, λ=1 the mixed system."""
    prm, crd, system, ligand = _t4l()
    pot = MLPotential("openmlip", modelPath=model_file)
    mixed = pot.createMixedSystem(prm.topology, system, ligand)  # charge from MM charges: 0
    pos = crd.getPositions()
    e_mm, _ = openmm_energy_forces(system, pos)
    e_mixed, _ = openmm_energy_forces(mixed, pos)
    lig_prm = app.AmberPrmtopFile(str(SYSTEMS / "t4l99a-pxylene" / "ligand.prmtop"))
    lig_system = lig_prm.createSystem(nonbondedMethod=app.NoCutoff, constraints=None)
    lig_pos = [pos[i] for i in ligand]
    e_lig_mm, _ = openmm_energy_forces(lig_system, lig_pos)
    ml_only = pot.createSystem(lig_prm.topology, charge=0)
    e_lig_ml, _ = openmm_energy_forces(ml_only, lig_pos)
    assert abs((e_mixed - e_mm) - (e_lig_ml - e_lig_mm)) <= 1e-6 * max(abs(e_mm), 1.0)
    # openmm-ml evaluates interpolated ML terms in a separate System without MM charges: give the charge
    interp = pot.createMixedSystem(prm.topology, system, ligand, interpolate=True, charge=0)
    e0, _ = openmm_energy_forces(interp, pos, params={"lambda_interpolate": 0.0})
    e1, _ = openmm_energy_forces(interp, pos, params={"lambda_interpolate": 1.0})
    assert abs(e0 - e_mm) <= 1e-6 * abs(e_mm) and abs(e1 - e_mixed) <= 1e-6 * abs(e_mm)


def _min_image(d, box):
    return d - np.round(d / np.diag(box)) * np.diag(box)


@pytest.mark.parametrize("damping, a", [(None, 0.5), (0.08 * u.nanometer, 0.8)])  # default 0.05 nm; Quantity
def test_electrostatic_embedding_hand_computation_and_forces(model_file, damping, a):
    pdb, system = ammonium_water_mm()
    ml = [0, 1, 2, 3, 4]
    pot = MLPotential("openmlip", modelPath=model_file)
    extra = {} if damping is None else {"embeddingDampingLength": damping}
    mixed = pot.createMixedSystem(pdb.topology, system, ml, embedding="electrostatic", forceGroup=1, **extra)
    pos = np.array(pdb.positions.value_in_unit(u.nanometer))
    box = np.array([v.value_in_unit(u.nanometer) for v in system.getDefaultPeriodicBoxVectors()])
    e_group, f_group = openmm_energy_forces(mixed, pos, groups={1})
    # hand computation: model energy and charges, MM charges, minimum image, shifted-force erf kernel
    from scipy.special import erf

    from openmlip.deploy import load_model

    model, meta = load_model(model_file)
    out = model({"pos": torch.tensor(pos[ml] * 10.0), "atomic_numbers": torch.tensor([7, 1, 1, 1, 1]),
                 "total_charge": torch.tensor([1.0], dtype=torch.float64),
                 "formal_charges": torch.tensor([1.0, 0, 0, 0, 0], dtype=torch.float64)})  # inferred by the plugin
    q_ml = out["charges"].detach().numpy()
    nb = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    q_mm = np.array([nb.getParticleParameters(i)[0].value_in_unit(u.elementary_charge) for i in range(system.getNumParticles())])
    rc = 9.9  # Å: the split mode's default Δq cutoff, 0.45 of the 2.2 nm box (the MM cutoff is 0.9 nm)
    g = lambda r: erf(r / a) / r  # noqa: E731
    dg = lambda r: 2 / (a * np.sqrt(np.pi)) * np.exp(-(r / a) ** 2) / r - erf(r / a) / r**2  # noqa: E731
    q_ref = q_mm[ml] + (1.0 - q_mm[ml].sum()) / len(ml)  # the reference charges, in the NonbondedForce
    e_emb = 0.0
    for i, qi, qr in zip(ml, q_ml, q_ref):
        d = _min_image(pos[5:] - pos[i], box) * 10.0
        r = np.linalg.norm(d, axis=1)
        phi = np.where(r < rc, g(r) - g(rc) - dg(rc) * (r - rc), 0.0)
        e_emb += units.COULOMB_EV_ANGSTROM * np.sum((qi - qr) * q_mm[5:] * phi + qr * q_mm[5:] * (g(r) - 1.0 / r))
    expected = (out["energy"].item() + e_emb) * units.EV_TO_KJ_PER_MOL
    assert abs(e_emb) * units.EV_TO_KJ_PER_MOL > 1.0  # a real interaction is being checked
    assert abs(e_group - expected) <= 1e-6 * abs(expected)
    # forces on MM atoms = -dE/dx by central differences (the ML-force group only)
    near = np.argsort(np.linalg.norm(_min_image(pos - pos[0], box), axis=1))[6:9]
    assert_forces_match_finite_differences(lambda p: openmm_energy_forces(mixed, p, groups={1})[0], pos, f_group, h=1e-5,
                                           coords=[(atom, k) for atom in near for k in range(3)], tol=Tol(rtol=1e-5, floor=1.0))
    # total charge unchanged: the MM charges + the ML region's reference charges in the NonbondedForce = original total
    nb_new = next(f for f in mixed.getForces() if isinstance(f, openmm.NonbondedForce))
    q_new = np.array([nb_new.getParticleParameters(i)[0].value_in_unit(u.elementary_charge) for i in range(mixed.getNumParticles())])
    assert np.abs(q_new[ml] - q_ref).max() < 1e-12 and np.array_equal(q_new[5:], q_mm[5:])
    assert_charges_sum_to_total(q_new, q_mm.sum(), atol=1e-9, what="MM + reference charges")
    assert_charges_sum_to_total(q_ml, 1.0, atol=1e-10, what="ML region")


def test_electrostatic_embedding_lengths_are_nm_and_renamed_arguments_fail(model_file):
    pdb, system = ammonium_water_mm()
    pot = MLPotential("openmlip", modelPath=model_file)
    with pytest.raises(ConfigError, match=r"unknown argument\(s\) 'embeddingDamping' \(did you mean 'embeddingDampingLength'\?\)"):
        pot.createMixedSystem(pdb.topology, system, [0, 1, 2, 3, 4], embedding="electrostatic", embeddingDamping=0.5)
    with pytest.raises(ConfigError, match="embeddingDampingLength=.* is not a length"):
        pot.createMixedSystem(pdb.topology, system, [0, 1, 2, 3, 4], embedding="electrostatic",
                              embeddingDampingLength=1.0 * u.kelvin)
    with pytest.raises(ConfigError, match="outputForces=True is not available with embedding='electrostatic'"):
        pot.createMixedSystem(pdb.topology, system, [0, 1, 2, 3, 4], embedding="electrostatic", outputForces=True)
    a = pot.createMixedSystem(pdb.topology, system, [0, 1, 2, 3, 4], embedding="electrostatic", embeddingCutoff=0.8)
    b = pot.createMixedSystem(pdb.topology, system, [0, 1, 2, 3, 4], embedding="electrostatic",
                              embeddingCutoff=8.0 * u.angstrom)
    e_a, e_b = openmm_energy_forces(a, pdb.positions)[0], openmm_energy_forces(b, pdb.positions)[0]
    assert abs(e_a - e_b) <= 1e-9 * abs(e_a)


def test_electrostatic_embedding_interpolation(model_file):
    pdb, system = ammonium_water_mm()
    pot = MLPotential("openmlip", modelPath=model_file)
    mixed = pot.createMixedSystem(pdb.topology, system, [0, 1, 2, 3, 4], embedding="electrostatic")
    interp = pot.createMixedSystem(pdb.topology, system, [0, 1, 2, 3, 4], embedding="electrostatic", interpolate=True)
    pos = pdb.positions
    e_mm, _ = openmm_energy_forces(system, pos)
    e_mixed, _ = openmm_energy_forces(mixed, pos)
    e0, _ = openmm_energy_forces(interp, pos, params={"lambda_interpolate": 0.0})
    e1, _ = openmm_energy_forces(interp, pos, params={"lambda_interpolate": 1.0})
    e_half, _ = openmm_energy_forces(interp, pos, params={"lambda_interpolate": 0.5})
    assert abs(e0 - e_mm) <= 1e-6 * abs(e_mm)
    assert abs(e1 - e_mixed) <= 1e-6 * abs(e_mm)
    assert abs(e_half - 0.5 * (e_mm + e_mixed)) <= 1e-6 * abs(e_mm)


@pytest.mark.parametrize("embedding", ["mechanical", "electrostatic"])
def test_langevin_md_200_steps_keeps_the_ion_whole(embedding):
    """ML/MM MD of NH4+ in water with the shipped potential (single precision, as users run it): 200 steps, the
    ion's N-H bonds stay within 0.85-1.2 times their starting length.  (An untrained model pulls the ion apart in the
    minimisation, N-H 0.4-1.1 nm, and its MD reached NaN on one CI machine: a test of nothing.)"""
    pdb, system = ammonium_water_mm()
    mixed = MLPotential("openmlip-xtb-v7").createMixedSystem(pdb.topology, system, [0, 1, 2, 3, 4], embedding=embedding,
                                                              precision="single")
    frames = langevin_frames(mixed, pdb.positions, frames=4, interval=50, seed=1, minimize_iterations=50)
    assert_bonds_intact(frames, pdb.topology, range(5), pdb.positions)


@pytest.mark.parametrize("which", ["alanine-dipeptide-explicit", "t4l99a-pxylene"])
def test_langevin_md_200_steps_real_systems(which):
    """ML/MM (mechanical) MD of the shipped Amber systems with the shipped potential: 200 steps, the ML region's
    bonds stay within 0.85-1.2 times their starting length."""
    if which == "t4l99a-pxylene":
        prm, crd, system, ml = _t4l()
    else:
        base = SYSTEMS / "alanine-dipeptide" / "explicit" / "alanine-dipeptide"
        prm = app.AmberPrmtopFile(str(base) + ".prmtop")
        crd = app.AmberInpcrdFile(str(base) + ".crd")
        system = prm.createSystem(nonbondedMethod=app.PME, nonbondedCutoff=0.9 * u.nanometer, constraints=None, rigidWater=True)
        system.setDefaultPeriodicBoxVectors(*crd.boxVectors)
        ml = [a.index for a in prm.topology.atoms() if a.residue.name in ("ACE", "ALA", "NME")]
    assert len(ml) == (22 if which != "t4l99a-pxylene" else 18)
    mixed = MLPotential("openmlip-xtb-v7").createMixedSystem(prm.topology, system, ml, precision="single")
    frames = langevin_frames(mixed, crd.getPositions(), frames=4, interval=50, seed=1, minimize_iterations=50)
    assert_bonds_intact(frames, prm.topology, ml, crd.getPositions())


def test_link_atoms_in_both_embeddings(model_file):
    """ML on the ALA residue only: two peptide bonds cross the boundary and each embedding caps them with a
    hydrogen virtual site.  Forces (the caps' spread onto their two atoms by OpenMM) are -dE/dx; the
    electrostatic embedding's MM charges keep their monopole with each boundary MM atom emptied into its MM
    neighbours."""
    from openmmml.embeddings import utilities

    from openmlip.openmm.links import embedding_charges

    base = SYSTEMS / "alanine-dipeptide" / "vacuum" / "alanine-dipeptide"
    prm = app.AmberPrmtopFile(str(base) + ".prmtop")
    crd = app.AmberInpcrdFile(str(base) + ".crd")
    system = prm.createSystem(nonbondedMethod=app.NoCutoff, constraints=None)
    top = prm.topology
    ala = [a.index for a in top.atoms() if a.residue.name == "ALA"]
    pot = MLPotential("openmlip", modelPath=model_file)
    pos = list(crd.getPositions())
    for embedding in ("mechanical", "electrostatic"):
        info = pot.createMixedSystem(top, system, ala, embedding=embedding, returnInfo=True)  # Amber ALA sums to 0
        n_caps = info["topology"].getNumAtoms() - top.getNumAtoms()
        assert n_caps == 2 and info["system"].getNumParticles() == top.getNumAtoms() + 2, embedding
        atoms_of_new = set(info["topology"].atoms())  # a Topology whose bonds join its own atoms (mdtraj, PDB writers)
        assert all(b[0] in atoms_of_new and b[1] in atoms_of_new for b in info["topology"].bonds()), embedding
        assert info["topology"].getNumBonds() == top.getNumBonds()
        full = pos + [pos[0]] * n_caps  # the caps are virtual: OpenMM places them
        e, f = openmm_energy_forces(info["system"], full, virtual_sites=True)
        assert np.isfinite(e) and np.all(np.isfinite(f)), embedding

        def energy(x):
            return openmm_energy_forces(info["system"], [openmm.Vec3(*r) for r in x], virtual_sites=True)[0]

        x = np.vstack([crd.getPositions(asNumpy=True).value_in_unit(u.nanometer), np.zeros((n_caps, 3))])
        n, ca, c = (next(a.index for a in top.atoms() if a.residue.name == "ALA" and a.name == k) for k in ("N", "CA", "C"))
        ace_c = next(a.index for a in top.atoms() if a.residue.name == "ACE" and a.name == "C")
        assert_forces_match_finite_differences(energy, x, f, h=1e-4, coords=[(n, 0), (c, 1), (ca, 2), (ace_c, 0)],
                                               tol=Tol(rtol=2e-3, atol=0.5), what=embedding)
        # interpolation carries the caps too: lambda = 1 is the ML/MM System, lambda = 0 the MM one
        interp = pot.createMixedSystem(top, system, ala, embedding=embedding, interpolate=True)
        e1 = openmm_energy_forces(interp, full, virtual_sites=True, params={"lambda_interpolate": 1.0}, forces=False)[0]
        e0 = openmm_energy_forces(interp, full, virtual_sites=True, params={"lambda_interpolate": 0.0}, forces=False)[0]
        assert e1 == pytest.approx(e, rel=1e-6, abs=1e-3), embedding
        assert e0 == pytest.approx(openmm_energy_forces(system, pos, forces=False)[0], rel=1e-6, abs=1e-3), embedding
    # the cap distance can be set in both embeddings; two link bonds on one MM atom are refused in one line
    ala_n = next(a.index for a in top.atoms() if a.residue.name == "ALA" and a.name == "N")
    short = pot.createMixedSystem(top, system, ala, embedding="electrostatic", linkAtomDistances=[(ala_n, ace_c, 0.1 * u.nanometer)])
    sites = [short.getVirtualSite(i) for i in range(short.getNumParticles()) if short.isVirtualSite(i)]
    assert sorted(v.getLocalPosition().value_in_unit(u.nanometer)[0] for v in sites)[0] == pytest.approx(0.1)
    for embedding in ("mechanical", "electrostatic"):
        with pytest.raises(SelectionError, match=f"are both bonded to MM atom {ala_n}, which would get two link atoms"):
            pot.createMixedSystem(top, system, [ace_c, ca], embedding=embedding, charge=0)
    links = utilities.findLinkBonds(top, ala)
    nb = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    mm = {i: nb.getParticleParameters(i)[0].value_in_unit(u.elementary_charge) for i in range(top.getNumAtoms()) if i not in ala}
    moved = embedding_charges(top, ala, mm, links)
    assert {m for _, m in links}.isdisjoint(moved) and abs(sum(moved.values()) - sum(mm.values())) < 1e-12


def test_formal_charges_inferred_from_bonds_match_the_explicit_ones(model_file):
    """Without formalCharges the plugin puts NH4+'s charge on its N (as the training data do) and the
    System equals one built with the explicit formal charges; an unplaceable charge warns and spreads."""
    from openmlip.openmm.settings import infer_formal_charges

    pdb, system = ammonium_water_mm()
    top = pdb.topology
    nh4 = [a.index for a in top.atoms() if a.residue.name == "NH4"]
    cl = [a.index for a in top.atoms() if a.element.symbol == "Cl"]
    assert infer_formal_charges(top, nh4, 1.0) == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert infer_formal_charges(top, nh4 + cl, 0.0) == [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
    assert infer_formal_charges(top, nh4, 0.0) is None  # the rules give +1, not 0: refuse to guess
    mlp = MLPotential("openmlip", modelPath=model_file)
    implicit = mlp.createMixedSystem(top, system, nh4, charge=1)
    explicit = mlp.createMixedSystem(top, system, nh4, charge=1, formalCharges=[1, 0, 0, 0, 0])
    e1, f1 = openmm_energy_forces(implicit, pdb.positions)
    e2, f2 = openmm_energy_forces(explicit, pdb.positions)
    assert_energy_forces_match((e1, f1), (e2, f2), energy=Tol(rtol=1e-12, floor=1.0), forces=Tol(rtol=1e-12, atol=1e-9))
    with pytest.warns(UserWarning, match="formalCharges"):
        spread = mlp.createMixedSystem(top, system, nh4, charge=-1)  # no bond rule gives -1 here
    assert abs(openmm_energy_forces(spread, pdb.positions)[0] - e1) > 1e-6


def test_formal_charges_inferred_for_a_lysine_and_a_neutral_ligand():
    """T4 lysozyme (Amber prmtop bonds): a lysine's +1 lands on NZ; the neutral p-xylene gets zeros."""
    from openmlip.openmm.settings import infer_formal_charges

    prm, crd, system, ligand = _t4l()
    top = prm.topology
    assert infer_formal_charges(top, ligand, 0.0) == [0.0] * len(ligand)
    lys = [a.index for a in top.atoms() if a.residue.name == "LYS" and a.residue.index == next(
        r.index for r in top.residues() if r.name == "LYS")]
    fc = infer_formal_charges(top, lys, 1.0)
    assert fc is not None and sum(fc) == 1.0
    nz = [a for a, q in zip(lys, fc) if q]
    assert [list(top.atoms())[a].name for a in nz] == ["NZ"]


def test_formal_charges_inferred_residue_by_residue_match_amber():
    """Every residue of T4 lysozyme gets its Amber net charge from the bond rules alone (Arg's
    guanidinium, Lys, Asp/Glu carboxylates, both termini, His, neutral residues), and Arg's +1 sits
    on NH2, as a ``[NH2+]=C`` SMILES puts it."""
    from openmlip.openmm.settings import infer_formal_charges

    prm, crd, system, ligand = _t4l()
    top = prm.topology
    nb = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    atoms = list(top.atoms())
    protein = [a.index for a in atoms if a.residue.name != "TMP"]
    mm_total = round(sum(nb.getParticleParameters(i)[0].value_in_unit(u.elementary_charge) for i in protein))
    fc = infer_formal_charges(top, protein, float(mm_total))
    assert fc is not None, "the rules do not add up to the protein's Amber charge"
    by_atom = dict(zip(protein, fc))
    seen = set()
    for res in top.residues():
        if res.name == "TMP":
            continue
        mm_q = sum(nb.getParticleParameters(a.index)[0].value_in_unit(u.elementary_charge) for a in res.atoms())
        assert sum(by_atom[a.index] for a in res.atoms()) == round(mm_q), f"{res.name}{res.index}"
        seen.add((res.name, round(mm_q)))
    assert {("ARG", 1), ("LYS", 1), ("ASP", -1), ("GLU", -1), ("ALA", 0)} <= seen
    arg = next(r for r in top.residues() if r.name == "ARG")
    assert [a.name for a in arg.atoms() if by_atom[a.index]] == ["NH2"]


def test_link_cap_charge_meets_the_mm_charges_on_the_atom_it_caps():
    """charge_sites: the embedding energy with a cap's charge placed on its ML atom equals the hand sum in
    which that charge sits at the ML atom's position (the cap's own position does not enter)."""
    from scipy.special import erf

    from openmlip.openmm.embedding import EmbeddedPotential

    model = make_model(agg="charge-gated", dtype=torch.float64)
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.11, 0.0],  # ML: C, H, cap (nm)
                        [0.0, 0.26, 0.02], [0.3, 0.3, 0.1]], dtype=torch.float64)  # MM charges
    q_mm = [-0.4, 0.3]

    def terms(sites):
        pot = EmbeddedPotential(model, [6, 1, 1], [3, 4], q_mm, embedding_cutoff=0.0, damping_length=0.05,
                                charge_sites=sites, indices=[0, 1, 2], num_particles=5, total_charge=1.0,
                                dtype=torch.float64)
        return pot.embedding_energy_terms(pos)

    _, e_on_c, q = terms([0, 1, 0])
    _, e_own, _ = terms(None)
    x = pos.numpy() * 10.0
    site = x[[0, 1, 0]]
    r = np.linalg.norm(x[[3, 4]][None] - site[:, None], axis=-1)
    hand = units.COULOMB_EV_ANGSTROM * np.sum(q.detach().numpy()[:, None] * np.array(q_mm)[None] * erf(r / 0.5) / r)
    assert float(e_on_c) == pytest.approx(hand * units.EV_TO_KJ_PER_MOL, rel=1e-10)
    assert abs(float(e_on_c) - float(e_own)) > 1e-3  # the cap's own position would give another energy
    with pytest.raises(SelectionError, match="charge_sites must give one ML atom position"):
        terms([0, 1])


def test_link_caps_join_implicit_solvent_or_are_refused():
    """A cap appended after the real particles gets a GBSAOBCForce particle (uncharged, negligible descreening),
    also inside a CustomCVForce; a CustomGBForce, whose parameters openmlip cannot know, is a one-line error."""
    from openmlip.openmm.links import CAP_GB_RADIUS_NM, pad_solvation_forces

    system = openmm.System()
    for _ in range(3):
        system.addParticle(1.0)
    gb, inner = openmm.GBSAOBCForce(), openmm.GBSAOBCForce()
    for f in (gb, inner):
        for _ in range(2):
            f.addParticle(0.1, 0.15, 0.8)
    cv = openmm.CustomCVForce("e")
    cv.addCollectiveVariable("e", inner)
    system.addForce(gb)
    system.addForce(cv)
    pad_solvation_forces(system)
    for f in (system.getForce(0), system.getForce(1).getCollectiveVariable(0)):
        assert f.getNumParticles() == 3
        q, radius, scale = f.getParticleParameters(2)
        assert (q.value_in_unit(u.elementary_charge), radius.value_in_unit(u.nanometer)) == (0.0, CAP_GB_RADIUS_NM) and 0 < scale < 1e-5
    custom = openmm.CustomGBForce()
    custom.addPerParticleParameter("q")
    custom.addParticle([0.1])
    system.addForce(custom)
    with pytest.raises(ConfigError, match="is a CustomGBForce .* whose per-particle parameters openmlip cannot set"):
        pad_solvation_forces(system)
