"""Regenerate ammonium-water.pdb: NH4+ and one Cl- in a cubic TIP3P box (OpenMM Modeller), relaxed
with the MM force field.

    python systems/ammonium-water/build.py                    # the shipped 2.2 nm box
    python systems/ammonium-water/build.py --box 3.0 --out X.pdb   # another box (the free-energy box-size check)
"""
import argparse
from pathlib import Path

import numpy as np

import openmm
import openmm.app as app
import openmm.unit as u

from openmlip.md.structure import relax_with_mm

HERE = Path(__file__).resolve().parent


def build(box_nm: float = 2.2, seed: int = 0):
    top = app.Topology()
    chain = top.addChain()
    res = top.addResidue("NH4", chain)
    n = top.addAtom("N", app.Element.getBySymbol("N"), res)
    for k in range(4):
        h = top.addAtom(f"H{k + 1}", app.Element.getBySymbol("H"), res)
        top.addBond(n, h)
    d = 0.1030 / np.sqrt(3.0)
    pos = np.array([[0, 0, 0], [d, d, d], [-d, -d, d], [-d, d, -d], [d, -d, -d]]) + box_nm / 2
    ff = app.ForceField("amber14/tip3p.xml", str(HERE / "ammonium.xml"))
    modeller = app.Modeller(top, pos * u.nanometer)
    modeller.addSolvent(ff, model="tip3p", boxSize=openmm.Vec3(box_nm, box_nm, box_nm) * u.nanometer,
                        neutralize=True, negativeIon="Cl-")
    # MM relaxation (minimise, 2 ps at 300 K, minimise): no solvent clash survives into flexible ML water
    modeller.positions = relax_with_mm(modeller.topology, modeller.positions, ff, cutoff_nm=min(0.9, box_nm / 2 - 0.05))
    return modeller, ff


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="NH4+ and Cl- in a cubic TIP3P box, relaxed with the MM force field")
    ap.add_argument("--box", type=float, default=2.2, help="box edge (nm), default 2.2")
    ap.add_argument("--out", default=str(HERE / "ammonium-water.pdb"), help="PDB to write")
    args = ap.parse_args()
    modeller, ff = build(box_nm=args.box)
    with open(args.out, "w") as fh:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, fh)
    print(modeller.topology.getNumAtoms(), "atoms")
