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

Starting structures come from :mod:`openmlip.data.geometry`, the xTB calculator from :mod:`openmlip.data.xtb`; tblite
runs with ``OMP_NUM_THREADS=1`` (2 threads stall under load).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .._io import writable_file
from ..errors import DataFileError
from ..store import RunStore, write_json
from .geometry import build_template, stretched_geometry, xh_bonds
from .spice import XTB_LABELS, read_spice, write_spice
from .structure import Structure, structure_from_json, structure_to_json
from .templates import TEMPLATES, Template, template_formal_charges, template_structure
from .xtb import isolated_atom_energies, xtb_calculator


def _symbol(z) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[int(z)]


SAMPLING_PROGRESS = "openmlip-sampling-progress"
STRETCH_DRAWS = 10


def _stretched_structure(atoms, t: Template, reference, bonds, rng, factor: float) -> Structure:
    """A labelled stretch conformer at ``factor``: far out (3x and more) xTB's SCF on the half-broken bond now and
    then does not converge; that draw has no label and is drawn again (another bond, other noise), up to
    ``STRETCH_DRAWS`` times."""
    from ase.calculators.calculator import CalculationFailed

    for _ in range(STRETCH_DRAWS):
        atoms.positions = stretched_geometry(reference, bonds, rng, factor)
        try:
            return template_structure(atoms, t)
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
    bonds = xh_bonds(Atoms(numbers=z, positions=reference)) if t.sampling == "stretch" else []
    if t.sampling == "stretch" and not bonds:
        raise ValueError(f"template {t.name!r} has no X–H bond to stretch")
    new = 0
    while len(out) < n_conformers:
        if t.sampling == "md":
            if len(atoms) > 1:
                dyn.run(stride)
            out.append(template_structure(atoms, t))
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
