"""Errors of a model against reference labels: the residuals (model minus reference) and the numbers reported from
them, used by training (validation loss, test report) and ``openmlip evaluate`` alike.

Reported per term: energy per atom MAE (meV/atom), force component MAE and RMSE (meV/Å) and partial charge MAE (e);
the loss takes the mean squared residuals (eV²/atom², eV²/Å², e²).  The numbers come from sums over residuals
(count, Σ|r|, Σr²), so that sums over parts of a set (batches, processes) give the numbers of the whole set.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Tuple

import numpy as np
import torch

from . import keys as K

#: the residual terms, in the order of the sums and of the reported numbers
TERMS = ("energy", "forces", "charges")


def residuals(out: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Model minus reference: ``energy`` per atom [B] (eV/atom), ``forces`` [N,3] (eV/Å) and, for labelled data,
    ``charges`` [N] (e).  The one definition of the loss terms (training steps and validation errors)."""
    res = {"energy": (out[K.ENERGY] - batch[K.ENERGY_REF]) / batch[K.NUM_ATOMS], "forces": out[K.FORCES] - batch[K.FORCES_REF]}
    if K.CHARGES_REF in batch:
        res["charges"] = out[K.CHARGES] - batch[K.CHARGES_REF]
    return res


def residual_sums(res: Mapping[str, np.ndarray]) -> Dict[str, Tuple[float, float, float]]:
    """(count, Σ|r|, Σr²) of each term of ``res`` (numpy arrays of residuals, any shape, float64)."""
    return {term: (float(np.size(r)), float(np.sum(np.abs(r))), float(np.sum(np.asarray(r) ** 2)))
            for term, r in res.items()}


def error_metrics(sums: Mapping[str, Tuple[float, float, float]], mse: bool = False) -> Dict[str, float]:
    """The reported errors from the sums (count, Σ|r|, Σr²) of each term (:func:`residual_sums`): for energy
    ``energy_mae_meV_per_atom``, for forces ``forces_mae_meV_per_A`` and ``forces_rmse_meV_per_A``, for charges
    ``charges_mae_e``; with ``mse`` also ``<term>_mse``, the mean squared residual the loss weighs.  A term with no
    residuals (count 0, e.g. data without charge labels) is left out."""
    def has(term: str) -> bool:
        return term in sums and sums[term][0] > 0

    def mae(term: str) -> float:
        n, total_abs, _ = sums[term]
        return total_abs / n

    def ms(term: str) -> float:
        n, _, total_sq = sums[term]
        return total_sq / n

    out: Dict[str, float] = {}
    if has("energy"):
        out["energy_mae_meV_per_atom"] = 1000 * mae("energy")
    if has("forces"):
        out["forces_mae_meV_per_A"] = 1000 * mae("forces")
        out["forces_rmse_meV_per_A"] = 1000 * math.sqrt(ms("forces"))
    if mse:
        out.update({f"{term}_mse": ms(term) for term in ("energy", "forces") if has(term)})
    if has("charges"):
        out["charges_mae_e"] = mae("charges")
        if mse:
            out["charges_mse"] = ms("charges")
    return out
