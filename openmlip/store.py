"""The run store: one object owns a run folder — what is written there, how a rerun resumes, what it refuses.

Every command that writes results a rerun can continue (``md``, ``train``, ``fe``, ``data generate``,
``data harvest``, ``data relabel``) goes through a :class:`RunStore`; no other module writes resume logic.

* **Settings.**  A store is made with the settings that define its results (a JSON-able dict) and the names
  of those allowed to change between runs (``may_change``: how long to run, threads, device).  Every
  progress or unit file it writes records them in full, not as a hash, so that reading a file back with
  other settings raises one :class:`~openmlip.errors.ResumeError` naming each changed setting as
  ``name: old -> new``.  A file written without a settings record is not an openmlip run file
  (:class:`~openmlip.errors.DataFileError`).
* **Atomic writes.**  Every file is written to a temporary name beside it and renamed
  (:func:`openmlip._io.atomic_path`): a kill leaves the old file or the new one, never half of one.
* **No code runs on reading.**  Progress files are JSON and unit files ``.npz`` read with
  ``allow_pickle=False``; a file that is neither (a pickle, a damaged file) is a DataFileError naming it.
* **One writer.**  :meth:`RunStore.lock` holds an exclusive ``flock`` on ``.<name>.lock`` in the folder for as
  long as a run writes it; a second process on the same run gets :class:`~openmlip.errors.RunInUseError` at
  once instead of writing every step twice.  The kernel drops the lock when its process dies, SIGKILL included,
  so a killed run never leaves a stale lock behind.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Union

import numpy as np

from ._io import atomic_path, writable_dir
from .errors import DataFileError, ResumeError, RunInUseError

_ABSENT = "absent"
_SHOWN = 80  # characters of a setting's value shown in an error


def canonical(settings: Mapping[str, Any]) -> Dict[str, Any]:
    """``settings`` as JSON gives them back (tuples become lists, paths and other objects their ``str``), so that a
    value compares equal to itself after a round trip through a file."""
    return json.loads(json.dumps(dict(settings), default=str))


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    half = (_SHOWN - 3) // 2  # a long value's both ends: a path's differs at its end, a list's anywhere
    return text if len(text) <= _SHOWN else text[:half] + "..." + text[-(_SHOWN - 3 - half):]


def changed_settings(old: Mapping[str, Any], new: Mapping[str, Any], may_change: Iterable[str] = (),
                     hints: Optional[Mapping[str, str]] = None) -> List[str]:
    """``name: old -> new`` for each setting that differs between ``old`` and ``new`` (in their order), skipping
    ``may_change``; a setting only one of them has shows as ``absent`` on the other side.  ``hints``: text added in
    brackets after a setting's change, formatted with ``{old}`` and ``{new}``."""
    skip, hints = set(may_change), hints or {}
    out = []
    for k in dict.fromkeys([*old, *new]):
        a, b = old.get(k, _ABSENT), new.get(k, _ABSENT)
        if k in skip or a == b:
            continue
        hint = f" ({hints[k].format(old=a, new=b)})" if k in hints else ""
        out.append(f"{k}: {_show(a)} -> {_show(b)}{hint}")
    return out


