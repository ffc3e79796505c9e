"""ASE calculator for any deployed openmlip model.

The charge state comes from :func:`openmlip.charges.resolve_charge_state`, the resolver the OpenMM
plugin uses, so both routes give the same answer for the same molecule:

* total charge (an integer, e): ``atoms.info["charge"]``; without it the sum of the per-atom charges
  below, else 0;
* per-atom formal charges (e): ``atoms.arrays["formal_charges"]``, else ASE's own
  ``atoms.get_initial_charges()`` where set (they must then be integers), else inferred from
  connectivity (bonds from covalent radii, minimum image when periodic: see
  :func:`openmlip.charges.bonds_from_positions`) by the same rules as the OpenMM route (+1 on the N of
  NH4+, ...), with a warning and an even spread only when the rules cannot reach the total charge;
* spin multiplicity 2S+1: ``atoms.info["spin"]`` (default 1).

Formal charges are inferred once per charge state (the geometry of the first calculation fixes the
bonds, as a Topology does in OpenMM), so a stretched bond in MD or a scan does not flip them; changing
``info["charge"]``, ``info["spin"]``, the formal or the initial charges resolves them again and
invalidates cached results.  Positions must be finite and no two atoms closer than
:data:`MIN_DISTANCE` (:class:`~openmlip.errors.GeometryError` otherwise).  Periodic cells are honoured.
Results: ``energy`` (eV), ``forces`` (eV/Å), ``charges`` (e), ``energies`` (per atom, eV).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from ase.calculators.calculator import Calculator as _ASECalculator, all_changes
from ase.neighborlist import neighbor_list

from . import keys as K
from .charges import ChargeState, bonds_from_positions, check_formal, resolve_charge_state
from .deploy import DTYPES, cast_model, load_model, torch_dtype
from .errors import ChargeError, ConfigError, GeometryError, from_graph
from .nn.electrostatics import check_coulomb_cell, coulomb_cutoff_of
from .nn.embedding import SpeciesIndex

# Two atoms closer than this (Å) are a broken geometry (the model gives NaN on top of each other).
MIN_DISTANCE = 0.1


def _charge_key(atoms) -> tuple:
    """What the charge state depends on besides the atomic numbers (compared by value)."""
    arrays = tuple(None if name not in atoms.arrays else np.asarray(atoms.arrays[name]).tobytes()
                   for name in ("formal_charges", "initial_charges"))
    return (repr(atoms.info.get("charge")), repr(atoms.info.get("spin"))) + arrays


def check_geometry(atoms) -> None:
    """:class:`GeometryError` for non-finite positions (or cell) or two atoms closer than :data:`MIN_DISTANCE`."""
    bad = np.flatnonzero(~np.isfinite(atoms.positions).all(axis=1))
    if bad.size:
        raise GeometryError(f"atoms.positions are not finite (NaN or inf) for atom(s) {bad[:5].tolist()}; "
                            "give finite coordinates (Å)")
    if np.any(atoms.pbc) and not np.isfinite(atoms.cell[:]).all():
        raise GeometryError("atoms.cell is not finite; give a finite periodic cell (Å)")
    periodic = np.asarray(atoms.cell[:])[np.asarray(atoms.pbc, dtype=bool)]
    if periodic.size and np.linalg.matrix_rank(periodic, tol=1e-6) < len(periodic):
        axes = "".join(a for a, p in zip("abc", atoms.pbc) if p)
        raise GeometryError(f"atoms.pbc is periodic along {axes} but atoms.cell spans no volume there (cell "
                            f"{np.round(atoms.cell.cellpar(), 4).tolist()}): set atoms.cell (Å), or atoms.pbc = False")
    i, j, d = neighbor_list("ijd", atoms, MIN_DISTANCE)
    if i.size:
        k = int(np.argmin(d))
        raise GeometryError(f"atoms {int(i[k])} and {int(j[k])} are {d[k]:.3g} Å apart (closer than {MIN_DISTANCE} Å): "
                            "the geometry is broken; give each atom its own position")


def charge_state(atoms) -> ChargeState:
    """The charge state of an ASE ``Atoms`` (see the module docstring)."""
    n = len(atoms)
    formal, name = None, "atoms.arrays['formal_charges']"
    if "formal_charges" in atoms.arrays:
        formal = check_formal(atoms.arrays["formal_charges"], n, name)
    elif "initial_charges" in atoms.arrays:
        name = "atoms.get_initial_charges()"
        formal = check_formal(atoms.get_initial_charges(), n, name)
        off = [k for k, q in enumerate(formal) if q != round(q)]
        if off:
            raise ChargeError(f"{name} are read as formal charges but atom {off[0]} has {formal[off[0]]:g}, not an "
                              "integer; set integer formal charges, or del atoms.arrays['initial_charges'] to infer "
                              "them from the bonds")
    bonds = [] if formal is not None else bonds_from_positions(atoms.numbers, atoms.positions, atoms.cell[:], atoms.pbc)
    return resolve_charge_state(atoms.numbers, total=atoms.info.get("charge"), formal=formal,
                                multiplicity=atoms.info.get("spin", 1), bonds=bonds,
                                total_name="atoms.info['charge']", formal_name=name,
                                multiplicity_name="atoms.info['spin']")


def calculator_dtype(dtype) -> Optional[torch.dtype]:
    """``dtype`` as torch.float32 or torch.float64 (names as strings too), None for the model file's, or
    :class:`ConfigError`: float16 gives NaN energies and bfloat16 energies off by 10 meV."""
    if dtype is None or dtype in (torch.float32, torch.float64):
        return dtype
    if isinstance(dtype, str):
        name = dtype.strip().lower()
        name = name[6:] if name.startswith("torch.") else name
        if name in DTYPES:
            return DTYPES[name]
    raise ConfigError(f"dtype={dtype!r} is not supported; pass torch.float32 or torch.float64 (or 'float32', "
                      "'float64'), or leave it out for the model file's precision")


class Calculator(_ASECalculator):
    implemented_properties = ["energy", "free_energy", "forces", "charges", "energies"]

    def __init__(self, model_path: Union[str, Path], device: str = "cpu", dtype: Optional[torch.dtype] = None, **kwargs):
        super().__init__(**kwargs)
        dtype = calculator_dtype(dtype)
        if isinstance(model_path, str) and not Path(model_path).exists():
            from .openmm.registry import resolve_potential  # a shipped potential's name

            model_path = resolve_potential(model_path)
        self.model, self.metadata = load_model(model_path, device=device)
        if dtype is None:
            dtype = torch_dtype(self.metadata["dtype"])
        self.model = cast_model(self.model, dtype)
        self.coulomb_cutoff = coulomb_cutoff_of(self.model)
        self.dtype = dtype
        self.device = device
        self.species = SpeciesIndex(self.metadata["elements"])
        self._state_key: Optional[tuple] = None
        self._state: Optional[ChargeState] = None

    def check_state(self, atoms, tol=1e-15):
        """ASE's changes plus ``"charge_state"`` when the charge inputs changed since the last calculation."""
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and _charge_key(self.atoms) != _charge_key(atoms):
            changes = list(changes) + ["charge_state"]
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self.species.check(atoms.numbers)
        check_geometry(atoms)
        key = (atoms.numbers.tobytes(),) + _charge_key(atoms)
        if key != self._state_key:
            self._state, self._state_key = charge_state(atoms), key
        state = self._state
        t = dict(dtype=self.dtype, device=self.device)
        data = {
            # less the first atom's position rounded to whole Å, in float64: a float32 model far from the origin
            # loses nothing to the cast (energies and forces do not depend on the shift)
            K.POSITIONS: torch.tensor(atoms.positions - np.round(atoms.positions[0]), **t),
            K.ATOMIC_NUMBERS: torch.tensor(atoms.numbers, dtype=torch.long, device=self.device),
            K.TOTAL_CHARGE: torch.tensor([float(state.total)], **t),
            K.SPIN_MULTIPLICITY: torch.tensor([float(state.multiplicity)], **t),
            K.FORMAL_CHARGES: torch.tensor(state.formal, **t),
        }
        if np.any(atoms.pbc):
            if self.coulomb_cutoff is not None:
                cell = np.asarray(atoms.cell[:])
                widths = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
                check_coulomb_cell(self.coulomb_cutoff, widths[np.asarray(atoms.pbc)], "periodic cell (atoms.cell)")
            data[K.CELL] = torch.tensor(np.asarray(atoms.cell[:]), **t).unsqueeze(0)
            data[K.PBC] = torch.tensor(np.asarray(atoms.pbc), dtype=torch.bool, device=self.device).unsqueeze(0)
        try:
            out = self.model(data, True)
        except torch.jit.Error as exc:  # a check inside the scripted model (models saved since the strict checks)
            typed = from_graph(exc)
            if typed is None:
                raise
            raise typed from None
        energy = float(out[K.ENERGY].detach().sum())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out[K.FORCES].detach().cpu().double().numpy(),
            "charges": out[K.CHARGES].detach().cpu().double().numpy(),
            "energies": out[K.ATOMIC_ENERGIES].detach().cpu().double().numpy(),
        }
