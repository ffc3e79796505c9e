"""End-state free-energy corrections: ΔG(MM → ML/MM) over ``lambda_interpolate``.

``engine`` runs λ windows and non-equilibrium switches of any System whose energy is linear in
``lambda_interpolate`` (one resumable file per window or batch of switches); ``estimators`` turns them
into MBAR, BAR and Jarzynski estimates with bootstrap errors; ``report`` gathers a leg into
``results.json``, ``report.md`` and plots; ``spec`` reads the ``free_energy:`` section of a system spec
and builds each leg's interpolating ML/MM System; ``cli`` is ``openmlip fe``.  See docs/free_energy.md.
"""
from .engine import DIRECTIONS, LAMBDA, Engine, FESettings, kt_kJmol

__all__ = ["Engine", "FESettings", "LAMBDA", "DIRECTIONS", "kt_kJmol"]
