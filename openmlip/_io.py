"""Atomic file writes: write to a temporary file beside the target, then rename over it.

A crash leaves either the old file or the new one, never a half-written file.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Union

from .errors import Interrupted, OutputError


@contextlib.contextmanager
def atomic_path(path: Union[str, Path]) -> Iterator[str]:
    """Yield a temporary path; on success it replaces ``path`` with normal (umask) permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_replaceable(path: Union[str, Path], what: str, marker: str) -> Path:
    """:class:`OutputError` unless :func:`replaced_dir` may replace the folder ``path`` (before any compute)."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"the {what} folder {path} is a file: choose a folder (--out)")
        entries = sorted(p.name for p in path.iterdir())
        if entries and marker not in entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise OutputError(f"the {what} folder {path} holds other files ({shown}) and is replaced as a whole "
                              f"when the result is complete: choose a new or empty folder (--out)")
    writable_dir(path.parent, what)
    return path


@contextlib.contextmanager
def replaced_dir(path: Union[str, Path], what: str, marker: str) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path`` as a whole.

    So the folder holds one complete result or the one before it, never a mix: an exception or Ctrl-C in the
    body leaves ``path`` as it was (Ctrl-C as :class:`~openmlip.errors.Interrupted` saying so).  ``path`` must
    be absent, empty, or an earlier result (it holds ``marker``): a folder of other files is an
    :class:`OutputError`, since replacing it would delete them.  Between the two renames of the swap (old out,
    new in) a crash leaves ``path`` absent, the new result complete in ``.<name>.new-*`` beside it.
    """
    path = check_replaceable(path, what, marker)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.new-"))
    try:
        try:
            yield tmp
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted; the {what} folder {path} is as it was: rerun the same command") from None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp creates 0700
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.replace(path, old)  # onto the empty folder just made
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def writable_dir(path: Union[str, Path], what: str = "output") -> Path:
    """Create the folder ``path`` (with parents) and prove it writable by creating a file in it.

    Raises :class:`OutputError` naming the folder, so that a run fails before any compute rather
    than after it.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write the {what} folder {path} ({exc.strerror or exc}): choose another folder "
                          "(--out) or make it writable") from None
    return path


def writable_file(path: Union[str, Path], what: str = "output") -> Path:
    """:class:`OutputError` unless the file ``path`` can be written: it is not a folder and its folder is writable
    (created if missing).  Called before any compute."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"the {what} {path} is a folder: give a file path (e.g. {path / 'model.pt'})")
    writable_dir(path.parent, f"{what}'s")
    return path


def check_not_input(out: Union[str, Path], inputs: Iterable[Union[str, Path]], flag: str = "--out",
                    manifests: bool = False) -> None:
    """:class:`OutputError` when writing ``out`` would destroy an input: ``out`` is one of ``inputs``, or lies inside
    an input folder (a training or MD run).  ``manifests``: ``out`` and each input also own a ``.json`` manifest
    beside them, which must not collide either."""
    target = Path(out).resolve()
    targets = [target] + ([target.with_suffix(".json")] if manifests else [])
    for given in inputs:
        source = Path(given).resolve()
        sources = [source] + ([source.with_suffix(".json")] if manifests and source.is_file() else [])
        if any(t == s for t in targets for s in sources):
            raise OutputError(f"{flag} {out} would overwrite the input {given} (or its manifest): choose another {flag}")
        if source.is_dir() and source in target.parents:
            raise OutputError(f"{flag} {out} lies inside the input folder {given}, whose files it could overwrite: "
                              f"choose a {flag} outside it")


def file_sha256(path: Union[str, Path]) -> str:
    """The sha256 of a file's bytes (hex), read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
