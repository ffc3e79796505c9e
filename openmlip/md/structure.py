"""The structure of a system spec: its files read (PDB with a force field, Amber prmtop/inpcrd, xyz/extxyz), its
atom selections resolved, and a trajectory checked against it; also the helpers that build shipped structures
(:func:`xyz_topology`, :func:`relax_with_mm`)."""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

import torch  # noqa: F401  (before openmm: openmm-torch's plugins need torch's libraries loaded)
import openmm
import openmm.app as app
import openmm.unit as u

from .. import units
from ..errors import SpecError
from ..openmm.platform import openmm_seed
from .spec import SystemSpec


def select_atoms(spec: SystemSpec, md_top, selection, where: str) -> List[int]:
    """The atom indices of a spec's ``selection`` (``"all"``, a list of indices or an mdtraj selection string) in
    ``md_top`` (an mdtraj Topology); a :class:`SpecError` naming ``where`` in the spec when it selects nothing or
    is not understood."""
    if selection == "all":
        return list(range(md_top.n_atoms))
    if isinstance(selection, list):
        bad = [i for i in selection if not isinstance(i, int) or not 0 <= i < md_top.n_atoms]
        if bad:
            raise SpecError(f"{spec.path}: {where}: indices {bad[:5]} are not atoms of this {md_top.n_atoms}-atom structure")
        return list(selection)
    try:
        idx = md_top.select(str(selection))
    except Exception as exc:  # mdtraj raises several types for a bad expression
        raise SpecError(f"{spec.path}: {where}: cannot parse selection {selection!r} ({str(exc).splitlines()[0]})") from None
    if len(idx) == 0:
        raise SpecError(f"{spec.path}: {where}: selection {selection!r} matches no atom "
                        f"(residues here: {', '.join(sorted({r.name for r in md_top.residues})[:12])})")
    return [int(i) for i in idx]


def xyz_topology(atoms) -> app.Topology:
    """A one-residue Topology of an ASE ``Atoms`` with its covalent bonds, found by the same rule as the ASE
    calculator's formal charges (:func:`openmlip.charges.bonds_from_positions`), so trajectories carry them and
    the OpenMM route infers the same formal charges (+1 on the N of NH4+)."""
    from ..charges import bonds_from_positions

    top = app.Topology()
    res = top.addResidue("MOL", top.addChain())
    added = [top.addAtom(f"{s}{k}", app.Element.getBySymbol(s), res) for k, s in enumerate(atoms.get_chemical_symbols())]
    for i, j in bonds_from_positions(atoms.numbers, atoms.positions):
        top.addBond(added[i], added[j])
    return top


def relax_with_mm(topology, positions, forcefield, steps: int = 1000, seed: int = 0, cutoff_nm: float = 0.7):
    """Minimise and briefly equilibrate a solvated structure with its MM force field (rigid TIP3P,
    X–H constraints, 300 K, 2 fs steps, PME), returning positions in nm.

    Modeller's ``addSolvent`` can leave clashes across the periodic boundary (an H–H pair at 0.52 Å in
    the first water box) that rigid MM water shrugs off but that a flexible ML water turns into a
    broken bond; shipped structures are relaxed this way before they are written.
    """
    system = forcefield.createSystem(topology, nonbondedMethod=app.PME, nonbondedCutoff=cutoff_nm * u.nanometer,
                                     constraints=app.HBonds, rigidWater=True)
    integrator = openmm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, 2 * u.femtosecond)
    integrator.setRandomNumberSeed(openmm_seed(seed))
    ctx = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    ctx.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, 1000)
    ctx.setVelocitiesToTemperature(300 * u.kelvin, openmm_seed(seed))
    integrator.step(steps)
    openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, 1000)
    return ctx.getState(getPositions=True).getPositions(asNumpy=True)


def _read(spec: SystemSpec, path: Path, kind: str, reader):
    """``reader(str(path))``, or a :class:`SpecError` naming the spec's structure file when it cannot be read."""
    try:
        return reader(str(path))
    except Exception as exc:  # noqa: BLE001  -- OpenMM's and ASE's readers raise many types for a damaged file
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise SpecError(f"{spec.path}: structure {path.name} cannot be read as {kind} file ({type(exc).__name__}: "
                        f"{lines[-1][:120] if lines else 'no detail'}); fix or replace the file") from None


