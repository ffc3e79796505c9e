"""Regenerate ammonium-water-small.pdb (the full-ML variant): NH4+ and Cl- in a 1.6 nm TIP3P box.

    python systems/ammonium-water/build_small.py
"""
import openmm.app as app

from build import HERE, build

if __name__ == "__main__":
    modeller, _ = build(box_nm=1.6)
    with open(HERE / "ammonium-water-small.pdb", "w") as fh:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, fh)
    print(modeller.topology.getNumAtoms(), "atoms")
