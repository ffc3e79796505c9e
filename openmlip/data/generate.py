"""Reference data with GFN2-xTB (tblite): templates -> xTB MD sampling -> labelled conformers.

Each template (a molecule or ion–water cluster at its total charge) is optimised briefly with xTB,
then sampled by Langevin MD on the xTB surface; every ``stride`` steps the geometry and its xTB
energy, forces and partial charges are kept.  ``stretch`` templates instead pull one X–H bond of the
optimised structure out to ``stretch_to`` (2.6 unless set) × its length (with thermal noise on all atoms),
so that the potential learns that bonds cost energy to break.  Templates are written one by one as shards
(``<output>.parts/<name>.h5`` and its record ``<name>.done.json``); within a template, a checkpoint
(``<name>.partial.json``: conformers so far, MD positions, momenta and random state; JSON, so reading it
runs no code and floats round-trip exactly) is written every ``checkpoint_every`` conformers, so a killed
run recomputes at most that many conformers and continues the same trajectory.  Records and checkpoints
hold the settings that shaped them (the template, ``conformers``, ``seed``, ``stride``): a rerun into the
same output with other values is a :class:`~openmlip.errors.ResumeError` naming them (:mod:`openmlip.store`).
The output file is written (atomically) only once every shard exists.

tblite is always given the template's total charge and multiplicity (without it NH4+ silently becomes
the neutral radical), and runs with ``OMP_NUM_THREADS=1`` (2 threads stall under load).
"""
from __future__ import annotations

import functools
import json
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._io import writable_file
from ..charges import formal_charges_from_bonds, resolve_charge_state
from ..errors import DataFileError
from ..store import RunStore, write_json
from .spice import XTB_LABELS, read_spice, write_spice
from .structure import Structure, structure_from_json, structure_to_json
from .templates import TEMPLATES, Template

def _symbol(z) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[int(z)]


def _embed(smiles: str, seed: int):
    try:
        from rdkit import Chem
        from rdkit.Chem import AllChem
    except ImportError:
        raise ImportError("building templates from SMILES needs RDKit: pip install rdkit (or the `data` extra)") from None
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    if mol.GetNumAtoms() == 1:
        return np.array([mol.GetAtomWithIdx(0).GetAtomicNum()]), np.zeros((1, 3))
    if AllChem.EmbedMolecule(mol, randomSeed=seed) != 0:
        raise RuntimeError(f"RDKit could not embed {smiles!r}")
    AllChem.MMFFOptimizeMolecule(mol)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    return z, mol.GetConformer().GetPositions()


def _solvate(z, pos, charge: int, n: int, rng) -> tuple:
    """Place ``n`` waters around the solute: O toward cations, H toward anions, 2.9 Å from its surface."""
    if n == 0:
        return z, pos
    center = pos.mean(0)
    radius = np.max(np.linalg.norm(pos - center, axis=1)) + 2.7
    zs, ps = [z], [pos]
    dirs = rng.normal(size=(n, 3))
    # spread the directions (a few repulsion sweeps on the sphere)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    for _ in range(50):
        diff = dirs[:, None] - dirs[None]
        d = np.linalg.norm(diff, axis=-1) + np.eye(n)
        dirs += 0.05 * (diff / d[..., None] ** 3).sum(1)
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    for u in dirs:
        o = center + radius * u
        perp = np.cross(u, rng.normal(size=3))
        perp /= np.linalg.norm(perp)
        half = np.deg2rad(104.5 / 2)
        sign = 1.0 if charge >= 0 else -1.0  # cation: H point away; anion: one H points to the ion
        if charge < 0:
            h1 = o - 0.957 * u
            h2 = o + 0.957 * (np.cos(np.deg2rad(104.5)) * (-u) + np.sin(np.deg2rad(104.5)) * perp)
        else:
            h1 = o + 0.957 * (np.cos(half) * u * sign + np.sin(half) * perp)
            h2 = o + 0.957 * (np.cos(half) * u * sign - np.sin(half) * perp)
        zs.append(np.array([8, 1, 1]))
        ps.append(np.array([o, h1, h2]))
    return np.concatenate(zs), np.concatenate(ps)


