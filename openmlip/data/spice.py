"""SPICE HDF5 files (openmm/spice-dataset layout): a lazy reader with filters, and a writer.

Layout (``../shared/SPICE_FORMAT.md``): one group per molecule with ``atomic_numbers`` (N,),
``conformations`` (M,N,3) bohr, ``dft_total_energy`` (M,) hartree, ``dft_total_gradient`` (M,N,3)
hartree/bohr (a *gradient*: forces = −gradient), ``mbis_charges`` (M,N,1) e, ``smiles`` and ``subset``
(1,) strings.  The total charge is the sum of the SMILES formal charges (or of a per-atom
``formal_charges`` dataset when present).  Units are converted on read to Å, eV, eV/Å.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np

from .. import units
from .._io import atomic_path
from ..errors import SpiceFormatError  # noqa: F401 (re-exported)
from .structure import Structure

REQUIRED = ("atomic_numbers", "conformations")
_BRACKET = re.compile(r"\[([^\]]+)\]")


@dataclass(frozen=True)
class LabelKeys:
    """Names of the label datasets in an HDF5 file (one definition per kind of labels, below)."""

    energy: str = "dft_total_energy"
    gradient: str = "dft_total_gradient"
    charges: str = "mbis_charges"

    def kwargs(self) -> Dict[str, str]:
        """As keyword arguments of :func:`read_spice` / :func:`write_spice`."""
        return {"energy_key": self.energy, "gradient_key": self.gradient, "charges_key": self.charges}


SPICE_LABELS = LabelKeys()  # SPICE: ωB97M-D3BJ/def2-TZVPPD energies and gradients, MBIS charges
XTB_LABELS = LabelKeys("xtb_total_energy", "xtb_total_gradient", "xtb_charges")  # `openmlip data generate`
DFT_LABELS = LabelKeys("dft_total_energy", "dft_total_gradient", "dft_charges")  # `openmlip data relabel`


def smiles_formal_charge(smiles: str) -> int:
    """Total formal charge of a SMILES string (bracket atoms such as ``[NH4+]``, ``[O-:3]``, ``[Ca+2]``)."""
    total = 0
    for atom in _BRACKET.findall(smiles):
        atom = re.sub(r":\d+$", "", atom)  # atom-map number
        m = re.search(r"(\++|-+)(\d*)$", atom)
        if not m:
            continue
        sign = 1 if m.group(1)[0] == "+" else -1
        total += sign * (int(m.group(2)) if m.group(2) else len(m.group(1)))
    return total


def _string(value) -> str:
    v = value[0] if np.ndim(value) else value
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass
class ReadStats:
    """What a read skipped and why (filled when ``on_error='skip'``)."""

    groups_read: int = 0
    conformers_read: int = 0
    skipped: Dict[str, str] = field(default_factory=dict)


def read_spice(
    path: Union[str, Path],
    subsets: Optional[Sequence[str]] = None,
    elements: Optional[Sequence[int]] = None,
    total_charges: Optional[Sequence[int]] = None,
    max_atoms: Optional[int] = None,
    energy_key: str = "dft_total_energy",
    gradient_key: str = "dft_total_gradient",
    charges_key: str = "mbis_charges",
    on_error: str = "raise",
    stats: Optional[ReadStats] = None,
) -> Iterator[Structure]:
    """Yield conformers of a SPICE HDF5 file one at a time (the file is read lazily).

    Parameters
    ----------
    subsets, elements, total_charges, max_atoms
        Filters: keep groups whose subset is listed, whose atomic numbers are all in ``elements``,
        whose total charge is listed, with at most ``max_atoms`` atoms.
    energy_key, gradient_key, charges_key
        Label datasets (e.g. ``xtb_total_energy``/``xtb_total_gradient``); missing optional labels are
        left as None; a missing energy or gradient dataset is an error (or a skip).
    on_error
        ``"raise"``: a malformed group raises :class:`SpiceFormatError` naming it; ``"skip"``: it is
        skipped and recorded in ``stats.skipped``.
    """
    import h5py

    if on_error not in ("raise", "skip"):
        raise ValueError("on_error must be 'raise' or 'skip'")
    stats = stats if stats is not None else ReadStats()
    try:
        fh = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise SpiceFormatError(
            f"cannot read SPICE file {str(path)!r}: {str(exc).splitlines()[0]} (truncated or not HDF5?); "
            "re-download or regenerate it"
        ) from None
    allowed = None if elements is None else set(int(e) for e in elements)
    with fh:
        for name in fh:
            try:
                group = fh[name]
                head = group_header(group, name, path, energy_key, gradient_key)
                if subsets is not None and head.subset not in subsets:
                    continue
                if allowed is not None and not set(head.numbers.tolist()) <= allowed:
                    continue
                if max_atoms is not None and len(head.numbers) > max_atoms:
                    continue
                if total_charges is not None and int(head.total_charge) not in set(total_charges):
                    continue
                conf, energy, forces, charges = group_labels(group, head, path, energy_key, gradient_key, charges_key)
            except SpiceFormatError as exc:
                if on_error == "raise":
                    raise
                stats.skipped[name] = str(exc)
                continue
            except (OSError, KeyError) as exc:  # h5py read errors inside a damaged file
                msg = f"group {name!r} of {str(path)!r} is unreadable ({str(exc).splitlines()[0]})"
                if on_error == "raise":
                    raise SpiceFormatError(msg) from None
                stats.skipped[name] = msg
                continue
            stats.groups_read += 1
            for k in range(len(conf)):
                stats.conformers_read += 1
                yield head.structure(conf[k], float(energy[k]), forces[k], None if charges is None else charges[k])


@dataclass
class GroupHeader:
    """What a SPICE group says about its molecule (the same for all its conformers)."""

    name: str
    numbers: np.ndarray
    total_charge: float
    formal_charges: Optional[np.ndarray]
    subset: str

    def structure(self, positions, energy, forces, charges) -> Structure:
        return Structure(numbers=self.numbers, positions=positions, total_charge=self.total_charge, energy=energy,
                         forces=forces, charges=charges, formal_charges=self.formal_charges, name=self.name,
                         subset=self.subset)


def group_header(group, name: str, path, energy_key: str, gradient_key: str) -> GroupHeader:
    """The molecule of one SPICE group; :class:`SpiceFormatError` if a required dataset or the charge is missing."""
    import h5py

    if not isinstance(group, h5py.Group):
        kind = " (it looks like an mdtraj trajectory)" if name in ("coordinates", "topology", "time") else ""
        raise SpiceFormatError(f"{str(path)!r} is not in SPICE layout{kind}: its {name!r} is a dataset, not a molecule "
                               "group (one per molecule, with atomic_numbers, conformations and labels)")
    missing = [k for k in REQUIRED + (energy_key, gradient_key) if k not in group]
    if missing:
        raise SpiceFormatError(f"group {name!r} of {str(path)!r} lacks {missing}")
    z = np.asarray(group["atomic_numbers"][()], dtype=np.int64)
    subset = _string(group["subset"][()]) if "subset" in group else ""
    formal = None
    if "formal_charges" in group:
        formal = np.asarray(group["formal_charges"][()], dtype=np.float64).reshape(-1)
        q = float(round(formal.sum()))
    elif "total_charge" in group.attrs:  # written by openmlip for data without SMILES
        q = float(group.attrs["total_charge"])
    elif "smiles" in group:
        q = float(smiles_formal_charge(_string(group["smiles"][()])))
    else:
        raise SpiceFormatError(f"group {name!r} of {str(path)!r} has neither smiles nor formal_charges")
    return GroupHeader(name=name, numbers=z, total_charge=q, formal_charges=formal, subset=subset)


def group_labels(group, head: GroupHeader, path, energy_key: str, gradient_key: str, charges_key: str, k=slice(None)):
    """Positions (Å), energies (eV), forces (eV/Å) and charges (e, or None) of conformers ``k`` of a group
    (all by default; an integer reads one without the others), shapes checked when all are read."""
    conf = np.asarray(group["conformations"][k], dtype=np.float64) * units.BOHR_TO_ANGSTROM
    energy = np.asarray(group[energy_key][k], dtype=np.float64) * units.HARTREE_TO_EV
    forces = -np.asarray(group[gradient_key][k], dtype=np.float64) * units.HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM
    charges = None
    if charges_key in group:
        charges = np.asarray(group[charges_key][k], dtype=np.float64)
        charges = charges.reshape(-1) if isinstance(k, (int, np.integer)) else charges.reshape(len(conf), -1)
    if not isinstance(k, (int, np.integer)):
        n = len(head.numbers)
        if (conf.ndim != 3 or conf.shape[1:] != (n, 3) or forces.shape != conf.shape or energy.shape != (len(conf),)
                or (charges is not None and charges.shape != (len(conf), n))):
            raise SpiceFormatError(
                f"group {head.name!r} of {str(path)!r} has inconsistent shapes: atomic_numbers {head.numbers.shape}, "
                f"conformations {conf.shape}, {energy_key} {energy.shape}, {gradient_key} {forces.shape}"
                + ("" if charges is None else f", {charges_key} {charges.shape}"))
    return conf, energy, forces, charges


def write_spice(path: Union[str, Path], structures: Iterable[Structure], energy_key: str = "dft_total_energy",
                gradient_key: str = "dft_total_gradient", charges_key: str = "mbis_charges",
                smiles: Optional[Dict[str, str]] = None) -> Dict[str, int]:
    """Write structures in the SPICE layout (grouped by ``Structure.name``), atomically.

    Values are converted back to bohr/hartree; the total charge is stored as the group attribute
    ``total_charge`` (and per-atom ``formal_charges`` when known), so it survives without SMILES.
    Returns conformers written per group.
    """
    import h5py

    groups: Dict[str, List[Structure]] = {}
    for s in structures:
        if not s.name:
            raise ValueError("every structure needs a name (its SPICE group)")
        groups.setdefault(s.name, []).append(s)
    counts = {}
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as fh:
            for name, items in groups.items():
                z = items[0].numbers
                if any(not np.array_equal(s.numbers, z) for s in items):
                    raise ValueError(f"group {name!r}: conformers with different atoms")
                g = fh.create_group(name)
                g.create_dataset("atomic_numbers", data=np.asarray(z, dtype=np.int16))
                g.create_dataset("subset", data=np.array([items[0].subset], dtype=h5py.string_dtype()))
                if smiles and name in smiles:
                    g.create_dataset("smiles", data=np.array([smiles[name]], dtype=h5py.string_dtype()))
                g.attrs["total_charge"] = float(items[0].total_charge)
                if items[0].formal_charges is not None:
                    g.create_dataset("formal_charges", data=np.asarray(items[0].formal_charges, dtype=np.float64))
                d = g.create_dataset("conformations", data=np.stack([s.positions for s in items]) * units.ANGSTROM_TO_BOHR)
                d.attrs["units"] = "bohr"
                d = g.create_dataset(energy_key, data=np.array([s.energy for s in items], dtype=np.float64) * units.EV_TO_HARTREE)
                d.attrs["units"] = "hartree"
                d = g.create_dataset(gradient_key, data=-np.stack([s.forces for s in items]) / units.HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM)
                d.attrs["units"] = "hartree/bohr"
                if all(s.charges is not None for s in items):
                    d = g.create_dataset(charges_key, data=np.stack([s.charges for s in items])[..., None])
                    d.attrs["units"] = "elementary_charge"
                counts[name] = len(items)
    return counts
