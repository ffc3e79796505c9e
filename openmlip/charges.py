"""The one resolver of a structure's charge state: total charge, per-atom formal charges, spin multiplicity.

Every entry point calls it: the openmm-ml plugin (:mod:`openmlip.openmm.mlpotential`, which turns a
Topology into element + bond lists and the MM charges into a reference total), the ASE calculator
(:mod:`openmlip.ase`, bonds from positions), MD specs and data generation.  Hence one rule and one
message everywhere:

* a total charge is an integer (e); ``1``, ``1.0``, ``"+1"`` are accepted, ``0.5``, ``NaN``, ``"one"``
  are a :class:`ChargeError`;
* per-atom formal charges (e), when given, are one finite number per atom and sum to the total charge,
  else a :class:`ChargeError` with both numbers;
* when they are not given they come from the bond rules of :func:`formal_charges_from_bonds` (as the
  training data put them: +1 on the N of NH4+, -1 on a carboxylate O, ...);
* without an explicit total, the total is what those per-atom charges add up to (the given ones, else the
  rules'), so the OpenMM route (bonds of the Topology) and the ASE route (bonds from positions) agree without
  ``charge=``; a reference (the MM charges of the ML atoms) is a cross-check that warns when its nearest
  integer differs;
* with an explicit total the rules cannot reach, the charge is spread evenly over the atoms and one warning
  gives both numbers; an explicit total more than 0.01 e from the reference warns with both.
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ChargeError, ConfigError

# Unbonded atoms of these elements are monatomic ions with this formal charge (e).
MONATOMIC_IONS = {3: 1, 11: 1, 19: 1, 9: -1, 17: -1, 35: -1, 53: -1, 12: 2, 20: 2}
# Alkali and alkaline-earth metals are ions, never covalently bonded, in the chemistry openmlip covers:
# bonds_from_positions gives them no bonds (Na+ sits 2.4 Å from a water O, inside Na-O covalent radii).
IONIC_METALS = frozenset({3, 4, 11, 12, 19, 20, 37, 38, 55, 56})
# Two atoms are bonded when closer than this factor times the sum of their covalent radii (RDKit's
# DetermineConnectivity uses 1.3 too): N-H up to 1.33 Å, C-C 1.98 Å, O-H 1.26 Å (a hydrogen bond is > 1.5 Å).
BOND_FACTOR = 1.3
# The tolerance of "an integer" for a sum of MM partial charges (e).
MM_SUM_TOLERANCE = 0.01

FORMAL_CHARGE_HINT = ("pass per-atom formal charges (openmm-ml: formalCharges=[...], one per ML atom; "
                      "ASE: atoms.arrays['formal_charges']) for the charges the model was trained with")


@dataclass(frozen=True)
class ChargeState:
    """A resolved charge state.

    Attributes
    ----------
    total : int
        Total charge (e).
    formal : tuple of float
        Per-atom formal charges (e), one per atom, summing to ``total``.
    multiplicity : int
        Spin multiplicity 2S+1.
    source : str
        Where ``formal`` came from: ``"given"``, ``"bonds"`` (the rules) or ``"spread"`` (total/N each).
    """

    total: int
    formal: Tuple[float, ...]
    multiplicity: int = 1
    source: str = "given"


def total_charge(value, what: str = "charge") -> int:
    """``value`` as an integer total charge (e), or :class:`ChargeError` naming ``what`` and the fix.

    Integers, integral floats and integer strings (``"1"``, ``"+1"``, ``" -2 "``, ``"1.0"``) are accepted.
    """
    hint = f"pass {what}=<integer total charge of the ML region in e>, e.g. {what}=1"
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise ChargeError(f"{what}={value!r} is not a number; {hint}") from None
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.ndarray)) or np.ndim(value) != 0:
        raise ChargeError(f"{what}={value!r} is not a number; {hint}")
    x = float(value)
    if not math.isfinite(x):
        raise ChargeError(f"{what}={x!r} is not finite; {hint}")
    if abs(x - round(x)) > 1e-6:
        raise ChargeError(f"{what}={x:g} is not an integer; {hint}")
    return int(round(x))


def integral_sum(total: float, what: str) -> int:
    """The integer nearest a sum of partial charges (e), or :class:`ChargeError` when it is more than
    0.01 e away (the region cuts through a residue or a bond)."""
    q = round(total)
    if not math.isfinite(total) or abs(total - q) > MM_SUM_TOLERANCE:
        raise ChargeError(
            f"the {what} sum to {total:.4f} e, not an integer (±{MM_SUM_TOLERANCE} e); the ML region probably cuts "
            "through a residue or bond — pass charge=<integer total charge of the ML region>"
        )
    return int(q)


def spin_multiplicity(value, what: str = "multiplicity") -> int:
    """``value`` as a spin multiplicity 2S+1 (an integer ≥ 1), or :class:`ConfigError`."""
    try:
        x = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        x = float("nan")
    if isinstance(value, bool) or not math.isfinite(x) or x != round(x) or x < 1:
        raise ConfigError(f"{what}={value!r} is not a spin multiplicity; pass an integer 2S+1 >= 1 (1 = singlet)")
    return int(x)


def check_electron_parity(atomic_numbers: Sequence[int], total: int, multiplicity: int, total_name: str = "charge",
                          multiplicity_name: str = "multiplicity") -> None:
    """:class:`ChargeError` when no spin state has ``multiplicity``: N electrons pair up to S = N/2, N/2 - 1, ...,
    so an even N needs an odd multiplicity 2S+1 and an odd N an even one (one H atom is a doublet, never a
    singlet; H2O+ too)."""
    electrons = int(sum(int(z) for z in atomic_numbers)) - int(total)
    if electrons < 0:
        raise ChargeError(f"{total_name}={total:+d} e leaves {electrons} electrons on atoms with {electrons + total} "
                          f"protons; check {total_name}")
    if (electrons + multiplicity) % 2 == 0:
        need = "an even" if electrons % 2 else "an odd"
        fix = multiplicity + 1 if multiplicity == 1 else multiplicity - 1
        raise ChargeError(f"{electrons} electrons (total charge {total:+d} e) cannot have spin multiplicity "
                          f"{multiplicity}: {'an odd' if electrons % 2 else 'an even'} number of electrons needs "
                          f"{need} multiplicity 2S+1; pass {multiplicity_name}={fix} (or check {total_name})")


def formal_charges_from_bonds(atomic_numbers: Sequence[int], bonds: Iterable[Tuple[int, int]], total: float,
                              atoms: Optional[Sequence[int]] = None) -> Optional[List[float]]:
    """Per-atom formal charges (e) of ``atoms`` from element + bond lists, or ``None`` when the rules do
    not account for ``total``.

    Parameters
    ----------
    atomic_numbers : sequence of int [N_all]
        Elements of every atom the bonds refer to (0 for an atom without element).
    bonds : iterable of (int, int)
        Covalent bonds, by index into ``atomic_numbers`` (bonds to atoms outside ``atoms`` count for degrees).
    total : float
        Total charge of ``atoms`` (e).
    atoms : sequence of int, optional
        The region (default: every atom); the result follows its order.

    Rules (the charged groups of the shipped data and of proteins): an unbonded Li/Na/K/Mg/Ca or
    F/Cl/Br/I is a monatomic ion; a nitrogen with four bonds carries +1 (NH4+, R-NH3+, Lys, N-terminus);
    a carboxylate (C bonded to two oxygens that have no other bond) carries -1 on its last oxygen, as
    its SMILES ``C(=O)[O-]`` in the training data does; an amidinium cation (a three-bonded carbon
    whose neighbours include two or more nitrogens, every one of them three-bonded, and no oxygen:
    Arg's guanidinium, doubly protonated His (HIP), protonated imidazoles and amidines) carries +1 on
    its last nitrogen, as ``C(N)=[NH2+]`` would; a phosphate P with t >= 2 oxygens that have no other bond
    carries -(t - 1) and a sulfonate/sulfate S with t >= 3 such oxygens -(t - 2), one -1 on each of those
    oxygens but the first (dimethyl phosphate ``COP(=O)([O-])OC``, methanesulfonate ``CS(=O)(=O)[O-]``).
    Neutral look-alikes keep 0: an amide or urea carbon has an oxygen, a neutral amidine, His (HID/HIE)
    or guanine has a two-bonded nitrogen, a phosphoric acid or a sulfonamide has fewer terminal oxygens.
    Anything else is 0.
    """
    fc = _rule_charges(atomic_numbers, bonds, atoms)
    return fc if abs(sum(fc) - float(total)) < 1e-6 else None


def _rule_charges(atomic_numbers: Sequence[int], bonds: Iterable[Tuple[int, int]],
                  atoms: Optional[Sequence[int]]) -> List[float]:
    """The rules of :func:`formal_charges_from_bonds`, whatever they add up to."""
    z_all = [int(v) for v in atomic_numbers]
    region = list(range(len(z_all))) if atoms is None else [int(a) for a in atoms]
    index = {a: k for k, a in enumerate(region)}
    neighbours: dict = {a: [] for a in region}
    degree = [0] * len(z_all)
    for i, j in bonds:
        degree[i] += 1
        degree[j] += 1
        if i in neighbours:
            neighbours[i].append(j)
        if j in neighbours:
            neighbours[j].append(i)
    fc = [0.0] * len(region)
    for a in region:
        z = z_all[a]
        nb = neighbours[a]
        if not nb and z in MONATOMIC_IONS:
            fc[index[a]] = float(MONATOMIC_IONS[z])
        elif z == 7 and len(nb) == 4:
            fc[index[a]] = 1.0
        elif z in (15, 16):  # phosphate, sulfonate/sulfate: -1 on every terminal O but the first (or two first)
            terminal_o = sorted(o for o in nb if z_all[o] == 8 and degree[o] == 1)
            for o in terminal_o[(1 if z == 15 else 2):]:
                if o in index:
                    fc[index[o]] = -1.0
        elif z == 6:
            terminal_o = [o for o in nb if z_all[o] == 8 and degree[o] == 1]
            if len(terminal_o) == 2 and max(terminal_o) in index:
                fc[index[max(terminal_o)]] = -1.0
            elements = [z_all[k] for k in nb]
            n_nb = [k for k, ze in zip(nb, elements) if ze == 7]
            if (len(nb) == 3 and len(n_nb) >= 2 and 8 not in elements and all(degree[k] == 3 for k in n_nb)
                    and max(n_nb) in index):
                fc[index[max(n_nb)]] += 1.0
    return fc


def bonds_from_positions(atomic_numbers: Sequence[int], positions, cell=None, pbc=None,
                         factor: float = BOND_FACTOR) -> List[Tuple[int, int]]:
    """Covalent bonds (i < j) between atoms closer than ``factor`` × the sum of their covalent radii
    (``ase.data.covalent_radii``), minimum image when periodic.  Alkali and alkaline-earth metals get none.

    Parameters
    ----------
    atomic_numbers : sequence of int [N]
    positions : array [N, 3], Å
    cell : array [3, 3], Å, optional
    pbc : bool or sequence of 3 bool, optional
    """
    from ase import Atoms
    from ase.data import covalent_radii
    from ase.neighborlist import neighbor_list

    z = np.asarray(atomic_numbers, dtype=int)
    structure = Atoms(numbers=z, positions=np.asarray(positions, dtype=float), cell=cell,
                      pbc=False if pbc is None else pbc)
    radii = [0.0 if v in IONIC_METALS else factor * covalent_radii[v] for v in z]
    i, j = neighbor_list("ij", structure, radii, self_interaction=False)
    ionic = np.isin(z, list(IONIC_METALS))
    keep = (i < j) & ~ionic[i] & ~ionic[j]
    return sorted({(int(a), int(b)) for a, b in zip(i[keep], j[keep])})


def check_formal(formal: Sequence[float], n: int, what: str = "formalCharges") -> List[float]:
    """``formal`` as ``n`` finite floats (e), or :class:`ChargeError` naming ``what`` and both lengths."""
    if isinstance(formal, (str, bytes)):  # "100" would read as [1, 0, 0]
        raise ChargeError(f"{what} must be a list of numbers (e), one per ML atom; got the string {formal!r} "
                          "(write e.g. [1, 0, 0, 0, 0])")
    try:
        values = [float(v) for v in formal]
    except (TypeError, ValueError):
        raise ChargeError(f"{what} must be a list of numbers (e), one per ML atom; got {formal!r}") from None
    if len(values) != n:
        raise ChargeError(f"{what} has {len(values)} values but the ML region has {n} atoms; give one formal charge "
                          "per ML atom, in the order of the ML atom indices")
    bad = [k for k, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise ChargeError(f"{what} are not finite at atom(s) {bad[:5]}; give finite formal charges (e)")
    return values


def _warn_if_unlike_the_rules(atomic_numbers: Sequence[int], bonds: List[Tuple[int, int]], region: List[int],
                              values: List[float], formal_name: str) -> None:
    """Warn when given formal charges sit elsewhere than the bond rules put the same total (the model was trained
    with the rules' placement: +1 on the N of NH4+, not on an H).  Atoms of one element bonded to a common atom
    are interchangeable (resonance: the two O of a carboxylate, the N of guanidinium, ND1/NE2 of histidine)."""
    if not bonds:
        return
    rules = _rule_charges(atomic_numbers, bonds, region)
    if abs(sum(rules) - sum(values)) > 1e-6:
        return  # the rules do not reach this total: nothing to compare with
    position = {a: k for k, a in enumerate(region)}
    parent = list(range(len(region)))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    bonded: dict = {}
    for i, j in bonds:
        bonded.setdefault(i, []).append(j)
        bonded.setdefault(j, []).append(i)
    for around in bonded.values():
        inside = [position[a] for a in around if a in position]
        for k in inside:
            for m in inside:
                if atomic_numbers[region[k]] == atomic_numbers[region[m]]:
                    parent[root(k)] = root(m)
    classes: dict = {}
    for k in range(len(region)):
        classes.setdefault(root(k), []).append(k)
    for members in classes.values():
        if sorted(values[k] for k in members) != sorted(rules[k] for k in members):
            k = next(m for m in members if values[m] != rules[m])
            warnings.warn(f"{formal_name} give {values[k]:+g} e to atom {region[k]} (Z={atomic_numbers[region[k]]}), where "
                          f"the bond rules put {rules[k]:+g} e (the placement the models were trained with): check "
                          f"{formal_name}, or leave them out to take the rules'", stacklevel=4)
            return


def resolve_charge_state(atomic_numbers: Sequence[int], *, total=None, formal: Optional[Sequence[float]] = None,
                         multiplicity=1, bonds: Iterable[Tuple[int, int]] = (), atoms: Optional[Sequence[int]] = None,
                         reference: Optional[Tuple[float, str]] = None, total_name: str = "charge",
                         formal_name: str = "formalCharges", multiplicity_name: str = "multiplicity") -> ChargeState:
    """The charge state of a region: every openmlip entry point calls this.

    Parameters
    ----------
    atomic_numbers : sequence of int [N_all]
        Elements of every atom the bonds refer to.
    total : int, float or str, optional
        Explicit total charge (e); see :func:`total_charge`.  Default: the sum of ``formal``, else of the
        bond rules' charges.
    formal : sequence of float [N], optional
        Explicit per-atom formal charges (e) of the region; default: :func:`formal_charges_from_bonds`.
    multiplicity : int
        Spin multiplicity 2S+1.
    bonds : iterable of (int, int)
        Covalent bonds by index into ``atomic_numbers`` (for the formal-charge rules).
    atoms : sequence of int, optional
        The region, as indices into ``atomic_numbers`` (default: every atom).
    reference : (float, str), optional
        A sum of partial charges (e) of the region and what it is (e.g. "MM partial charges of the ML
        atoms"): a cross-check, warning when an explicit total is more than 0.01 e away from it, or when the
        inferred total is not its nearest integer.
    total_name, formal_name, multiplicity_name : str
        How the caller's user spells the inputs, for the messages.

    A multiplicity that the region's electron count cannot have (:func:`check_electron_parity`) is a
    :class:`ChargeError`.
    """
    mult = spin_multiplicity(multiplicity, multiplicity_name)
    bonds = list(bonds)
    region = list(range(len(atomic_numbers))) if atoms is None else list(atoms)
    n = len(region)
    values = None if formal is None else check_formal(formal, n, formal_name)
    if total is not None:
        q = total_charge(total, total_name)
        if reference is not None and abs(reference[0] - q) > MM_SUM_TOLERANCE:
            warnings.warn(f"{total_name}={q:+d} e was given, but the {reference[1]} sum to {reference[0]:+.4f} e; "
                          f"using {q:+d} e (check the charge of the ML region)", stacklevel=3)
    rules = _rule_charges(atomic_numbers, bonds, region) if values is None else None
    if total is None:
        if values is not None:
            q, source = integral_sum(sum(values), f"{formal_name} values"), f"the {formal_name}"
        else:
            q, source = int(round(sum(rules))), "the formal-charge rules (bonds)"
        if reference is not None and math.isfinite(reference[0]) and round(reference[0]) != q:
            warnings.warn(f"{source} give a total charge of {q:+d} e, but the {reference[1]} sum to "
                          f"{reference[0]:+.4f} e; using {q:+d} e. To fix, pass {total_name}=<integer> (and "
                          f"{formal_name} for a charged group the rules do not know)", stacklevel=3)
    check_electron_parity([atomic_numbers[i] for i in region], q, mult, total_name, multiplicity_name)
    if values is not None:
        if abs(sum(values) - q) > 1e-6:
            raise ChargeError(f"{formal_name} sum to {sum(values):+g} e but the total charge is {q:+d} e; make them agree "
                              f"(or leave out {formal_name} to infer them from the bonds)")
        _warn_if_unlike_the_rules(atomic_numbers, bonds, region, values, formal_name)
        return ChargeState(q, tuple(values), mult, "given")
    placed = sum(rules)
    if abs(placed - q) < 1e-6:
        return ChargeState(q, tuple(rules), mult, "bonds")
    warnings.warn(f"the formal-charge rules (bonds) place {placed:+g} e on the {n} atoms, but the total charge is "
                  f"{q:+d} e; spreading {q:+d} e evenly ({q / max(n, 1):+.4g} e per atom). To fix, {FORMAL_CHARGE_HINT}",
                  stacklevel=3)
    return ChargeState(q, tuple([q / max(n, 1)] * n), mult, "spread")