def _contact_site(mol, pos, frag, acceptor: bool):
    """(point, outward unit vector, whether it accepts an H-bond) where fragment ``frag`` (atom indices) meets its
    partner: its charged atom, else its first N/O/S (preferably an acceptor, one without H, when ``acceptor``, else a
    donor), pointing away from the atom's neighbours; else (no heteroatom, e.g. benzene) its centre along the ring
    normal."""
    atoms = [mol.GetAtomWithIdx(i) for i in frag]
    hetero = [a for a in atoms if a.GetAtomicNum() in (7, 8, 16)]
    picks = ([a for a in atoms if a.GetFormalCharge() != 0]
             + [a for a in hetero if (a.GetTotalNumHs(includeNeighbors=True) == 0) == acceptor] + hetero)
    if picks:
        a = picks[0]
        site = pos[a.GetIdx()]
        nb = [n.GetIdx() for n in a.GetNeighbors()]
        out = site - (pos[nb].mean(0) if nb else pos[list(frag)].mean(0))
        if np.linalg.norm(out) > 1e-6:
            accepts = a.GetFormalCharge() < 0 or a.GetTotalNumHs(includeNeighbors=True) == 0
            return site, out / np.linalg.norm(out), accepts
    heavy = [i for i in frag if mol.GetAtomWithIdx(i).GetAtomicNum() > 1] or list(frag)
    centre = pos[heavy].mean(0)
    normal = np.linalg.svd(pos[heavy] - centre)[2][-1] if len(heavy) > 2 else np.array([0.0, 0.0, 1.0])
    return centre, normal / np.linalg.norm(normal), False


def _rotation(a, b) -> np.ndarray:
    """The rotation matrix that turns unit vector ``a`` into unit vector ``b``."""
    v, c = np.cross(a, b), float(np.dot(a, b))
    if c < -1 + 1e-9:  # antiparallel: half a turn about any axis perpendicular to a
        p = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        p /= np.linalg.norm(p)
        return 2 * np.outer(p, p) - np.eye(3)
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1 + c)


def _place_fragments(smiles: str, z, pos, contact: float = 3.0, clash: float = 2.0) -> np.ndarray:
    """Positions of a two-fragment SMILES (``"A.B"``, a dimer) with B moved rigidly to contact distance from A.

    RDKit embeds each fragment about the origin, so they overlap.  Deterministically: B's contact site
    (:func:`_contact_site`: a charged atom, else a heteroatom, else the ring centre) faces A's, along A's outward
    direction (B offers an acceptor to a donor or cation of A, a donor to an acceptor or anion); of 12 twists about
    that axis, the one that lets B come closest is kept, at the smallest separation (0.02 Å steps) where the closest
    heavy atoms of A and B are ``contact`` Å apart and no atom pair is closer than ``clash`` Å.  Atom order (RDKit's,
    as the formal charges follow it) is kept.
    """
    from rdkit import Chem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    frags = [list(f) for f in Chem.GetMolFrags(mol)]
    if len(frags) == 1:
        return pos
    if len(frags) > 2:
        raise ValueError(f"{smiles!r}: only one- and two-fragment SMILES are placed, not {len(frags)} fragments")
    a, b = frags
    pos = np.array(pos, dtype=float)
    heavy_a, heavy_b = z[a] > 1, z[b] > 1
    site_a, out_a, accepts = _contact_site(mol, pos, a, acceptor=False)
    site_b, out_b, _ = _contact_site(mol, pos, b, acceptor=not accepts)
    turn = _rotation(out_b, -out_a)
    body = (pos[b] - site_b) @ turn.T  # B about its site, facing A
    best = None
    for k in range(12):
        phi = np.pi * k / 6  # twist about A's outward direction (Rodrigues)
        twisted = (body * np.cos(phi) + np.cross(out_a, body) * np.sin(phi)
                   + np.outer(body @ out_a, out_a) * (1 - np.cos(phi)))
        for r in np.arange(0.0, 12.0, 0.02):
            moved = site_a + r * out_a + twisted
            d = np.linalg.norm(pos[a][:, None] - moved[None], axis=-1)
            if d[np.ix_(heavy_a, heavy_b)].min() >= contact and d.min() >= clash:
                if best is None or r < best[0] - 1e-9:
                    best = (r, moved)
                break
    pos[b] = best[1]
    return pos