class RunStore:
    """A run folder (see the module docstring).

    Parameters
    ----------
    root : path
        The folder; created when missing.
    what : str
        What runs here, for messages ("MD", "training", "free-energy window", ...).
    settings : mapping
        What defines the results; recorded in every file the store writes and compared on every read.
    may_change : names in ``settings`` a rerun may change (they are recorded, not compared).
    flag : the option that chooses the folder, for messages ("--out").
    hints : what a change of a setting means or how to resume anyway (see :func:`changed_settings`).
    """

    def __init__(self, root: Union[str, Path], what: str, settings: Mapping[str, Any], may_change: Iterable[str] = (),
                 flag: str = "--out", hints: Optional[Mapping[str, str]] = None):
        self.root = Path(root)
        self.what = what
        self.settings = canonical(settings)
        self.may_change = tuple(may_change)
        self.flag = flag
        self.hints = dict(hints or {})

    def path(self, name: str) -> Path:
        return self.root / name

    # ----------------------------------------------------------------------------------- settings
    def check(self, recorded: Optional[Mapping[str, Any]], source: Union[str, Path]) -> None:
        """Raise :class:`ResumeError` naming each setting in which ``recorded`` (read from ``source``) differs from
        this store's; :class:`DataFileError` when ``source`` recorded none."""
        if not isinstance(recorded, Mapping):
            raise DataFileError(f"{source} records no settings, so it was not written by this openmlip's {self.what} "
                                f"run and cannot be continued: delete it to recompute what it held, or use another "
                                f"{self.flag}")
        changed = changed_settings(recorded, self.settings, self.may_change, self.hints)
        if changed:
            raise ResumeError(f"{source} was written by a {self.what} run with other settings, and continuing it would "
                              f"mix two runs: {'; '.join(changed)}. Use a new output folder ({self.flag}), or rerun "
                              "with the settings it was made with")

    # ----------------------------------------------------------------------------------- one writer
    @contextlib.contextmanager
    def lock(self, name: str = "run") -> Iterator[None]:
        """Hold the run's exclusive lock (``.<name>.lock`` in the folder) while the block runs; a folder that cannot
        be written is an :class:`~openmlip.errors.OutputError` here, before any compute."""
        writable_dir(self.root, f"{self.what} output")
        path = self.root / f".{name}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                raise RunInUseError(f"{self.root} is being written by another process ({holder}): two {self.what} runs "
                                    f"in one folder would write the same steps twice; wait for it to end, or use "
                                    f"another {self.flag}") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
            yield
        finally:
            os.close(fd)  # closing the last descriptor releases the lock

    # ----------------------------------------------------------------------------------- JSON files
    def save_json(self, name: str, kind: str, payload: Mapping[str, Any]) -> Path:
        """Write ``payload`` with this store's settings as ``name`` (atomically); ``kind`` is checked on reading."""
        path = self.path(name)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps({"format": kind, "settings": self.settings, **payload}))
        return path

    def load_json(self, name: str, kind: str, fix: str = "delete it and rerun (only the work it recorded is recomputed)"
                  ) -> Optional[Dict[str, Any]]:
        """The file :meth:`save_json` wrote, after checking its kind and settings; None when there is none.  ``fix``:
        what the error for a damaged file tells the user to do."""
        path = self.path(name)
        if not path.exists():
            return None
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            state = None
        if not isinstance(state, dict) or state.get("format") != kind:
            raise DataFileError(f"{path} is not an openmlip {kind} file (damaged, or an unsafe format such as a pickle) "
                                f"and is not read: {fix}")
        self.check(state.get("settings"), path)
        return state

    # ----------------------------------------------------------------------------------- array files
    def save_npz(self, name: str, meta: Mapping[str, Any], **arrays: np.ndarray) -> Path:
        """Write ``arrays`` and ``meta`` (with this store's settings) as ``name``, an ``.npz`` (atomically)."""
        path = self.path(name)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, meta=json.dumps({**meta, "settings": self.settings}, default=float), **arrays)
        return path

    def load_npz(self, name: str) -> Optional[Dict[str, Any]]:
        """The arrays of a file :meth:`save_npz` wrote (``meta`` decoded), after checking its settings; None when
        there is none."""
        path = self.path(name)
        if not path.exists():
            return None
        d = read_npz(path)
        self.check(d["meta"].get("settings"), path)
        return d

    # ----------------------------------------------------------------------------------- other files
    def save_bytes(self, name: str, data: bytes) -> Path:
        path = self.path(name)
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(data)
        return path

    def write_manifest(self, name: str, manifest: Mapping[str, Any]) -> Path:
        """The human-readable record of a finished run, ``name`` in the folder (:func:`write_json`)."""
        return write_json(self.path(name), manifest)


def write_json(path: Union[str, Path], obj: Any) -> Path:
    """``obj`` as indented JSON (numpy floats as floats), written atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=1, default=float))
    return Path(path)


def read_npz(path: Union[str, Path]) -> Dict[str, Any]:
    """A unit file written by :meth:`RunStore.save_npz`, as a dict with ``meta`` decoded; never unpickles."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
        d["meta"] = json.loads(str(d["meta"]))
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise DataFileError(f"{path}: not a readable openmlip unit file ({exc}); delete it to recompute") from None
    return d


__all__ = ["RunStore", "changed_settings", "canonical", "read_npz", "write_json"]
