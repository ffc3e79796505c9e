"""Templates of the xTB reference data (:mod:`openmlip.data.generate`): a molecule, ion or ion–water cluster at
its total charge, from a SMILES (RDKit builds 3D coordinates, :mod:`openmlip.data.geometry`; formal charges come
from the SMILES, :func:`template_formal_charges`), sampled by xTB MD or by X–H bond stretching."""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np

from ..charges import formal_charges_from_bonds, resolve_charge_state
from ..errors import ConfigError
from .structure import Structure


@dataclass(frozen=True)
class Template:
    name: str
    smiles: str  # the solute (RDKit builds 3D coordinates)
    charge: int = 0
    multiplicity: int = 1
    waters: int = 0  # solvating waters placed around the solute
    temperature: float = 500.0  # K for the sampling MD
    subset: str = "molecules"
    sampling: str = "md"  # "md": xTB Langevin MD; "stretch": one X–H bond pulled from 0.85× to ``stretch_to``×
    stretch_to: float = 2.6  # the longest stretch (× the optimised bond length) of a ``stretch`` template


TEMPLATE_LIST: List[Template] = [
    Template("water", "O", subset="water"),
    Template("water-dimer", "O", waters=1, temperature=300.0, subset="water"),
    Template("water-tetramer", "O", waters=3, temperature=300.0, subset="water"),
    Template("ammonium", "[NH4+]", charge=1, subset="ions"),
    Template("ammonium-water1", "[NH4+]", charge=1, waters=1, temperature=300.0, subset="ion clusters"),
    Template("ammonium-water2", "[NH4+]", charge=1, waters=2, temperature=300.0, subset="ion clusters"),
    Template("ammonium-water4", "[NH4+]", charge=1, waters=4, temperature=300.0, subset="ion clusters"),
    Template("ammonia", "N", subset="molecules"),
    Template("methylammonium", "C[NH3+]", charge=1, subset="ions"),
    Template("acetate", "CC(=O)[O-]", charge=-1, subset="ions"),
    Template("sodium-water3", "[Na+]", charge=1, waters=3, temperature=300.0, subset="ion clusters"),
    Template("sodium-water5", "[Na+]", charge=1, waters=5, temperature=300.0, subset="ion clusters"),
    Template("chloride-water3", "[Cl-]", charge=-1, waters=3, temperature=300.0, subset="ion clusters"),
    Template("chloride-water5", "[Cl-]", charge=-1, waters=5, temperature=300.0, subset="ion clusters"),
    Template("methanol", "CO"),
    Template("ethanol", "CCO"),
    Template("formamide", "NC=O"),
    Template("n-methylacetamide", "CNC(C)=O"),
    Template("alanine-dipeptide", "CC(=O)N[C@@H](C)C(=O)NC"),
    Template("benzene", "c1ccccc1"),
    Template("toluene", "Cc1ccccc1"),
    Template("p-xylene", "Cc1ccc(C)cc1"),
    Template("water-octamer", "O", waters=7, temperature=300.0, subset="water"),
    Template("ammonium-water8", "[NH4+]", charge=1, waters=8, temperature=300.0, subset="ion clusters"),
    Template("ethane", "CC"),
    Template("propanol", "CCCO"),
    Template("dimethyl-ether", "COC"),
    Template("acetic-acid", "CC(=O)O"),
    Template("methylamine", "CN"),
    # v3: relatives of the held-out molecules (ethers, amines, acids, alcohols) and bigger water / ion clusters
    Template("ethyl-methyl-ether", "CCOC"),
    Template("diethyl-ether", "CCOCC"),
    Template("ethylamine", "CCN"),
    Template("dimethylamine", "CNC"),
    Template("ethylammonium", "CC[NH3+]", charge=1, subset="ions"),
    Template("formic-acid", "OC=O"),
    Template("propanoic-acid", "CCC(=O)O"),
    Template("isopropanol", "CC(C)O"),
    Template("water-16", "O", waters=15, temperature=300.0, subset="water"),
    Template("ammonium-water12", "[NH4+]", charge=1, waters=12, temperature=300.0, subset="ion clusters"),
    Template("chloride-water8", "[Cl-]", charge=-1, waters=8, temperature=300.0, subset="ion clusters"),
    Template("ammonium-stretch", "[NH4+]", charge=1, temperature=300.0, subset="bond stretch", sampling="stretch"),
    Template("ammonium-water1-stretch", "[NH4+]", charge=1, waters=1, temperature=300.0, subset="bond stretch",
             sampling="stretch"),
    Template("water-stretch", "O", temperature=300.0, subset="bond stretch", sampling="stretch"),
    Template("methylammonium-stretch", "C[NH3+]", charge=1, temperature=300.0, subset="bond stretch", sampling="stretch"),
    Template("methanol-stretch", "CO", temperature=300.0, subset="bond stretch", sampling="stretch"),
    # v4 (issue #19): SPICE's organic elements (H C N O F P S Cl Br) and protein chemistry.
    # Amino acids as capped dipeptides ACE-X-NME (L), common protonation states (alanine: alanine-dipeptide above)
    *[Template(f"{name}-dipeptide", f"CC(=O)N{x}C(=O)NC", charge=q, subset="amino acids") for name, x, q in [
        ("gly", "C", 0), ("ser", "[C@@H](CO)", 0), ("thr", "[C@@H]([C@@H](C)O)", 0), ("cys", "[C@@H](CS)", 0),
        ("met", "[C@@H](CCSC)", 0), ("asn", "[C@@H](CC(N)=O)", 0), ("gln", "[C@@H](CCC(N)=O)", 0),
        ("asp", "[C@@H](CC(=O)[O-])", -1), ("glu", "[C@@H](CCC(=O)[O-])", -1), ("lys", "[C@@H](CCCC[NH3+])", 1),
        ("arg", "[C@@H](CCCNC(N)=[NH2+])", 1), ("hid", "[C@@H](Cc1cnc[nH]1)", 0), ("hie", "[C@@H](Cc1c[nH]cn1)", 0),
        ("hip", "[C@@H](Cc1c[nH]c[nH+]1)", 1), ("pro", "1CCC[C@H]1", 0), ("val", "[C@@H](C(C)C)", 0),
        ("leu", "[C@@H](CC(C)C)", 0), ("ile", "[C@@H]([C@@H](C)CC)", 0), ("phe", "[C@@H](Cc1ccccc1)", 0),
        ("tyr", "[C@@H](Cc1ccc(O)cc1)", 0), ("trp", "[C@@H](Cc1c[nH]c2ccccc12)", 0)]],
    # drug-like fragments
    *[Template(name, smiles, charge=q, subset="fragments") for name, smiles, q in [
        ("pyridine", "c1ccncc1", 0), ("imidazole", "c1c[nH]cn1", 0), ("pyrrole", "c1cc[nH]c1", 0),
        ("thiophene", "c1ccsc1", 0), ("furan", "c1ccoc1", 0), ("indole", "c1ccc2[nH]ccc2c1", 0),
        ("pyrimidine", "c1cncnc1", 0), ("phenol", "Oc1ccccc1", 0), ("acetamide", "CC(N)=O", 0),
        ("dimethylformamide", "CN(C)C=O", 0), ("methanesulfonamide", "CS(N)(=O)=O", 0),
        ("benzenesulfonamide", "NS(=O)(=O)c1ccccc1", 0), ("dimethyl-phosphate", "COP(=O)([O-])OC", -1),
        ("methyl-phosphate", "COP(=O)(O)O", 0), ("fluorobenzene", "Fc1ccccc1", 0), ("chlorobenzene", "Clc1ccccc1", 0),
        ("bromobenzene", "Brc1ccccc1", 0), ("4-fluorotoluene", "Cc1ccc(F)cc1", 0), ("bromoethane", "CCBr", 0),
        ("benzoate", "O=C([O-])c1ccccc1", -1), ("anilinium", "[NH3+]c1ccccc1", 1),
        ("trimethylammonium", "C[NH+](C)C", 1),
        ("methylguanidinium", "CNC(N)=[NH2+]", 1), ("dimethyl-sulfide", "CSC", 0), ("methanethiol", "CS", 0),
        ("trifluoromethylbenzene", "FC(F)(F)c1ccccc1", 0), ("trifluoroethanol", "OCC(F)(F)F", 0),
        ("acetonitrile", "CC#N", 0)]],
    # ions in water
    Template("bromide-water4", "[Br-]", charge=-1, waters=4, temperature=300.0, subset="ion clusters"),
    Template("fluoride-water4", "[F-]", charge=-1, waters=4, temperature=300.0, subset="ion clusters"),
    Template("acetate-water2", "CC(=O)[O-]", charge=-1, waters=2, temperature=300.0, subset="ion clusters"),
    Template("methylammonium-water2", "C[NH3+]", charge=1, waters=2, temperature=300.0, subset="ion clusters"),
    # noncovalent dimers: solute-water, side-chain pairs (ion-amide and amide-amide H-bonds, cation-pi, stacking); a
    # dotted SMILES is placed at contact distance by geometry._place_fragments.  No contact salt bridge: on the
    # gas-phase GFN2-xTB surface acetate + methylammonium or methylguanidinium transfer a proton (even with 2-8 waters)
    *[Template(name, smiles, charge=q, waters=w, temperature=300.0, subset="dimers") for name, smiles, q, w in [
        ("phenol-water1", "Oc1ccccc1", 0, 1), ("pyridine-water1", "c1ccncc1", 0, 1),
        ("imidazole-water2", "c1c[nH]cn1", 0, 2), ("methanethiol-water1", "CS", 0, 1),
        ("n-methylacetamide-water2", "CNC(C)=O", 0, 2), ("imidazole-methanol", "c1c[nH]cn1.CO", 0, 0),
        ("benzene-methylammonium", "c1ccccc1.C[NH3+]", 1, 0), ("n-methylacetamide-dimer", "CNC(C)=O.CNC(C)=O", 0, 0),
        ("benzene-dimer", "c1ccccc1.c1ccccc1", 0, 0), ("acetate-n-methylacetamide", "CC(=O)[O-].CNC(C)=O", -1, 0),
        ("methylammonium-methanol", "C[NH3+].CO", 1, 0),
        ("methylguanidinium-n-methylacetamide", "CNC(N)=[NH2+].CNC(C)=O", 1, 0)]],
    # X-H bond stretching of the new bond classes (the sampler pulls a random X-H bond, so molecules where the wanted
    # one is common; methanethiol: 1 of 4 is S-H)
    *[Template(name, smiles, charge=q, temperature=300.0, subset="bond stretch", sampling="stretch")
      for name, smiles, q in [("formamide-stretch", "NC=O", 0), ("guanidinium-stretch", "NC(N)=[NH2+]", 1),
                              ("phenol-stretch", "Oc1ccccc1", 0), ("benzene-stretch", "c1ccccc1", 0),
                              ("formic-acid-stretch", "OC=O", 0),
                              ("methanethiol-stretch", "CS", 0)]],
    # v5 (issue #19): relatives of the held-out molecules v4 missed most (methyl phosphate 749 meV/Å, thiophene 406,
    # pyrimidine 323, benzoate 224: P-OH, aromatic S, azines and aryl carboxylates had one relative or none) ...
    *[Template(name, smiles, charge=q, subset="fragments") for name, smiles, q in [
        ("phosphoric-acid", "OP(=O)(O)O", 0), ("ethyl-phosphate", "CCOP(=O)(O)O", 0),
        ("dimethyl-phosphoric-acid", "COP(=O)(O)OC", 0), ("methylphosphonic-acid", "CP(=O)(O)O", 0),
        ("trimethyl-phosphate", "COP(=O)(OC)OC", 0), ("methyl-hydrogen-phosphate", "COP(=O)([O-])O", -1),
        ("2-methylthiophene", "Cc1cccs1", 0), ("thiazole", "c1cscn1", 0), ("benzothiophene", "c1ccc2sccc2c1", 0),
        ("pyrazine", "c1cnccn1", 0), ("pyridazine", "c1ccnnc1", 0), ("2-methylpyridine", "Cc1ccccn1", 0),
        ("2-aminopyrimidine", "Nc1ncccn1", 0),
        ("benzoic-acid", "OC(=O)c1ccccc1", 0), ("4-methylbenzoate", "Cc1ccc(cc1)C(=O)[O-]", -1),
        ("phenylacetate", "O=C([O-])Cc1ccccc1", -1)]],
    # ... more small chloride clusters (v4 lost accuracy on Cl-(H2O)3: 113 meV/Å vs v3's 43) ...
    *[Template(name, smiles, charge=-1, waters=w, temperature=300.0, subset="ion clusters") for name, smiles, w in [
        ("chloride-water1", "[Cl-]", 1), ("chloride-water2", "[Cl-]", 2), ("chloride-water4", "[Cl-]", 4)]],
    Template("chloride-methanol", "[Cl-].CO", charge=-1, temperature=300.0, subset="dimers"),
    # ... and X-H bonds pulled to 3.2x: v4's dissociation curves turn down into a false well from 2.7-3.2 A,
    # just past the 2.6x its stretch data reach (ethylamine, not the held-out methylamine, whose N-H curve is scanned)
    *[Template(name, smiles, charge=q, temperature=300.0, subset="bond stretch", sampling="stretch", stretch_to=3.2)
      for name, smiles, q in [("ammonium-long-stretch", "[NH4+]", 1), ("ethylamine-long-stretch", "CCN", 0),
                              ("methanol-long-stretch", "CO", 0), ("ethane-long-stretch", "CC", 0),
                              ("methanethiol-long-stretch", "CS", 0), ("phosphoric-acid-stretch", "OP(=O)(O)O", 0)]],
    # v6 (issue #19): the held-out molecules v5 still missed most (pyrimidine 226 meV/Å with four azines in training,
    # HIE 137, Glu- 131): substituted 1,3-diazines, imidazoles in both tautomers and open-chain carboxylates
    *[Template(name, smiles, charge=q, subset="fragments") for name, smiles, q in [
        ("2-methylpyrimidine", "Cc1ncccn1", 0), ("4-methylpyrimidine", "Cc1ccncn1", 0),
        ("5-methylpyrimidine", "Cc1cncnc1", 0), ("4,6-dimethylpyrimidine", "Cc1cc(C)ncn1", 0),
        ("quinazoline", "c1ccc2ncncc2c1", 0), ("4-methylimidazole", "Cc1c[nH]cn1", 0),
        ("5-methylimidazole", "Cc1cnc[nH]1", 0), ("1-methylimidazole", "Cn1ccnc1", 0),
        ("benzimidazole", "c1ccc2[nH]cnc2c1", 0), ("propanoate", "CCC(=O)[O-]", -1),
        ("butanoate", "CCCC(=O)[O-]", -1), ("2-butanol", "CCC(C)O", 0)]],
]
TEMPLATES: Dict[str, Template] = {t.name: t for t in TEMPLATE_LIST}  # names are unique (tests/test_templates.py)
#: the template lists of the shipped datasets, by release: the first N of TEMPLATE_LIST (which only grows at its end),
#: so ``openmlip data generate --templates v5`` names openmlip-xtb-v5.h5's templates whatever has been added since
#: (a dataset shipped from the whole list gets its release here, or its card's command would drift)
RELEASES: Dict[str, int] = {"v3": 45, "v4": 116, "v5": 142}


