"""extxyz through ase.io, following ASE's key conventions.

Per structure: energy (``atoms.get_potential_energy()`` or ``info['energy']``, eV), forces
(calculator results or ``arrays['forces']``, eV/Å), partial charges (``arrays['charges']`` or
calculator ``charges``), total charge ``info['charge']`` (default 0), spin multiplicity
``info['spin']`` (default 1), cell and pbc.  Units are ASE's (Å, eV) — openmlip's own.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Union

import numpy as np

from ..errors import DataFileError
from .structure import Structure


def _result(atoms, key):
    calc = atoms.calc
    if calc is not None and key in getattr(calc, "results", {}):
        return calc.results[key]
    if key in atoms.arrays:
        return atoms.arrays[key]
    return atoms.info.get(key)


def read_extxyz(path: Union[str, Path], index: str = ":") -> Iterator[Structure]:
    from ase.io import read

    try:
        frames = read(str(path), index=index, format="extxyz")
    except Exception as exc:  # noqa: BLE001  -- ASE's extxyz reader raises many types for a foreign file
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise DataFileError(f"{str(path)!r} is not an extxyz file ({type(exc).__name__}: "
                            f"{lines[-1][:120] if lines else 'no detail'}); data files are SPICE-layout HDF5 (.h5) "
                            "or extxyz (.xyz/.extxyz)") from None
    for k, atoms in enumerate(frames):
        energy = _result(atoms, "energy")
        forces = _result(atoms, "forces")
        charges = _result(atoms, "charges")
        periodic = bool(np.any(atoms.pbc))
        yield Structure(
            numbers=atoms.numbers.astype(np.int64), positions=atoms.positions.astype(np.float64),
            total_charge=float(atoms.info.get("charge", 0.0)), spin_multiplicity=float(atoms.info.get("spin", 1.0)),
            energy=None if energy is None else float(energy),
            forces=None if forces is None else np.asarray(forces, dtype=np.float64),
            charges=None if charges is None else np.asarray(charges, dtype=np.float64).reshape(-1),
            cell=np.asarray(atoms.cell[:], dtype=np.float64) if periodic else None,
            pbc=np.asarray(atoms.pbc) if periodic else None,
            name=str(atoms.info.get("name", f"{Path(path).stem}-{k}")), subset=str(atoms.info.get("subset", "")),
        )


def write_extxyz(path: Union[str, Path], structures) -> int:
    """Write structures as extxyz (energy/forces/charges as calculator results, charge/spin in info)."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frames = []
    for s in structures:
        atoms = Atoms(numbers=s.numbers, positions=s.positions, cell=s.cell if s.cell is not None else None,
                      pbc=s.pbc if s.pbc is not None else False)
        atoms.info.update({"charge": s.total_charge, "spin": s.spin_multiplicity, "name": s.name, "subset": s.subset})
        results = {}
        if s.energy is not None:
            results["energy"] = s.energy
        if s.forces is not None:
            results["forces"] = s.forces
        if s.charges is not None:
            results["charges"] = s.charges
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    write(str(path), frames, format="extxyz")
    return len(frames)
