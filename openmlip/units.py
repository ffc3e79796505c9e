"""The single home of unit-conversion constants in openmlip.

Internal units (models, data): length Å, energy eV, charge e (elementary charge).
OpenMM units: length nm, energy kJ/mol.  Conversions happen at the boundaries only
(data readers, :mod:`openmlip.openmm`, the ASE calculator), always through this module.

Values are CODATA 2022 (the set used by scipy >= 1.15).  Since the 2019 SI redefinition the
elementary charge and the Avogadro constant are exact, so ``EV_TO_KJ_PER_MOL`` is exact too.
``tests/test_units.py`` checks every constant against ``scipy.constants`` and ``ase.units``.
"""
from __future__ import annotations

from typing import Final

# --- exact SI constants (2019 redefinition) -----------------------------------------------
ELEMENTARY_CHARGE_C: Final[float] = 1.602176634e-19  # C (exact)
AVOGADRO_PER_MOL: Final[float] = 6.02214076e23  # 1/mol (exact)
CALORIE_J: Final[float] = 4.184  # thermochemical calorie, J (exact)

# --- CODATA 2022 measured constants -------------------------------------------------------
BOHR_ANGSTROM: Final[float] = 0.529177210544  # Bohr radius a0 in Å
HARTREE_EV: Final[float] = 27.211386245981  # Hartree energy E_h in eV
VACUUM_PERMITTIVITY_F_PER_M: Final[float] = 8.8541878188e-12  # ε0

BOLTZMANN_J_PER_K: Final[float] = 1.380649e-23  # k_B (exact)

# --- lengths -----------------------------------------------------------------------------
NM_TO_ANGSTROM: Final[float] = 10.0
ANGSTROM_TO_NM: Final[float] = 0.1
BOHR_TO_ANGSTROM: Final[float] = BOHR_ANGSTROM
ANGSTROM_TO_BOHR: Final[float] = 1.0 / BOHR_ANGSTROM
BOHR_TO_NM: Final[float] = BOHR_ANGSTROM * ANGSTROM_TO_NM
NM2_TO_ANGSTROM2: Final[float] = NM_TO_ANGSTROM**2
NM_TO_M: Final[float] = 1e-9
FS_TO_PS: Final[float] = 1e-3

# --- energies ----------------------------------------------------------------------------
EV_TO_KJ_PER_MOL: Final[float] = ELEMENTARY_CHARGE_C * AVOGADRO_PER_MOL / 1000.0  # 96.485332123310...
KJ_PER_MOL_TO_EV: Final[float] = 1.0 / EV_TO_KJ_PER_MOL
KCAL_PER_MOL_TO_KJ_PER_MOL: Final[float] = CALORIE_J
KCAL_PER_MOL_TO_EV: Final[float] = CALORIE_J / EV_TO_KJ_PER_MOL
EV_TO_KCAL_PER_MOL: Final[float] = 1.0 / KCAL_PER_MOL_TO_EV
HARTREE_TO_EV: Final[float] = HARTREE_EV
EV_TO_HARTREE: Final[float] = 1.0 / HARTREE_EV
HARTREE_TO_KJ_PER_MOL: Final[float] = HARTREE_EV * EV_TO_KJ_PER_MOL

# molar gas constant R = k_B N_A in kJ/(mol K) (exact: 0.00831446261815324)
GAS_CONSTANT_KJ_PER_MOL_K: Final[float] = BOLTZMANN_J_PER_K * AVOGADRO_PER_MOL / 1000.0

# --- transport ---------------------------------------------------------------------------
# diffusion coefficients: 1 nm²/ps = 1e-14 cm² / 1e-12 s = 1e-2 cm²/s = 1000 × (1e-5 cm²/s)
NM2_PER_PS_TO_1E5_CM2_PER_S: Final[float] = 1000.0
M2_PER_S_TO_NM2_PER_PS: Final[float] = 1e6  # 1 m²/s = 1e18 nm² / 1e12 ps
MPA_S_TO_PA_S: Final[float] = 1e-3  # viscosity

# --- forces / gradients ------------------------------------------------------------------
HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM: Final[float] = HARTREE_EV / BOHR_ANGSTROM
EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM: Final[float] = EV_TO_KJ_PER_MOL * NM_TO_ANGSTROM
KJ_PER_MOL_NM_TO_EV_PER_ANGSTROM: Final[float] = 1.0 / EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM

# --- electrostatics ----------------------------------------------------------------------
# Coulomb constant e^2 / (4 pi eps0) in eV·Å: E[eV] = COULOMB_EV_ANGSTROM * q_i q_j / r[Å]
COULOMB_EV_ANGSTROM: Final[float] = (
    ELEMENTARY_CHARGE_C / (4.0 * 3.141592653589793 * VACUUM_PERMITTIVITY_F_PER_M) * 1e10
)
# The same in OpenMM units, kJ/mol·nm (OpenMM's ONE_4PI_EPS0 = 138.935456...).
COULOMB_KJ_PER_MOL_NM: Final[float] = COULOMB_EV_ANGSTROM * EV_TO_KJ_PER_MOL * ANGSTROM_TO_NM

# Energy unit names accepted by readers and the CLI, mapped to eV.
ENERGY_TO_EV: Final[dict] = {
    "eV": 1.0,
    "kJ/mol": KJ_PER_MOL_TO_EV,
    "kcal/mol": KCAL_PER_MOL_TO_EV,
    "hartree": HARTREE_TO_EV,
}
# Length unit names mapped to Å.
LENGTH_TO_ANGSTROM: Final[dict] = {
    "Angstrom": 1.0,
    "nm": NM_TO_ANGSTROM,
    "bohr": BOHR_TO_ANGSTROM,
}


def _factor(table: dict, unit: str, kind: str) -> float:
    try:
        return table[unit]
    except KeyError:
        raise ValueError(f"unknown {kind} unit {unit!r}; use one of {sorted(table)}") from None


def energy_to_ev(unit: str) -> float:
    """Factor that converts an energy in ``unit`` to eV (``unit`` in :data:`ENERGY_TO_EV`)."""
    return _factor(ENERGY_TO_EV, unit, "energy")


def length_to_angstrom(unit: str) -> float:
    """Factor that converts a length in ``unit`` to Å (``unit`` in :data:`LENGTH_TO_ANGSTROM`)."""
    return _factor(LENGTH_TO_ANGSTROM, unit, "length")


def ns_per_day(timestep_fs: float, seconds_per_step: float) -> float:
    """Simulated nanoseconds per wall-clock day at ``seconds_per_step`` for a time step of ``timestep_fs``."""
    return timestep_fs * 1e-6 / seconds_per_step * 86400.0