def build_template(t: Template, seed: int = 0):
    z, pos = _embed(t.smiles, seed)
    if "." in t.smiles:
        pos = _place_fragments(t.smiles, z, pos)
    if t.waters:
        z, pos = _solvate(z, pos, t.charge, t.waters, np.random.default_rng(seed))
    return z, pos


def xtb_calculator(t: Template):
    """tblite's GFN2-xTB ASE calculator at the template's total charge and multiplicity."""
    return gfn2_xtb(t.charge, t.multiplicity)


def gfn2_xtb(charge: float, multiplicity: int = 1):
    """tblite's GFN2-xTB ASE calculator at an explicit total charge and multiplicity (never tblite's default 0)."""
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", charge=float(charge), multiplicity=int(multiplicity), verbosity=0)


GROUND_STATE_MULTIPLICITY = {"H": 2, "C": 3, "N": 4, "O": 3, "F": 2, "Na": 2, "P": 4, "S": 3, "Cl": 2, "K": 2, "Br": 2}


def isolated_atom_energies(elements: Sequence[str]) -> Dict[str, float]:
    """GFN2-xTB energies (eV) of neutral isolated atoms in their ground-state multiplicity.

    Used as per-element reference energies, so that a trained model's dissociation limit is the
    sum of the atoms' energies instead of least-squares offsets (which can put separated atoms
    *below* the bound molecule).
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from ase import Atoms
    from tblite.ase import TBLite

    out = {}
    for el in elements:
        if el not in GROUND_STATE_MULTIPLICITY:
            raise ValueError(f"no ground-state multiplicity known for {el!r}; known: {sorted(GROUND_STATE_MULTIPLICITY)}")
        atoms = Atoms(el, positions=[[0.0, 0.0, 0.0]])
        atoms.calc = TBLite(method="GFN2-xTB", charge=0.0, multiplicity=GROUND_STATE_MULTIPLICITY[el], verbosity=0)
        out[el] = float(atoms.get_potential_energy())
    return out


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
    """Per-atom formal charges (e) of a template's structures, in their atom order: the solute's from
    its SMILES (RDKit, hydrogens added as ``_embed`` adds them), then 0 for each water's O, H, H.

    Models see these at training time exactly as OpenMM/ASE users give them at run time (e.g. +1 on
    the N of NH4+), so the charge a user puts on an atom means what the model learnt it to mean.
    """
    z, fc = _template_atoms(t)
    if numbers is not None and not np.array_equal(np.asarray(numbers), z):
        raise ValueError(f"template {t.name!r}: structure atoms {list(numbers)} do not follow the template's order {list(z)}")
    return fc.copy()


def _structure(atoms, t: Template) -> Structure:
    return Structure(numbers=atoms.numbers.copy(), positions=atoms.positions.copy(), total_charge=float(t.charge),
                     spin_multiplicity=float(t.multiplicity), energy=float(atoms.get_potential_energy()),
                     forces=atoms.get_forces().copy(), charges=np.asarray(atoms.get_charges(), dtype=float).copy(),
                     formal_charges=template_formal_charges(t, atoms.numbers), name=t.name, subset=t.subset)


def _xh_bonds(atoms) -> List[tuple]:
    """(heavy atom, hydrogen) index pairs closer than 1.45 Å: every X–H bond of H C N O F P S Cl Br (S–H 1.34 Å,
    P–H 1.42 Å), no hydrogen bond (H···O/N >= 1.6 Å)."""
    pos, z = atoms.positions, atoms.numbers
    return [(i, j) for i in range(len(z)) if z[i] > 1 for j in range(len(z))
            if z[j] == 1 and np.linalg.norm(pos[i] - pos[j]) < 1.45]


SAMPLING_PROGRESS = "openmlip-sampling-progress"


def stretched_geometry(reference: np.ndarray, bonds: Sequence[Tuple[int, int]], rng: np.random.Generator,
                       factor: float) -> np.ndarray:
    """The stretch sampler's conformer: ``reference`` (Å) with Gaussian noise (0.04 Å) and one random X–H bond of
    ``bonds`` scaled to ``factor`` × its reference length; a pulled H that lands within 1 Å of another atom (e.g.
    in a neighbouring water) is drawn again."""
    while True:
        heavy, h = bonds[int(rng.integers(len(bonds)))]
        noisy = reference + rng.normal(scale=0.04, size=reference.shape)
        bond = noisy[h] - noisy[heavy]
        noisy[h] = noisy[heavy] + bond / np.linalg.norm(bond) * factor * np.linalg.norm(reference[h] - reference[heavy])
        others = [i for i in range(len(noisy)) if i not in (h, heavy)]
        if not others or np.linalg.norm(noisy[others] - noisy[h], axis=1).min() > 1.0:
            return noisy


STRETCH_DRAWS = 10


def _stretched_structure(atoms, t: Template, reference, bonds, rng, factor: float) -> Structure:
    """A labelled stretch conformer at ``factor``: far out (3x and more) xTB's SCF on the half-broken bond now and
    then does not converge; that draw has no label and is drawn again (another bond, other noise), up to
    ``STRETCH_DRAWS`` times."""
    from ase.calculators.calculator import CalculationFailed

    for _ in range(STRETCH_DRAWS):
        atoms.positions = stretched_geometry(reference, bonds, rng, factor)
        try:
            return _structure(atoms, t)
        except CalculationFailed:
            atoms.calc.reset()
    raise CalculationFailed(f"template {t.name!r}: GFN2-xTB's SCF did not converge in {STRETCH_DRAWS} draws at "
                            f"{factor:.2f}x the X-H bond; lower the template's stretch_to")


def sample_template(t: Template, n_conformers: int, seed: int = 0, stride: int = 20, equilibration: int = 100,
                    timestep_fs: float = 0.5, on_conformer: Optional[Callable[[], None]] = None,
                    checkpoint: Optional[RunStore] = None, checkpoint_every: int = 10,
                    stop_after: Optional[int] = None) -> List[Structure]:
    """xTB-optimise the template, then sample it (``md``: Langevin MD every ``stride`` steps; ``stretch``: X–H bonds
    pulled evenly from 0.85x to ``t.stretch_to``x, :func:`stretched_geometry`); returns the conformers.

    With ``checkpoint`` (the template's store, :func:`part_store`), progress is saved to ``<name>.partial.json`` in
    it every ``checkpoint_every`` conformers and picked up from there when it exists.  ``stop_after`` (tests)
    returns early after that many new conformers.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from ase import Atoms, units as aunits
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.optimize import BFGS

    if t.sampling not in ("md", "stretch"):
        raise ValueError(f"template {t.name!r}: sampling must be 'md' or 'stretch', got {t.sampling!r}")
    rng = np.random.default_rng(seed)
    out: List[Structure] = []
    z, pos = build_template(t, seed)
    atoms = Atoms(numbers=z, positions=pos)
    atoms.calc = xtb_calculator(t)
    partial = f"{t.name}.partial.json"
    state = checkpoint.load_json(partial, SAMPLING_PROGRESS) if checkpoint is not None else None
    if state is not None:
        out = [structure_from_json(d) for d in state["conformers"]]
        atoms.positions = np.asarray(state["positions"], dtype=float)
        atoms.set_momenta(np.asarray(state["momenta"], dtype=float))
        rng.bit_generator.state = state["rng"]
        reference = np.asarray(state["reference"], dtype=float)
        for _ in out:
            if on_conformer is not None:
                on_conformer()
    else:
        if len(atoms) > 1:
            BFGS(atoms, logfile=None).run(fmax=0.1 if t.sampling == "md" else 0.02, steps=60 if t.sampling == "md" else 200)
        reference = atoms.positions.copy()
        MaxwellBoltzmannDistribution(atoms, temperature_K=t.temperature, rng=rng)
    dyn = Langevin(atoms, timestep_fs * aunits.fs, temperature_K=t.temperature, friction=0.02 / aunits.fs, rng=rng,
                   fixcm=False)
    if not out and len(atoms) > 1 and t.sampling == "md":
        dyn.run(equilibration)
    bonds = _xh_bonds(Atoms(numbers=z, positions=reference)) if t.sampling == "stretch" else []
    if t.sampling == "stretch" and not bonds:
        raise ValueError(f"template {t.name!r} has no X–H bond to stretch")
    new = 0
    while len(out) < n_conformers:
        if t.sampling == "md":
            if len(atoms) > 1:
                dyn.run(stride)
            out.append(_structure(atoms, t))
        else:
            out.append(_stretched_structure(atoms, t, reference, bonds, rng,
                                            0.85 + (t.stretch_to - 0.85) * (len(out) + 0.5) / n_conformers))
        new += 1
        if on_conformer is not None:
            on_conformer()
        if checkpoint is not None and (len(out) % checkpoint_every == 0 or (stop_after is not None and new >= stop_after)):
            checkpoint.save_json(partial, SAMPLING_PROGRESS, {
                "conformers": [structure_to_json(c) for c in out], "positions": atoms.positions.tolist(),
                "momenta": atoms.get_momenta().tolist(), "rng": rng.bit_generator.state, "reference": reference.tolist()})
        if stop_after is not None and new >= stop_after:
            return out
    return out


DONE_SUFFIX = ".done.json"
PART_RECORD = "openmlip-generated-part"


def part_store(parts: Path, name: str, conformers: int, seed: int, stride: int) -> RunStore:
    """The store of template ``name``'s shard in ``parts``: its settings are the template's definition and the
    sampling settings, so a shard or checkpoint made with others is refused, never mixed into the dataset."""
    return RunStore(parts, "data generate", {"template": asdict(TEMPLATES[name]), "conformers": conformers,
                                              "seed": seed, "stride": stride})


def _finished(store: RunStore, name: str) -> Optional[Dict[str, Any]]:
    """The record of a finished shard (after checking its settings), or None when the shard is not finished: a shard
    is written before its record, so a kill between the two leaves a shard that is computed again."""
    if not store.path(f"{name}.h5").exists():
        return None
    return store.load_json(f"{name}{DONE_SUFFIX}", PART_RECORD)


def _write_part(store: RunStore, name: str, structs: List[Structure], source: str) -> None:
    write_spice(store.path(f"{name}.h5"), structs, smiles={name: TEMPLATES[name].smiles}, **XTB_LABELS.kwargs())
    store.save_json(f"{name}{DONE_SUFFIX}", PART_RECORD, {"source": source})


def reuse_templates(dataset, names: Sequence[str], parts: Path, conformers: int, seed: int, stride: int) -> List[str]:
    """Write the shard of each of ``names`` whose conformers ``dataset`` (written by :func:`generate`) holds for the
    same template, number of conformers, seed and stride (its manifest beside it says so); returns the names taken."""
    dataset = Path(dataset)
    try:
        man = json.loads(dataset.with_suffix(".json").read_text())
    except (OSError, ValueError):
        raise DataFileError(f"--reuse {dataset}: no readable manifest {dataset.with_suffix('.json').name} beside it; "
                            "reuse only files written by `openmlip data generate`") from None
    if (man.get("sampling", {}).get("seed"), man.get("sampling", {}).get("stride_steps")) != (seed, stride):
        return []
    same = [n for n in names if n in man.get("templates", {}) and man["templates"][n].get("conformers") == conformers
            and asdict(TEMPLATES[n]) == {k: v for k, v in man["templates"][n].items() if k != "conformers"}]
    taken: Dict[str, List[Structure]] = {n: [] for n in same}
    for st in read_spice(dataset, **XTB_LABELS.kwargs()):
        if st.name in taken:
            taken[st.name].append(st)
    for name, structs in taken.items():
        _write_part(part_store(parts, name, conformers, seed, stride), name, structs, dataset.name)
    return same


def generate(output, templates: Optional[Sequence[str]] = None, conformers: int = 150, seed: int = 0, stride: int = 20,
             progress: bool = True, stop_after_templates: Optional[int] = None,
             stop_after_conformers: Optional[int] = None, checkpoint_every: int = 10,
             reuse: Sequence = ()) -> Dict[str, object]:
    """Generate (or finish generating) a dataset; returns a manifest (also written as ``<output>.json``).

    ``reuse``: datasets written by this function whose conformers of the same templates (same SMILES, charge, waters,
    temperature, sampling, seed and stride) are taken as they are instead of recomputed (:func:`reuse_templates`)."""
    from tqdm.auto import tqdm

    output = writable_file(output, "output file")
    names = list(templates) if templates else list(TEMPLATES)
    unknown = [n for n in names if n not in TEMPLATES]
    if unknown:
        raise ValueError(f"unknown template(s) {unknown}; available: {sorted(TEMPLATES)}")
    parts = output.parent / (output.name + ".parts")
    stores = {n: part_store(parts, n, conformers, seed, stride) for n in names}
    with stores[names[0]].lock("generate"):
        records = {n: _finished(stores[n], n) for n in names}  # a shard made with other settings: ResumeError here
        for path in reuse:
            todo = [n for n in names if records[n] is None and not stores[n].path(f"{n}.partial.json").exists()]
            reuse_templates(path, todo, parts, conformers, seed, stride)
        records = {n: _finished(stores[n], n) for n in names}
        computed = 0
        done = sum(r is not None for r in records.values())
        with tqdm(total=len(names) * conformers, initial=done * conformers, desc="xTB conformers", unit="conf",
                  disable=not progress) as bar:
            for k, name in enumerate(n for n in names if records[n] is None):
                if stop_after_templates is not None and k >= stop_after_templates:
                    return {"status": "interrupted", "computed": computed}
                state = stores[name].load_json(f"{name}.partial.json", SAMPLING_PROGRESS)
                had = len(state["conformers"]) if state is not None else 0
                structs = sample_template(TEMPLATES[name], conformers, seed=seed, stride=stride,
                                          on_conformer=lambda: bar.update(1), checkpoint=stores[name],
                                          checkpoint_every=checkpoint_every, stop_after=stop_after_conformers)
                computed += len(structs) - had
                if len(structs) < conformers:
                    return {"status": "interrupted", "computed": computed}
                _write_part(stores[name], name, structs, "computed")
                records[name] = _finished(stores[name], name)
                stores[name].path(f"{name}.partial.json").unlink(missing_ok=True)
        reused: Dict[str, List[str]] = {}
        for name in names:
            if records[name]["source"] != "computed":
                reused.setdefault(records[name]["source"], []).append(name)
        merged: List[Structure] = []
        smiles = {}
        for name in names:
            for st in read_spice(parts / f"{name}.h5", **XTB_LABELS.kwargs()):
                if st.formal_charges is None:  # a shard taken (--reuse) from a dataset that stored none: the template's
                    st.formal_charges = template_formal_charges(TEMPLATES[name], st.numbers)
                merged.append(st)
            smiles[name] = TEMPLATES[name].smiles
        counts = write_spice(output, merged, smiles=smiles, **XTB_LABELS.kwargs())
        manifest = {
            "status": "finished", "computed_this_run": computed, "conformers": sum(counts.values()),
            "method": "GFN2-xTB (tblite), total charge and multiplicity given explicitly; OMP_NUM_THREADS=1",
            "sampling": {"optimisation": "ASE BFGS on xTB, fmax 0.1 eV/Å, <= 60 steps (stretch templates: 0.02, <= 200)",
                         "md": "ASE Langevin, 0.5 fs, friction 0.02/fs",
                         "stretch": "one random X–H bond of the optimised structure set to 0.85–stretch_to× its length (evenly; "
                                    "stretch_to: 2.6 unless the template says otherwise), "
                                    "all atoms displaced by N(0, 0.04 Å)",
                         "equilibration_steps": 100, "stride_steps": stride, "seed": seed},
            "units_in_file": {"positions": "bohr", "energy": "hartree", "gradient": "hartree/bohr", "charges": "e"},
            "label_keys": vars(XTB_LABELS),
            **({"reused": reused} if reused else {}),
            "templates": {n: {**asdict(TEMPLATES[n]), "conformers": counts[n]} for n in names},
            "isolated_atom_energies_eV": isolated_atom_energies(sorted({_symbol(z) for s in merged for z in s.numbers})),
        }
        write_json(output.with_suffix(".json"), manifest)
        return manifest