def expand_templates(names: Sequence[str]) -> List[str]:
    """Template names with release names (:data:`RELEASES`) replaced by their templates, in order, each once.

    Raises :class:`~openmlip.errors.ConfigError` naming what is neither a template nor a release."""
    unknown = [n for n in names if n not in TEMPLATES and n not in RELEASES]
    if unknown:
        raise ConfigError(f"--templates: unknown template(s) {', '.join(unknown)}; a release ({', '.join(RELEASES)}) or "
                          f"template names: {', '.join(sorted(TEMPLATES))}")
    out = [t.name for n in names for t in (TEMPLATE_LIST[:RELEASES[n]] if n in RELEASES else [TEMPLATES[n]])]
    return list(dict.fromkeys(out))


def templates_argument(names: Sequence[str]) -> str:
    """The ``--templates`` value that names exactly ``names`` in this order: a release's name when they are its list,
    else the names ("" only for all templates when no release has them: a card must not drift when templates are
    appended)."""
    names = list(names)
    release = [r for r, n in RELEASES.items() if names == [t.name for t in TEMPLATE_LIST[:n]]]
    if release:
        return release[0]
    return "" if names == list(TEMPLATES) else " ".join(names)


@functools.lru_cache(maxsize=None)
def _template_atoms(t: Template):
    """(atomic numbers, formal charges) of a template's structures, parsed from its SMILES once."""
    from rdkit import Chem

    mol = Chem.AddHs(Chem.MolFromSmiles(t.smiles))
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()] + [8, 1, 1] * t.waters)
    fc = np.array([a.GetFormalCharge() for a in mol.GetAtoms()] + [0] * (3 * t.waters), dtype=float)
    # the one charge-state rule (openmlip.charges): integer total, formal charges summing to it
    state = resolve_charge_state(z, total=t.charge, formal=fc, multiplicity=t.multiplicity,
                                 total_name=f"template {t.name!r} charge", formal_name="SMILES formal charges")
    # OpenMM and ASE infer formal charges from bonds: warn when their rules would not give the SMILES charges,
    # since a model trained on these data would then see other inputs in MD than in training
    n = mol.GetNumAtoms()
    bonds = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()]
    if formal_charges_from_bonds(z[:n], bonds, t.charge) != list(fc[:n]):
        warnings.warn(f"template {t.name!r}: the bond rules of openmlip.charges do not give its SMILES formal charges; "
                      "OpenMM and ASE users will need to pass them explicitly", stacklevel=2)
    return z, np.asarray(state.formal, dtype=float)


