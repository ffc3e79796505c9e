"""Training data as one random-access set of conformers, with memory that does not grow with the file.

An HDF5 file (SPICE layout or openmlip's own) is read once, group by group, into a small index: per group
(molecule) its atoms, charge state, number of conformers and the label sums that training needs before its
first step (mean energy, sum of squared forces).  The index is cached beside the file as
``<file>.openmlip-index.json`` and keyed by the file's SHA-256 and the label keys, so a changed file or
other labels rebuild it; a conformer's coordinates and labels are read from the file only when a batch
needs them.  Memory is then O(molecules), not O(conformers).  extxyz files are held in memory (ASE reads
them whole); both kinds look the same to the trainer.

The one pass also checks what a bad file would otherwise turn into NaN weights hours later: every
coordinate and label finite, energy and forces present, shapes consistent.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .._io import atomic_path
from .extxyz import read_extxyz
from ..errors import DataFileError, SpiceFormatError
from .spice import GroupHeader, LabelKeys, group_header, group_labels
from .structure import Structure

INDEX_FORMAT = "openmlip-data-index"
INDEX_VERSION = 1
INDEX_SUFFIX = ".openmlip-index.json"
HDF5_SUFFIXES = (".h5", ".hdf5")
# HDF5 keeps ~16 kB per group ever opened until the file is closed (measured with h5py 3.16: +66 MB after 4,000
# groups, beyond its 32 MB metadata-cache limit), so a file is reopened after this many groups or conformers read
REOPEN_EVERY = 512


@dataclass
class Group:
    """One molecule of one file: ``count`` conformers with the same atoms and charge state."""

    file: int
    key: Union[str, int]  # HDF5 group name, or position in an in-memory file
    header: GroupHeader
    count: int
    energy_mean: float  # eV
    force_sq_sum: float  # sum over conformers, atoms and components of F^2, (eV/Å)^2
    has_charges: bool

    def to_json(self) -> Dict[str, object]:
        h = self.header
        return {"key": self.key, "name": h.name, "numbers": h.numbers.tolist(), "total_charge": h.total_charge,
                "formal_charges": None if h.formal_charges is None else h.formal_charges.tolist(), "subset": h.subset,
                "count": self.count, "energy_mean": self.energy_mean, "force_sq_sum": self.force_sq_sum,
                "charges": self.has_charges}

    @classmethod
    def from_json(cls, file: int, d: Dict[str, object]) -> "Group":
        formal = d["formal_charges"]
        header = GroupHeader(name=str(d["name"]), numbers=np.asarray(d["numbers"], dtype=np.int64),
                             total_charge=float(d["total_charge"]), subset=str(d["subset"]),
                             formal_charges=None if formal is None else np.asarray(formal, dtype=np.float64))
        return cls(file=file, key=d["key"], header=header, count=int(d["count"]), energy_mean=float(d["energy_mean"]),
                   force_sq_sum=float(d["force_sq_sum"]), has_charges=bool(d["charges"]))


def _check_finite(path: Path, first: int, name: str, arrays: Dict[str, Optional[np.ndarray]]) -> None:
    """DataFileError naming the first conformer (its index in the file) with a non-finite value."""
    for what, value in arrays.items():
        if value is None:
            continue
        bad = ~np.isfinite(np.asarray(value, dtype=float).reshape(len(value), -1)).all(axis=1)
        if bad.any():
            k = first + int(np.argmax(bad))
            raise DataFileError(f"training data {str(path)!r}: structure {k} ({name!r}) has a non-finite {what}; remove "
                                "or relabel that structure (a NaN label would train NaN weights)")


def _group_stats(energy: np.ndarray, forces: np.ndarray) -> Tuple[float, float]:
    return float(np.mean(energy)), float(np.sum(np.square(forces)))


def _scan_hdf5(path: Path, keys: LabelKeys, progress: bool) -> List[Dict[str, object]]:
    """The index entries of every group of an HDF5 file, reading one group at a time."""
    import h5py
    from tqdm.auto import tqdm

    try:
        fh = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise DataFileError(f"cannot read training data {str(path)!r}: {str(exc).splitlines()[0]} (truncated or not "
                            "HDF5?); regenerate or re-download it") from None
    entries: List[Dict[str, object]] = []
    first = 0
    names = list(fh)
    try:
        for k, name in enumerate(tqdm(names, desc=f"index {path.name}", unit="molecule", disable=not progress, leave=False)):
            if k and k % REOPEN_EVERY == 0:  # bounded memory (see REOPEN_EVERY)
                fh.close()
                fh = h5py.File(path, "r")
            try:
                group = fh[name]
                head = group_header(group, name, path, keys.energy, keys.gradient)
                conf, energy, forces, charges = group_labels(group, head, path, keys.energy, keys.gradient, keys.charges)
            except SpiceFormatError as exc:
                raise DataFileError(f"data: {exc}; give a SPICE-layout file, or fix energy_key/gradient_key") from None
            except (OSError, KeyError) as exc:  # h5py read errors inside a damaged file
                raise DataFileError(f"training data: group {name!r} of {str(path)!r} is unreadable "
                                    f"({str(exc).splitlines()[0]}); regenerate or re-download it") from None
            if len(conf) == 0:
                continue
            _check_finite(path, first, name, {"positions": conf, "total charge": np.full(len(conf), head.total_charge),
                                              "energy label": energy, "forces label": forces, "charges label": charges})
            mean, sq = _group_stats(energy, forces)
            entries.append(Group(file=0, key=name, header=head, count=len(conf), energy_mean=mean, force_sq_sum=sq,
                                 has_charges=charges is not None).to_json())
            first += len(conf)
    finally:
        fh.close()
    return entries


def user_cache_dir() -> Path:
    """Where indexes of data in read-only or installed folders go: ``$XDG_CACHE_HOME/openmlip`` (default
    ``~/.cache/openmlip``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "openmlip"


def _installed(folder: Path) -> bool:
    """Whether ``folder`` lies in an installed package (openmlip's own shipped data, site-packages): read its
    index files, never write them there."""
    import openmlip

    where = Path(folder).resolve()
    package = Path(openmlip.__file__).resolve().parent
    return package in where.parents or where == package or "site-packages" in where.parts


def _cached_index(path: Path, sha256: str, keys: LabelKeys, cache_dirs: Sequence[Path], progress: bool):
    """The groups of an HDF5 file from its cached index (if it matches the file and the keys), else one pass
    over the file, written to the first cache folder that takes it and is not inside an installed package
    (the data's own folder first, then a training run's, then :func:`user_cache_dir`)."""
    wanted = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "sha256": sha256, "label_keys": vars(keys)}
    for folder in cache_dirs:
        cached = folder / (path.name + INDEX_SUFFIX)
        try:
            index = json.loads(cached.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(index, dict) and all(index.get(k) == v for k, v in wanted.items()):
            return index["groups"], cached
    groups = _scan_hdf5(path, keys, progress)
    for folder in [d for d in cache_dirs if not _installed(d)]:
        target = folder / (path.name + INDEX_SUFFIX)
        try:
            with atomic_path(target) as tmp:
                Path(tmp).write_text(json.dumps({**wanted, "file": path.name, "groups": groups}))
            return groups, target
        except OSError:  # a read-only data folder: try the next place
            continue
    return groups, None


class _Row:
    """One dataset of an HDF5 file read one row at a time through h5py's low-level API (no high-level objects
    per read: 4-5x less overhead than ``group[name][k]``), converted to float64 by HDF5."""

    def __init__(self, fid, path: bytes):
        self.fid, self.path = fid, path

    def __getitem__(self, k: int) -> np.ndarray:
        import h5py

        dset = h5py.h5d.open(self.fid, self.path)
        space = dset.get_space()
        dims = space.shape
        count = (1,) + tuple(dims[1:])
        space.select_hyperslab((int(k),) + (0,) * (len(dims) - 1), count)
        out = np.empty(count, dtype=np.float64)
        dset.read(h5py.h5s.create_simple(count), space, out)
        return out[0]


class _Rows:
    """The label datasets of one group, as :func:`~openmlip.data.spice.group_labels` reads them (``name in rows``,
    ``rows[name][k]``), so that the conversion to Å/eV stays in one place."""

    def __init__(self, fid, key: str, names):
        self.fid, self.key, self.names = fid, key, set(names)

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def __getitem__(self, name: str) -> _Row:
        return _Row(self.fid, f"{self.key}/{name}".encode())


class ConformerSet:
    """All conformers of some training data files, addressed ``0 .. len-1`` in file order.

    ``data[i]`` reads conformer ``i`` (a :class:`Structure` in Å, eV, e with ``info["source"]`` =
    ``"file[k]"``, its place in its file).  Per-group arrays (``groups``, ``group_of``) give what the
    trainer needs before reading anything: molecule names for the split, compositions and energy means for
    the reference energies, force sums for the force scale, atom counts for loss normalisation.
    Safe to use from forked data-loader workers (each process opens its own file handles).  ``sha256``:
    the files' hashes when already known (another process of the same run computed them).
    """

    def __init__(self, paths: Sequence[Union[str, Path]], keys: LabelKeys = LabelKeys(),
                 cache_dirs: Sequence[Union[str, Path]] = (), progress: bool = False,
                 sha256: Optional[Sequence[str]] = None):
        from .._io import file_sha256

        self.paths = [Path(p) for p in paths]
        self.keys = keys
        self.groups: List[Group] = []
        self.sha256: List[str] = []
        self.index_files: List[Optional[Path]] = []
        self._memory: Dict[int, List[Structure]] = {}
        self._handles: Dict[int, object] = {}
        self._reads: Dict[int, int] = {}  # conformers read per file since it was opened
        self._pid = os.getpid()
        for f, path in enumerate(self.paths):
            if not path.is_file():
                raise DataFileError(f"data file {str(path)!r} not found; check the path (for train: the data: entry of "
                                    "its config)")
            self.sha256.append(file_sha256(path) if sha256 is None else sha256[f])
            if path.suffix.lower() in HDF5_SUFFIXES:
                dirs = [path.parent] + [Path(d) for d in cache_dirs] + [user_cache_dir()]
                entries, where = _cached_index(path, self.sha256[-1], keys, dirs, progress)
                self.index_files.append(where)
                self.groups += [Group.from_json(f, e) for e in entries]
            else:
                self.index_files.append(None)
                self.groups += self._load_memory(f, path)
        if not self.groups:
            raise DataFileError(f"no structures read from {[str(p) for p in self.paths]}; check the files and "
                                "energy_key/gradient_key")
        counts = np.array([g.count for g in self.groups], dtype=np.int64)
        self.start = np.concatenate([[0], np.cumsum(counts)])  # conformers of group g: start[g] .. start[g+1]-1
        self.group_atoms = np.array([len(g.header.numbers) for g in self.groups], dtype=np.int64)
        self.group_charges = np.array([g.has_charges for g in self.groups], dtype=bool)
        first_of_file = {}
        for g, grp in enumerate(self.groups):
            first_of_file.setdefault(grp.file, self.start[g])
        self._file_start = np.array([first_of_file[g.file] for g in self.groups], dtype=np.int64)

    def _load_memory(self, f: int, path: Path) -> List[Group]:
        structs = list(read_extxyz(path))
        missing = [k for k, s in enumerate(structs) if s.energy is None or s.forces is None]
        if missing:
            raise DataFileError(f"{len(missing)} structures of {str(path)!r} lack energy or forces labels (e.g. "
                                f"{path.name}[{missing[0]}]); label them or remove them")
        out = []
        for k, s in enumerate(structs):
            _check_finite(path, k, s.name, {"positions": s.positions[None], "total charge": np.array([s.total_charge]),
                                            "energy label": np.array([s.energy]), "forces label": s.forces[None],
                                            "charges label": None if s.charges is None else s.charges[None]})
            head = GroupHeader(name=s.name, numbers=np.asarray(s.numbers, dtype=np.int64), total_charge=float(s.total_charge),
                               formal_charges=s.formal_charges, subset=s.subset)
            mean, sq = _group_stats(np.array([s.energy]), s.forces)
            out.append(Group(file=f, key=k, header=head, count=1, energy_mean=mean, force_sq_sum=sq,
                             has_charges=s.charges is not None))
        self._memory[f] = structs
        return out

    # ------------------------------------------------------------------------------------ addressing
    def __len__(self) -> int:
        return int(self.start[-1])

    def group_of(self, indices) -> np.ndarray:
        """Group number of each conformer index."""
        return np.searchsorted(self.start, np.asarray(indices), side="right") - 1

    def num_atoms(self, indices) -> np.ndarray:
        return self.group_atoms[self.group_of(indices)]

    def has_charges(self, indices) -> np.ndarray:
        return self.group_charges[self.group_of(indices)]

    def conformers_of(self, groups: Iterable[int]) -> np.ndarray:
        """Conformer indices of the given groups, in file order."""
        groups = sorted(groups)
        if not groups:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(self.start[g], self.start[g + 1]) for g in groups])

    # --------------------------------------------------------------------------------------- reading
    def _file(self, f: int):
        import h5py

        if self._pid != os.getpid():  # a forked worker must not share the parent's HDF5 handles
            self._handles, self._reads, self._pid = {}, {}, os.getpid()
        if f not in self._handles:
            self._handles[f] = h5py.File(self.paths[f], "r")
        return self._handles[f]

    def __getitem__(self, i: int) -> Structure:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"conformer {i} out of range 0..{len(self) - 1}")
        g = int(self.group_of(i))
        grp = self.groups[g]
        k = i - int(self.start[g])
        if grp.file in self._memory:
            s = self._memory[grp.file][int(grp.key)]
        else:
            self._reads[grp.file] = self._reads.get(grp.file, 0) + 1
            if self._reads[grp.file] % REOPEN_EVERY == 0:  # bounded memory (see REOPEN_EVERY)
                self._close_file(grp.file)
            names = {"conformations", self.keys.energy, self.keys.gradient} | ({self.keys.charges} if grp.has_charges else set())
            rows = _Rows(self._file(grp.file).id, str(grp.key), names)
            conf, energy, forces, charges = group_labels(rows, grp.header, self.paths[grp.file], self.keys.energy,
                                                         self.keys.gradient, self.keys.charges, k=k)
            s = grp.header.structure(conf, float(energy), forces, charges)
        s.info["source"] = f"{self.paths[grp.file].name}[{i - int(self._file_start[g])}]"
        return s

    def _close_file(self, f: int) -> None:
        fh = self._handles.pop(f, None)
        if fh is not None:
            fh.close()

    def close(self) -> None:
        for fh in self._handles.values():
            fh.close()
        self._handles = {}

    def __getstate__(self):  # for spawned workers: no open handles travel
        state = dict(self.__dict__)
        state["_handles"], state["_reads"] = {}, {}
        return state
