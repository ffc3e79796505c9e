"""The train/validation/test split: by molecule, so that no conformer of a held-out molecule is trained on.

One rule for every part of openmlip that splits data (training, its reports, the benchmarks): the same items, seed
and settings give the same split, so a resumed run and an evaluation of its held-out molecules see the split of the
run that made them.
"""
from __future__ import annotations

from operator import attrgetter
from typing import Callable, List, Optional, Sequence, Set, Tuple, TypeVar

import numpy as np

from ..errors import ConfigError

T = TypeVar("T")


def _held_out(names: Sequence[str], valid_fraction: float, test_fraction: float, seed: int,
              valid_molecules: Optional[Sequence[str]] = None,
              test_molecules: Optional[Sequence[str]] = None) -> Tuple[Set[str], Set[str]]:
    """The (validation, test) molecule names: drawn at random (``seed``, fractions of the molecules) or
    named explicitly with ``valid_molecules`` / ``test_molecules`` (then the fractions are ignored)."""
    names = sorted(set(names))
    if valid_molecules is not None or test_molecules is not None:
        test_names, val_names = set(test_molecules or ()), set(valid_molecules or ())
        unknown = sorted((test_names | val_names) - set(names))
        if unknown:
            raise ConfigError(f"held-out molecule(s) {unknown} not in the data; molecules: {names}")
        if test_names & val_names:
            raise ConfigError(f"molecule(s) {sorted(test_names & val_names)} are both validation and test")
        if not set(names) - test_names - val_names:
            raise ConfigError("no molecule left for training")
        return val_names, test_names
    order = np.random.default_rng(seed).permutation(len(names))
    n = len(names)
    n_test = int(round(test_fraction * n)) if test_fraction > 0 else 0
    n_val = int(round(valid_fraction * n)) if valid_fraction > 0 else 0
    if test_fraction > 0 and n >= 3:
        n_test = max(n_test, 1)
    if valid_fraction > 0 and n >= 3:
        n_val = max(n_val, 1)
    if n - n_test - n_val < 1:
        raise ConfigError(f"only {n} molecules: too few to split into train/valid/test; add data or lower the fractions")
    return {names[i] for i in order[n_test:n_test + n_val]}, {names[i] for i in order[:n_test]}


def split_by_molecule(items: Sequence[T], valid_fraction: float, test_fraction: float, seed: int,
                      valid_molecules: Optional[Sequence[str]] = None, test_molecules: Optional[Sequence[str]] = None,
                      key: Callable[[T], str] = attrgetter("name")) -> Tuple[List[T], List[T], List[T]]:
    """The (train, validation, test) parts of ``items`` (structures, or anything whose molecule name ``key``
    gives; default its ``name``), each in the order of ``items``; all items of one molecule land in the same part.

    The held-out molecules are drawn at random (``seed``; ``valid_fraction`` and ``test_fraction`` of the distinct
    names, at least one each of three or more molecules when the fraction is not 0) or named with
    ``valid_molecules`` / ``test_molecules`` (then the fractions are ignored).  Raises
    :class:`~openmlip.errors.ConfigError` for named molecules that are not in the data or in both parts, and when
    no molecule is left for training.
    """
    val_names, test_names = _held_out([key(x) for x in items], valid_fraction, test_fraction, seed,
                                      valid_molecules, test_molecules)
    parts: Tuple[List[T], List[T], List[T]] = ([], [], [])
    for x in items:
        name = key(x)
        parts[2 if name in test_names else 1 if name in val_names else 0].append(x)
    return parts
