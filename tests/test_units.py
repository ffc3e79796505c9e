"""Every conversion constant against independent sources (scipy.constants CODATA 2022, ase.units, OpenMM)."""
from __future__ import annotations

import math

import pytest
import scipy.constants as sc

from openmlip import units as U


def test_exact_si_and_derived_energy():
    assert U.EV_TO_KJ_PER_MOL == pytest.approx(sc.e * sc.N_A / 1000.0, rel=1e-15)
    assert U.EV_TO_KJ_PER_MOL == pytest.approx(96.48533212331, rel=1e-13)
    assert U.KCAL_PER_MOL_TO_KJ_PER_MOL == sc.calorie == 4.184
    assert U.KCAL_PER_MOL_TO_EV == pytest.approx(sc.calorie * 1000.0 / (sc.e * sc.N_A), rel=1e-15)
    assert U.GAS_CONSTANT_KJ_PER_MOL_K == pytest.approx(sc.R / 1000.0, rel=1e-15) and U.BOLTZMANN_J_PER_K == sc.k
    assert U.NM2_PER_PS_TO_1E5_CM2_PER_S == pytest.approx((sc.nano / sc.centi) ** 2 / sc.pico / 1e-5, rel=1e-15)
    assert U.ns_per_day(2.0, 0.001) == pytest.approx(2e-6 * 86400 / 0.001, rel=1e-15)  # 2 fs at 1 ms/step: 172.8 ns/day


def test_codata_2022_against_scipy():
    assert U.BOHR_TO_ANGSTROM == pytest.approx(sc.physical_constants["Bohr radius"][0] * 1e10, rel=1e-12)
    assert U.HARTREE_TO_EV == pytest.approx(sc.physical_constants["Hartree energy in eV"][0], rel=1e-12)
    assert U.HARTREE_TO_KJ_PER_MOL == pytest.approx(
        sc.physical_constants["Hartree energy"][0] * sc.N_A / 1000.0, rel=1e-12
    )
    assert U.HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM == pytest.approx(
        sc.physical_constants["Hartree energy in eV"][0] / (sc.physical_constants["Bohr radius"][0] * 1e10), rel=1e-12
    )
    assert U.COULOMB_EV_ANGSTROM == pytest.approx(sc.e / (4 * math.pi * sc.epsilon_0) * 1e10, rel=1e-10)


def test_against_ase_units():
    # ase.units defaults to CODATA 2014: agreement to the change between CODATA editions (< 1e-8)
    from ase import units as au

    assert U.BOHR_TO_ANGSTROM == pytest.approx(au.Bohr, rel=1e-8)
    assert U.HARTREE_TO_EV == pytest.approx(au.Hartree, rel=1e-8)
    assert U.KJ_PER_MOL_TO_EV == pytest.approx(au.kJ / au.mol, rel=1e-8)
    assert U.KCAL_PER_MOL_TO_EV == pytest.approx(au.kcal / au.mol, rel=1e-8)


def test_against_openmm_coulomb_and_unit_system():
    import openmm.unit as u

    assert U.COULOMB_KJ_PER_MOL_NM == pytest.approx(138.935456, rel=1e-7)  # OpenMM's ONE_4PI_EPS0
    assert (1.0 * u.bohr).value_in_unit(u.angstrom) == pytest.approx(U.BOHR_TO_ANGSTROM, rel=1e-8)
    assert (1.0 * u.kilocalorie_per_mole).value_in_unit(u.kilojoule_per_mole) == U.KCAL_PER_MOL_TO_KJ_PER_MOL


def test_round_trips_are_exact_to_rounding():
    for x in (1.0, -3.7, 1234.5678):
        assert x * U.EV_TO_KJ_PER_MOL * U.KJ_PER_MOL_TO_EV == pytest.approx(x, rel=2e-16)
        assert x * U.NM_TO_ANGSTROM * U.ANGSTROM_TO_NM == pytest.approx(x, rel=2e-16)
        assert x * U.BOHR_TO_ANGSTROM * U.ANGSTROM_TO_BOHR == pytest.approx(x, rel=2e-16)
        assert x * U.HARTREE_TO_EV * U.EV_TO_HARTREE == pytest.approx(x, rel=2e-16)
    assert U.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM * U.KJ_PER_MOL_NM_TO_EV_PER_ANGSTROM == pytest.approx(1.0, rel=2e-16)


def test_unit_lookup_errors():
    assert U.energy_to_ev("hartree") == U.HARTREE_TO_EV
    assert U.length_to_angstrom("bohr") == U.BOHR_TO_ANGSTROM
    with pytest.raises(ValueError, match="unknown energy unit 'Ry'; use one of"):
        U.energy_to_ev("Ry")
    with pytest.raises(ValueError, match="unknown length unit 'pm'"):
        U.length_to_angstrom("pm")
