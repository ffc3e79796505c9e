"""Link atoms: ML regions that cut covalent bonds (a side chain, a fragment of a ligand).

openmm-ml caps each cut bond with a hydrogen virtual site (``openmmml.embeddings.utilities.addLinkAtomSites``:
a ``LocalCoordinatesSite`` on the ML atom–MM atom axis, appended after all real particles).  Two things
around it live here, used by both embeddings:

* :func:`pad_solvation_forces` — openmm-ml adds the cap particles to ``NonbondedForce`` and
  ``CustomNonbondedForce`` only; a System with implicit solvent (``GBSAOBCForce``, e.g. OBC2 from a prmtop)
  then fails with "GBSAOBCForce must have exactly as many particles as the System".  Each cap is added to it
  uncharged (no polar solvation energy) and with a descreening scale of 1e-6 (it hides no other atom from the
  solvent: the MM atom it stands in for is still there).  OBC2's surface-area (ACE) term does not depend on the
  charge: each cap adds about 1 kJ/mol of it (1.2 kJ/mol for a cap 1.09 Å out on a C–C bond, measured), a nearly
  constant offset with a small force.
* :func:`embedding_charges` — the MM point charges that the electrostatic embedding lets the ML charges
  see: each MM atom bonded to the ML region (M1) gives its charge, in equal parts, to its other MM
  neighbours (M2), so that no MM point charge sits 1.1–1.5 Å from an ML atom or cap while the monopole of
  the MM charge distribution is unchanged (the "redistributed charge" idea of Lin & Truhlar,
  J. Phys. Chem. A 109, 3991 (2005), with the charge on the M2 atoms rather than on bond midpoints).
  The MM force field's own M1 charge is kept for MM–MM interactions.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import openmm

from ..errors import ConfigError, SelectionError

# radius (nm) of a cap in a GBSAOBCForce: hydrogen's in mbondi2 (Amber's OBC2 radii)
CAP_GB_RADIUS_NM = 0.12
# its descreening scale: OpenMM requires > 0; this small, the cap hides no other atom from the solvent
CAP_GB_SCALE = 1e-6


def _pad(force: openmm.Force, n: int) -> None:
    if isinstance(force, openmm.GBSAOBCForce):
        while force.getNumParticles() < n:
            force.addParticle(0.0, CAP_GB_RADIUS_NM, CAP_GB_SCALE)
    elif isinstance(force, openmm.CustomGBForce) and force.getNumParticles() < n:
        raise ConfigError("an ML region that cuts covalent bonds needs link atoms, and this System's implicit solvent "
                          "is a CustomGBForce (ForceField implicit files, or a prmtop with salt) whose per-particle "
                          "parameters openmlip cannot set for them; use AmberPrmtopFile.createSystem(implicitSolvent=OBC2) "
                          "without implicitSolventKappa (a GBSAOBCForce), or select whole molecules")
    elif isinstance(force, openmm.CustomCVForce):
        for k in range(force.getNumCollectiveVariables()):
            _pad(force.getCollectiveVariable(k), n)


def check_links(links: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """The (ML atom, MM atom) link bonds, or :class:`SelectionError` when two of them end on one MM atom (its caps
    would sit on top of each other)."""
    seen: Dict[int, int] = {}
    for ml, mm in links:
        if mm in seen:
            raise SelectionError(f"ML atoms {seen[mm]} and {ml} are both bonded to MM atom {mm}, which would get two "
                                 f"link atoms; add atom {mm} to the ML region or remove one of the two from it")
        seen[mm] = ml
    return list(links)


def pad_solvation_forces(system: openmm.System) -> openmm.System:
    """Give the implicit-solvent forces of ``system`` (also inside CustomCVForces) a particle for every
    link-atom cap appended after their last particle; returns ``system`` (changed in place)."""
    n = system.getNumParticles()
    for force in system.getForces():
        _pad(force, n)
    return system


def embedding_charges(topology, atoms: Sequence[int], charges: Dict[int, float],
                      links: Sequence[Tuple[int, int]]) -> Dict[int, float]:
    """``charges`` ({MM particle: charge e}) with each link bond's MM atom emptied into its other MM neighbours.

    ``links`` are (ML atom, MM atom) pairs (``findLinkBonds``).  An MM atom bonded to the ML region with no MM
    neighbour of its own (a methyl carbon, say) cannot give its charge away: select the cut elsewhere."""
    if not links:
        return dict(charges)
    ml = set(atoms)
    m1 = {mm for _, mm in links}
    neighbours: Dict[int, List[int]] = {i: [] for i in m1}
    for bond in topology.bonds():
        a, b = bond.atom1.index, bond.atom2.index
        for x, y in ((a, b), (b, a)):
            if x in m1 and y not in ml and y not in m1:
                neighbours[x].append(y)
    out = dict(charges)
    for mm in sorted(m1):
        if not neighbours[mm]:
            raise SelectionError(f"MM atom {mm} is bonded to the ML region and to no other MM atom (outside the "
                                 "other boundary atoms), so its charge has nowhere to go; move the cut one bond "
                                 "further, or select whole molecules")
        q = out.pop(mm, 0.0)
        for j in neighbours[mm]:
            out[j] = out.get(j, 0.0) + q / len(neighbours[mm])
    return out


def copy_topology(topology, caps: int = 0):
    """A copy of ``topology`` (atoms, residues, chains, bonds, box) plus ``caps`` link-atom caps named as openmm-ml
    names them (atom and residue ``V<k>``, hydrogen, in a new chain).  ``copy.deepcopy`` of a Topology, which
    openmm-ml uses, leaves the copy's bonds pointing at the original's atoms (measured with OpenMM 8.5.2 on the
    T4 lysozyme prmtop: all 2,641 bonds), which mdtraj cannot convert."""
    from openmm import app

    if any(a.index != k for k, a in enumerate(topology.atoms())):  # Modeller.add numbers atoms in chain order
        raise ConfigError("the Topology's atom indices are not in chain/residue order; openmlip cannot copy it with "
                          "link atoms: build it in order (e.g. with Modeller)")
    modeller = app.Modeller(app.Topology(), [])
    modeller.add(topology, [openmm.Vec3(0.0, 0.0, 0.0)] * topology.getNumAtoms() * openmm.unit.nanometer)  # copies
    new = modeller.topology
    new.setPeriodicBoxVectors(topology.getPeriodicBoxVectors())
    if caps:
        chain = new.addChain()
        for k in range(caps):
            new.addAtom(f"V{k}", app.element.hydrogen, new.addResidue(f"V{k}", chain))
    return new


def place_link_atoms(system: openmm.System, positions_nm):
    """``positions_nm`` ([N, 3], nm) followed by the positions of the link-atom caps that ``system`` appends after
    them, where OpenMM puts each (``d`` from the ML atom towards the MM atom of its cut bond), so that a Context
    starts from a consistent geometry without ``computeVirtualSites``."""
    import numpy as np

    pos = np.asarray(positions_nm, dtype=float)
    caps = []
    for i in range(len(pos), system.getNumParticles()):
        site = system.getVirtualSite(i) if system.isVirtualSite(i) else None
        if not isinstance(site, openmm.LocalCoordinatesSite) or site.getNumParticles() != 2:
            raise ConfigError(f"particle {i} of the ML/MM System is not a link-atom cap of openmm-ml; "
                              "give positions for every particle")
        ml, mm = site.getParticle(0), site.getParticle(1)
        d = site.getLocalPosition().value_in_unit(openmm.unit.nanometer)[0]
        axis = pos[mm] - pos[ml]
        caps.append(pos[ml] + d * axis / np.linalg.norm(axis))
    return np.vstack([pos] + [np.asarray(caps).reshape(-1, 3)]) if caps else pos