def template_formal_charges(t: Template, numbers=None) -> np.ndarray:
    """Per-atom formal charges (e) of a template's structures, in their atom order: the solute's from its SMILES
    (RDKit, hydrogens added as :func:`~openmlip.data.geometry.build_template` adds them), then 0 for each water's
    O, H, H.

    Models see these at training time exactly as OpenMM/ASE users give them at run time (e.g. +1 on
    the N of NH4+), so the charge a user puts on an atom means what the model learnt it to mean.
    """
    z, fc = _template_atoms(t)
    if numbers is not None and not np.array_equal(np.asarray(numbers), z):
        raise ValueError(f"template {t.name!r}: structure atoms {list(numbers)} do not follow the template's order {list(z)}")
    return fc.copy()


def template_structure(atoms, t: Template) -> Structure:
    """A conformer of template ``t`` as a :class:`Structure`: ``atoms`` (ASE, in the template's atom order) with the
    energy (eV), forces (eV/Å) and partial charges (e) of its attached calculator, the template's total charge,
    multiplicity, name and subset, and its formal charges (:func:`template_formal_charges`)."""
    return Structure(numbers=atoms.numbers.copy(), positions=atoms.positions.copy(), total_charge=float(t.charge),
                     spin_multiplicity=float(t.multiplicity), energy=float(atoms.get_potential_energy()),
                     forces=atoms.get_forces().copy(), charges=np.asarray(atoms.get_charges(), dtype=float).copy(),
                     formal_charges=template_formal_charges(t, atoms.numbers), name=t.name, subset=t.subset)
