"""Atomic file writes: write to a temporary file beside the target, then rename over it.

A crash leaves either the old file or the new one, never a half-written file.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Union

from .errors import OutputError


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
