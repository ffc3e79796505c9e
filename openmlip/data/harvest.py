"""Training data from where MD with a potential went wrong: clusters cut from a run's trajectory, labelled by GFN2-xTB.

A potential that fails in MD (a water's H flies off in bulk water, a bond stretches without limit) does so in
configurations its training data never showed it.  The standard fix is to label those configurations with the
reference method and train on them.  :func:`harvest` takes the last frames a run wrote (a run that blew up ends its
trajectory at the last good frame, so these are the frames that led into the failure), and in each the hydrogens
pulled furthest from their heavy atom and (``contacts``) the heavy atoms of different molecules pushed closest
together; around each such centre it cuts the whole molecules (residues) of the ML region within ``radius`` Å,
undoing the periodic wrap, and labels the cluster with GFN2-xTB at the sum of its atoms' formal charges (the
spec's, as the run had them).  A cluster with an atom that has flown off (no other atom within
``ISOLATED_A``) or a charge that is not a closed shell is skipped, and the manifest says why.

Clusters differ in composition, so each is its own group of the SPICE-layout output
(``<prefix>-f<frame>-h<atom>``, ``-c<atom>`` for a contact; subset ``harvested``), ready to list beside the
template data in a training config.
Progress is saved (JSON) every few clusters; a rerun continues and never mixes in clusters of other settings.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._io import check_not_input, file_sha256, writable_file
from ..analysis.report import load_trajectory
from ..errors import ConfigError, DataFileError
from ..store import RunStore
from .spice import XTB_LABELS, write_spice
from .structure import Structure, structure_from_json, structure_to_json
from .xtb import gfn2_xtb

HARVEST_PROGRESS = "openmlip-harvest-progress"
# a cluster atom with no other atom this close (Å) has left the liquid (the frames of a blow-up): not labelled, since
# the model cannot see it and xTB's state for it (radical? ion?) teaches nothing (Cl-...H in water: 2.2 Å)
ISOLATED_A = 3.5


def stretched_hydrogens(xyz: np.ndarray, box: Optional[np.ndarray], bonds: Sequence[Tuple[int, int]],
                        count: int) -> List[int]:
    """The ``count`` hydrogens of ``bonds`` (heavy atom, H) farthest from their heavy atom in ``xyz`` (Å; minimum
    image under an orthorhombic ``box``, edge lengths in Å), longest first, at most one per heavy atom."""
    def dist(x, h):
        v = xyz[h] - xyz[x]
        return float(np.linalg.norm(v if box is None else v - box * np.round(v / box)))

    if count < 1:
        return []
    d = [(dist(x, h), h, x) for x, h in bonds]
    out, heavy = [], set()
    for _, h, x in sorted(d, reverse=True):
        if x not in heavy:
            out.append(h)
            heavy.add(x)
        if len(out) == count:
            break
    return out


def close_contacts(xyz: np.ndarray, box: Optional[np.ndarray], molecules: Sequence[Sequence[int]], heavy: np.ndarray,
                   count: int) -> List[int]:
    """One heavy atom of each of the ``count`` closest heavy-atom pairs in different molecules (Å; minimum image
    under an orthorhombic ``box``), closest first, no atom twice: where a potential with too soft a wall lets
    molecules collapse onto each other (two water oxygens at 2.2 Å)."""
    atoms = np.array([i for m in molecules for i in m if heavy[i]])
    if len(atoms) < 2 or count < 1:
        return []
    owner = np.empty(len(heavy), dtype=int)
    for k, m in enumerate(molecules):
        owner[list(m)] = k
    v = xyz[atoms][:, None] - xyz[atoms][None]
    if box is not None:
        v = v - box * np.round(v / box)
    d = np.linalg.norm(v, axis=-1)
    d[owner[atoms][:, None] == owner[atoms][None]] = np.inf
    out: List[int] = []
    used = set()
    for flat in np.argsort(d, axis=None):
        i, j = np.unravel_index(flat, d.shape)
        if not np.isfinite(d[i, j]) or len(out) == count:
            break
        if atoms[i] not in used and atoms[j] not in used:
            out.append(int(atoms[i]))
            used.update((int(atoms[i]), int(atoms[j])))
    return out


def cut_cluster(xyz: np.ndarray, box: Optional[np.ndarray], molecules: Sequence[Sequence[int]], centre: int,
                radius: float) -> Tuple[List[int], np.ndarray]:
    """(atom indices, positions in Å) of the whole molecules with an atom within ``radius`` Å of atom ``centre``;
    under an orthorhombic ``box`` (edge lengths, Å) each molecule is moved to its image nearest the centre and made
    whole first (atoms at their image nearest the molecule's first atom)."""
    atoms: List[int] = []
    parts = []
    for mol in molecules:
        p = xyz[list(mol)]
        if box is not None:
            p = p - box * np.round((p - p[0]) / box)  # whole
            p = p - box * np.round((p[0] - xyz[centre]) / box)  # nearest the centre
        if np.linalg.norm(p - xyz[centre], axis=1).min() <= radius:
            atoms.extend(mol)
            parts.append(p)
    return atoms, np.concatenate(parts)


def check_options(frames: int, centres: int, contacts: int, radius: float, option: str = "") -> None:
    """A :class:`ConfigError` for a bad harvest setting, naming it (``option``: its prefix, "--" for the CLI)."""
    for name, value, low, what in (("frames", frames, 1, "last frames of the run to cut clusters from"),
                                   ("centres", centres, 0, "clusters per frame"), ("contacts", contacts, 0, "clusters per frame")):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{option}{name} {value!r}: must be an integer >= {low} ({what}), e.g. {option}{name} 2")
    if centres + contacts == 0:
        raise ConfigError(f"{option}centres 0 {option}contacts 0: nothing to cut clusters around; give one of them >= 1")
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not radius > 0:
        raise ConfigError(f"{option}radius {radius!r}: must be > 0 (Å of whole molecules around each centre), "
                          f"e.g. {option}radius 4")


def harvest(trajectory, topology, ml_atoms: Sequence[int], formal_charges: Optional[Sequence[float]], out, prefix: str,
            frames: int = 20, centres: int = 2, radius: float = 4.0, contacts: int = 0, progress: bool = True,
            checkpoint_every: int = 5, stop_after: Optional[int] = None,
            about: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Label clusters from the last ``frames`` frames of ``trajectory`` (an mdtraj file of the run with
    ``topology``, an mdtraj Topology) around the ``centres`` most stretched X–H bonds of each and its ``contacts``
    closest heavy-atom pairs between molecules (:func:`close_contacts`); ``ml_atoms``: the ML
    region, whose whole residues are the clusters' molecules; ``formal_charges``: per ML atom (None: all 0).
    Writes ``out`` (SPICE layout, xTB label keys) and ``<out>.json`` (with ``about``, e.g. the spec and the
    run's potential); returns that manifest."""
    from tqdm.auto import tqdm

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from ase import Atoms
    from ase.calculators.calculator import CalculationFailed

    check_options(frames, centres, contacts, radius)
    trajectory, out = Path(trajectory), Path(out)
    check_not_input(out, [trajectory], "out", manifests=True)
    writable_file(out, "output file")
    # an HDF5 trajectory carries its topology; other formats need ours
    traj = load_trajectory(trajectory, None if trajectory.suffix == ".h5" else topology)
    if traj.n_atoms != topology.n_atoms:
        raise DataFileError(f"{trajectory}: {traj.n_atoms} atoms, but the system has {topology.n_atoms}: not a run of "
                            "this spec")
    ml = {int(a): k for k, a in enumerate(ml_atoms)}
    fc = np.zeros(len(ml)) if formal_charges is None else np.asarray(formal_charges, dtype=float)
    molecules = [[a.index for a in r.atoms] for r in topology.residues if all(a.index in ml for a in r.atoms)]
    in_molecule = {i for m in molecules for i in m}
    numbers = np.array([a.element.atomic_number for a in topology.atoms])
    bonds = [(x.index, h.index) if h.element.symbol == "H" else (h.index, x.index) for x, h in topology.bonds
             if (x.element.symbol == "H") != (h.element.symbol == "H")]
    bonds = [(x, h) for x, h in bonds if h in in_molecule]
    if centres and not bonds:
        raise ConfigError(f"harvest: the ML region of {trajectory} has no X–H bond in whole residues to centre on")
    first = max(0, traj.n_frames - frames)
    settings = {"trajectory": trajectory.name, "frames": [first, traj.n_frames], "centres": centres, "radius_A": radius,
                "prefix": prefix, **({"contacts": contacts} if contacts else {})}
    # where the trajectory is and what it holds: two runs' trajectories of one name are not mixed into one file
    store = RunStore(out.parent, "data harvest", {**settings, "trajectory_path": str(trajectory.resolve()),
                                                  "trajectory_sha256": file_sha256(trajectory)})
    partial = out.name + ".partial.json"
    with store.lock(out.name):
        state = store.load_json(partial, HARVEST_PROGRESS)  # another trajectory or other settings: ResumeError
        done: Dict[str, Any] = {} if state is None else state["clusters"]
        skipped: Dict[str, str] = {} if state is None else state["skipped"]  # cluster -> why it has no label
        if traj.unitcell_lengths is not None and not np.allclose(traj.unitcell_angles[first:], 90.0):
            raise ConfigError(f"harvest: {trajectory} has a triclinic box; clusters are cut from orthorhombic boxes only")

        def box(f):
            return None if traj.unitcell_lengths is None else traj.unitcell_lengths[f] * 10.0

        heavy = numbers > 1
        todo = [(f, h) for f in range(first, traj.n_frames)
                for h in stretched_hydrogens(traj.xyz[f] * 10.0, box(f), bonds, centres)]
        todo += [(f, a) for f in range(first, traj.n_frames)
                 for a in close_contacts(traj.xyz[f] * 10.0, box(f), molecules, heavy, contacts)]
        new = 0
        with tqdm(total=len(todo), initial=len(done) + len(skipped), desc="xTB clusters", unit="cluster",
                  disable=not progress) as bar:
            for f, h in todo:
                key = f"{prefix}-f{f:05d}-{'h' if numbers[h] == 1 else 'c'}{h}"
                if key in done or key in skipped:
                    continue
                idx, pos = cut_cluster(traj.xyz[f] * 10.0, box(f), molecules, h, radius)
                q = float(fc[[ml[i] for i in idx]].sum())
                if abs(q - round(q)) > 1e-6 or (int(numbers[idx].sum()) - round(q)) % 2:
                    skipped[key] = f"formal charges sum to {q:g}: not a closed shell"
                    bar.update(1)
                    continue
                gap = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(len(pos)) * 1e9
                if len(pos) > 1 and gap.min(axis=1).max() > ISOLATED_A:
                    skipped[key] = f"an atom {gap.min(axis=1).max():.1f} Å from all others: it flew off"
                    bar.update(1)
                    continue
                atoms = Atoms(numbers=numbers[idx], positions=pos)
                atoms.calc = gfn2_xtb(round(q))
                try:
                    st = Structure(numbers=numbers[idx].copy(), positions=pos, total_charge=float(round(q)),
                                   spin_multiplicity=1.0, energy=float(atoms.get_potential_energy()),
                                   forces=atoms.get_forces().copy(), charges=np.asarray(atoms.get_charges(), dtype=float),
                                   formal_charges=fc[[ml[i] for i in idx]].copy(), name=key, subset="harvested")
                    done[key] = structure_to_json(st)
                except CalculationFailed:  # tblite: SCF not converged
                    skipped[key] = "GFN2-xTB SCF did not converge"
                new += 1
                bar.update(1)
                if new % checkpoint_every == 0 or (stop_after is not None and new >= stop_after):
                    store.save_json(partial, HARVEST_PROGRESS, {"clusters": done, "skipped": skipped})
                if stop_after is not None and new >= stop_after:
                    return {"status": "interrupted", "labelled": len(done)}
        structures = [structure_from_json(done[k]) for k in sorted(done)]
        if not structures:
            raise DataFileError(f"harvest: no cluster of {trajectory} could be labelled ({len(skipped)} skipped)")
        write_spice(out, structures, **XTB_LABELS.kwargs())
        sizes = [len(s.numbers) for s in structures]
        manifest = {"status": "finished", "source": {**settings, **(about or {})}, "clusters": len(structures),
                    "skipped": dict(sorted(skipped.items())),
                    "atoms_per_cluster": [min(sizes), max(sizes)],
                    "total_charges": sorted({int(s.total_charge) for s in structures}),
                    "method": "GFN2-xTB (tblite) at the cluster's summed formal charge, singlet; OMP_NUM_THREADS=1",
                    "label_keys": vars(XTB_LABELS), "units_in_file": {"positions": "bohr", "energy": "hartree"}}
        store.write_manifest(out.with_suffix(".json").name, manifest)
        store.path(partial).unlink(missing_ok=True)
        return manifest