def load_structure(spec: SystemSpec, mm: bool = True):
    """The spec's structure: (OpenMM topology, positions in nm [N,3] float, box vectors or None, MM System or
    None); the MM System is built from the spec's force field or prmtop when the ML region is embedded in MM
    (``mm=False``: never, the structure only)."""
    nb = spec.nonbonded
    method = getattr(app, nb.method)
    constraints = None if nb.constraints is None else getattr(app, nb.constraints)
    kw = dict(nonbondedMethod=method, constraints=constraints, rigidWater=bool(nb.rigid_water))
    if method is not app.NoCutoff:
        kw["nonbondedCutoff"] = float(nb.cutoff_nm) * u.nanometer
    if isinstance(spec.structure, dict):
        prmtop = _read(spec, spec.root / spec.structure["prmtop"], "an Amber prmtop", app.AmberPrmtopFile)
        inpcrd = _read(spec, spec.root / spec.structure["inpcrd"], "an Amber inpcrd", app.AmberInpcrdFile)
        if nb.implicit_solvent:
            kw["implicitSolvent"] = getattr(app, nb.implicit_solvent)
        system = prmtop.createSystem(**kw) if mm and spec.ml.embedding != "none" else None
        box = inpcrd.boxVectors
        if box is not None:
            prmtop.topology.setPeriodicBoxVectors(box)
        pos = np.asarray(inpcrd.getPositions(asNumpy=True).value_in_unit(u.nanometer))
        return prmtop.topology, pos, box, system
    path = spec.root / spec.structure
    if path.suffix.lower() == ".pdb":
        pdb = _read(spec, path, "a PDB", app.PDBFile)
        top = pdb.topology
        pos = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer))
        box = top.getPeriodicBoxVectors()
        system = None
        if spec.forcefield and mm:
            try:
                ff = app.ForceField(*[spec.resolve(x) for x in spec.forcefield])
            except Exception as exc:  # noqa: BLE001
                raise SpecError(f"{spec.path}: forcefield: cannot load {spec.forcefield} ({str(exc).splitlines()[0]})") from None
            if spec.ml.embedding != "none":
                if box is None and method in (app.PME, app.Ewald, app.CutoffPeriodic):
                    raise SpecError(f"{spec.path}: nonbonded.method {nb.method} needs a box: add a CRYST1 record to the PDB")
                try:
                    system = ff.createSystem(top, **kw)
                except ValueError as exc:
                    raise SpecError(f"{spec.path}: forcefield: {str(exc).splitlines()[0]}") from None
        return top, pos, box, system
    from ase.io import read

    atoms = _read(spec, path, "an xyz/extxyz", read)
    top = xyz_topology(atoms)
    pos = atoms.positions * units.ANGSTROM_TO_NM
    box = None
    if spec.box_nm is not None:
        box = tuple(openmm.Vec3(*(spec.box_nm if i == j else 0.0 for j in range(3))) for i in range(3)) * u.nanometer
        top.setPeriodicBoxVectors(box)
    return top, pos, box, None


def check_trajectory_of(spec: SystemSpec, traj, trajectory) -> None:
    """:class:`SpecError` unless ``traj`` (mdtraj) has the atoms of the spec's structure, element by element: the
    checks of one system on another system's trajectory would pass or fail for nothing."""
    top = load_structure(spec, mm=False)[0]
    expected = [a.element.symbol if a.element is not None else "?" for a in top.atoms()]
    atoms = list(traj.topology.atoms)
    caps = [a for a in atoms[len(expected):] if a.name[:1] == "V" and a.name[1:].isdigit()]  # link-atom caps, appended
    found = [a.element.symbol if a.element is not None else "?" for a in atoms[:len(atoms) - len(caps)]]
    if len(found) != len(expected):
        raise SpecError(f"{trajectory}: {len(found)} atoms, but {spec.name}'s structure has {len(expected)}: not a run of "
                        f"this system; give the trajectory of `openmlip run {spec.path.parent}` (or the matching --system)")
    bad = next((k for k, (a, b) in enumerate(zip(found, expected)) if a != b), None)
    if bad is not None:
        raise SpecError(f"{trajectory}: atom {bad} is {found[bad]}, but {spec.name}'s structure has {expected[bad]} there: "
                        "not a run of this system; give the matching --system")
