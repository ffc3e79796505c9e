"""Regenerate water-box.pdb: a cubic box of TIP3P-geometry water at 1 g/cm³ (OpenMM Modeller),
relaxed with TIP3P (minimised, 2 ps at 300 K, minimised again: openmlip.md.structure.relax_with_mm), so
no clash across the periodic boundary survives into a flexible ML water.

    python systems/water-box/build.py
"""
from pathlib import Path

import openmm
import openmm.app as app
import openmm.unit as u

from openmlip.md.structure import relax_with_mm

HERE = Path(__file__).resolve().parent


def build(box_nm: float = 1.6):
    ff = app.ForceField("amber14/tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(ff, model="tip3p", boxSize=openmm.Vec3(box_nm, box_nm, box_nm) * u.nanometer)
    modeller.positions = relax_with_mm(modeller.topology, modeller.positions, ff)
    return modeller


if __name__ == "__main__":
    m = build()
    with open(HERE / "water-box.pdb", "w") as fh:
        app.PDBFile.writeFile(m.topology, m.positions, fh)
    print(m.topology.getNumAtoms(), "atoms")
