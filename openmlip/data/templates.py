"""Templates of the xTB reference data (:mod:`openmlip.data.generate`): a molecule, ion or ion–water cluster at
its total charge, from a SMILES (RDKit builds 3D coordinates; formal charges come from the SMILES), sampled by
xTB MD or by X–H bond stretching."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict


@dataclass(frozen=True)
class Template:
    name: str
    smiles: str  # the solute (RDKit builds 3D coordinates)
    charge: int = 0
    multiplicity: int = 1
    waters: int = 0  # solvating waters placed around the solute
    temperature: float = 500.0  # K for the sampling MD
    subset: str = "molecules"
    sampling: str = "md"  # "md": xTB Langevin MD; "stretch": one X–H bond pulled from 0.85× to 2.6×


TEMPLATES: Dict[str, Template] = {t.name: t for t in [
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
]}
