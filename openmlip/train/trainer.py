"""Training loop: energy + force (+ charge) loss, AdamW, cosine LR, gradient clipping, EMA weights,
early stopping, atomic checkpoints with exact resume, progress bar, metrics CSV, test report.

Exact resume: the data order of epoch ``e`` is a pure function of ``(seed, e)``, and a checkpoint holds
the model, optimiser and EMA states, the step, the epoch and the position inside it, the
early-stopping state and the metrics history.  Rerunning the same command after a kill continues
from the last checkpoint and ends with the same parameters as an uninterrupted run (tested on CPU).

Nothing is unpickled: checkpoints hold only tensors, numbers, strings, lists and dicts and are read with
``torch.load(weights_only=True)``.  Labels must be finite; a non-finite loss or gradient stops the run
before the update, and no checkpoint or ``best.pt`` is ever written from (or resumed from) non-finite weights.
"""
from __future__ import annotations

import csv
import json
import math
import pickle
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .._io import atomic_path
from ..data import Structure, read_extxyz, read_spice
from ..deploy import file_sha256, torch_dtype
from ..errors import ConfigError, DataFileError, ResumeError, TrainingDivergedError, first_line  # noqa: F401 (re-exported)
from ..models import build_model
from ..models.config import ModelConfig
from ..nn.embedding import SpeciesIndex
from .batching import collate, model_inputs
from .config import TrainConfig

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
METRICS = "metrics.csv"
REPORT = "report.json"


# ---------------------------------------------------------------------------------------------- data
def _check_finite(s: Structure, where: str) -> None:
    """DataFileError if a coordinate or label of ``s`` is NaN or infinite."""
    values = {"positions": s.positions, "total charge": s.total_charge, "energy label": s.energy,
              "forces label": s.forces, "charges label": s.charges}
    for what, value in values.items():
        if value is not None and not np.all(np.isfinite(np.asarray(value, dtype=float))):
            raise DataFileError(f"{where} ({s.name!r}) has a non-finite {what}; remove or relabel that structure "
                                "(a NaN label would train NaN weights)")


def load_structures(cfg: TrainConfig) -> List[Structure]:
    """All structures of ``cfg.data``; each gets ``info["source"]`` = ``"file[index]"`` (its place in its file)."""
    out: List[Structure] = []
    for path in cfg.data:
        p = Path(path)
        if not p.is_file():
            raise DataFileError(f"training data file {path!r} not found; fix the data: entry of the training config")
        if p.suffix.lower() in (".h5", ".hdf5"):
            structs = list(read_spice(p, energy_key=cfg.energy_key, gradient_key=cfg.gradient_key, charges_key=cfg.charges_key))
        else:
            structs = list(read_extxyz(p))
        for k, s in enumerate(structs):
            s.info["source"] = f"{p.name}[{k}]"
            _check_finite(s, f"training data {str(p)!r}: structure {k}")
        out += structs
    if not out:
        raise DataFileError(f"no structures read from {cfg.data}; check the files and energy_key/gradient_key")
    return out


def split_by_molecule(structures: Sequence[Structure], valid_fraction: float, test_fraction: float, seed: int,
                      valid_molecules: Optional[Sequence[str]] = None, test_molecules: Optional[Sequence[str]] = None):
    """Split so that all conformers of one molecule (``Structure.name``) land in the same part.

    Held-out molecules are drawn at random (``seed``, fractions of the molecules), or named explicitly
    with ``valid_molecules`` / ``test_molecules`` (then the fractions are ignored).
    """
    names = sorted({s.name for s in structures})
    if valid_molecules is not None or test_molecules is not None:
        test_names, val_names = set(test_molecules or ()), set(valid_molecules or ())
        unknown = sorted((test_names | val_names) - set(names))
        if unknown:
            raise ConfigError(f"held-out molecule(s) {unknown} not in the data; molecules: {names}")
        if test_names & val_names:
            raise ConfigError(f"molecule(s) {sorted(test_names & val_names)} are both validation and test")
        if not set(names) - test_names - val_names:
            raise ConfigError("no molecule left for training")
    else:
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
        test_names = {names[i] for i in order[:n_test]}
        val_names = {names[i] for i in order[n_test:n_test + n_val]}
    parts: Tuple[List[Structure], List[Structure], List[Structure]] = ([], [], [])
    for s in structures:
        parts[2 if s.name in test_names else 1 if s.name in val_names else 0].append(s)
    return parts


def reference_energies(structures: Sequence[Structure], elements: Sequence[str]) -> np.ndarray:
    """Per-element energies (eV) by least squares: E ≈ Σ_s n_s e_s."""
    index = SpeciesIndex(elements)
    a = np.zeros((len(structures), len(elements)))
    for k, s in enumerate(structures):
        idx = index(torch.tensor(s.numbers)).numpy()
        np.add.at(a[k], idx, 1.0)
    b = np.array([s.energy for s in structures])
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    sol[a.sum(0) == 0] = 0.0
    return sol


# ------------------------------------------------------------------------------------------ helpers
def _non_finite(tensors: Dict[str, torch.Tensor]) -> List[str]:
    """Names of the floating-point tensors in ``tensors`` that hold a NaN or an infinity."""
    return [k for k, v in tensors.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]


def _atomic_save(obj, path: Path) -> None:
    """Write a checkpoint atomically, refusing non-finite weights (they would poison a resume or a deploy)."""
    bad = _non_finite(obj["model"]) + _non_finite(obj.get("ema", {}))
    if bad:
        raise TrainingDivergedError(f"refusing to write {path}: non-finite weights in {bad[:3]}; lower lr or grad_clip "
                                    "and train into a new output folder")
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path) -> Dict[str, object]:
    """Read a trainer checkpoint (``checkpoint.pt`` or ``best.pt``) without unpickling code.

    Raises
    ------
    DataFileError
        unreadable or truncated file, a file that needs unpickling (an unsafe format, e.g. written by an
        older openmlip), or non-finite weights.
    """
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files: the error says it all
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise DataFileError(f"{path} needs unpickling to be read (an unsafe format, e.g. written by an older openmlip, "
                            "or not an openmlip checkpoint) and was not loaded; delete it (or use a new output folder) "
                            "and train again") from None
    except Exception as exc:  # torch raises RuntimeError/EOFError/... for truncated or foreign files
        first = first_line(exc)
        raise DataFileError(f"{path} is not a readable openmlip checkpoint ({first}); delete it and train again") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or not isinstance(state.get("config"), dict):
        raise DataFileError(f"{path} is not an openmlip training checkpoint; delete it or point at a training output folder")
    bad = _non_finite(state["model"]) + _non_finite(state.get("ema", {}))
    for group in state.get("optimizer", {}).get("state", {}).values():
        bad += _non_finite(group)
    if bad:
        raise DataFileError(f"{path} holds non-finite weights ({bad[:3]}): the run it comes from diverged; it is not "
                            "resumed or deployed - delete the folder and train again with a lower lr or grad_clip")
    return state


def _lr(cfg: TrainConfig, step: int, total: int) -> float:
    lo = cfg.lr * cfg.lr_min_factor
    t = min(step / max(total, 1), 1.0)
    return lo + 0.5 * (cfg.lr - lo) * (1.0 + math.cos(math.pi * t))


def residuals(out: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Model minus reference: ``energy`` per atom [B] (eV/atom), ``forces`` [N,3] (eV/Å) and, for labelled data,
    ``charges`` [N] (e).  The one definition of the loss terms (training steps and validation errors)."""
    res = {"energy": (out["energy"] - batch["energy_ref"]) / batch["num_atoms"], "forces": out["forces"] - batch["forces_ref"]}
    if "charges_ref" in batch:
        res["charges"] = out["charges"] - batch["charges_ref"]
    return res


def weighted_loss(cfg: TrainConfig, mse: Dict[str, Any]):
    """The training loss from the mean squared residuals (tensors in a step, floats in validation)."""
    loss = cfg.energy_weight * mse["energy"] + cfg.forces_weight * mse["forces"]
    if "charges" in mse and cfg.charges_weight > 0:
        loss = loss + cfg.charges_weight * mse["charges"]
    return loss


def _errors(model, structures: Sequence[Structure], batch_size: int, dtype) -> Dict[str, float]:
    """Energy MAE per atom (meV/atom), force MAE/RMSE (meV/Å), charge MAE (e) and the loss terms."""
    model.eval()
    de, df, dq = [], [], []
    for start in range(0, len(structures), batch_size):
        batch = collate(structures[start:start + batch_size], dtype)
        r = residuals(model(model_inputs(batch), True), batch)
        de.append(r["energy"].detach())
        df.append(r["forces"].detach())
        if "charges" in r:
            dq.append(r["charges"].detach())
    de_t, df_t = torch.cat(de).double(), torch.cat(df).double()
    res = {
        "energy_mae_meV_per_atom": 1000 * de_t.abs().mean().item(),
        "forces_mae_meV_per_A": 1000 * df_t.abs().mean().item(),
        "forces_rmse_meV_per_A": 1000 * df_t.pow(2).mean().sqrt().item(),
        "energy_mse": de_t.pow(2).mean().item(),
        "forces_mse": df_t.pow(2).mean().item(),
    }
    if dq:
        dq_t = torch.cat(dq).double()
        res["charges_mae_e"] = dq_t.abs().mean().item()
        res["charges_mse"] = dq_t.pow(2).mean().item()
    return res


def _loss_value(cfg: TrainConfig, err: Dict[str, float]) -> float:
    """The training loss over a whole set, from :func:`_errors`."""
    return float(weighted_loss(cfg, {k: err[f"{k}_mse"] for k in ("energy", "forces", "charges") if f"{k}_mse" in err}))


# ------------------------------------------------------------------------------------------ trainer
class Trainer:
    def __init__(self, cfg: TrainConfig, progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        self.out = Path(cfg.output)
        self.dtype = torch_dtype(cfg.dtype)

    def _data(self):
        structures = load_structures(self.cfg)
        elements = ModelConfig.from_dict(dict(self.cfg.model)).elements
        index = SpeciesIndex(elements)
        for s in structures:
            index.check(s.numbers)
        missing = [s.info["source"] for s in structures if s.energy is None or s.forces is None]
        if missing:
            raise DataFileError(f"{len(missing)} structures lack energy or forces labels (e.g. {missing[0]}); check "
                                "energy_key/gradient_key or label them")
        return split_by_molecule(structures, self.cfg.valid_fraction, self.cfg.test_fraction, self.cfg.seed,
                                 self.cfg.valid_molecules, self.cfg.test_molecules), elements

    def _trainable(self, model):
        """Parameters to optimise: with given (non-least-squares) reference energies the per-element
        shifts stay fixed, so an isolated atom's energy is exactly its reference."""
        fixed = self.cfg.reference_energies != "least_squares"
        return [p for n, p in model.named_parameters() if not (fixed and n == "per_species_shift")]

    def _fresh_state(self, train, elements):
        torch.manual_seed(self.cfg.seed)
        model = build_model(dict(self.cfg.model), dtype=self.dtype)
        ref = self.cfg.reference_energies
        if ref == "least_squares":
            e_ref = reference_energies(train, elements)
        else:
            if ref == "gfn2-xtb-atoms":
                from ..data.generate import isolated_atom_energies

                ref = isolated_atom_energies(elements)
            missing = [e for e in elements if e not in ref]
            if missing:
                raise ConfigError(f"reference_energies lacks element(s) {missing}; give an energy (eV) for every model element")
            e_ref = np.array([float(ref[e]) for e in elements])
        f_rms = float(np.sqrt(np.mean(np.concatenate([s.forces.reshape(-1) for s in train]) ** 2)))
        with torch.no_grad():
            model.per_species_shift.copy_(torch.tensor(e_ref, dtype=self.dtype))
            model.per_species_scale.fill_(max(f_rms, 1e-3))
        opt = torch.optim.AdamW(self._trainable(model), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        return {
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "ema": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "step": 0, "epoch": 0, "batch_in_epoch": 0, "best_val": float("inf"), "bad_epochs": 0,
            "history": [], "config": self.cfg.to_dict(), "reference_energies": e_ref.tolist(), "elements": list(elements),
            "done": False, "epoch_losses": [],
        }

    def _check_resume(self, state):
        old = dict(state["config"])
        new = self.cfg.to_dict()
        for key in ("stop_after_steps",):
            old.pop(key, None)
            new.pop(key, None)
        if old != new:
            diff = sorted(k for k in new if old.get(k) != new.get(k))
            raise ResumeError(
                f"{self.out / CHECKPOINT} was written with different settings ({', '.join(diff)}); use a new output "
                "folder, or restore the original config to resume"
            )

    def _write_metrics(self, history: List[Dict[str, float]]):
        if not history:
            return
        with atomic_path(self.out / METRICS) as tmp:
            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=list(history[0]))
                w.writeheader()
                w.writerows(history)

    def run(self) -> Dict[str, object]:
        from tqdm.auto import tqdm

        cfg = self.cfg
        torch.set_num_threads(cfg.threads)
        self.out.mkdir(parents=True, exist_ok=True)
        (train, valid, test), elements = self._data()
        ckpt = self.out / CHECKPOINT
        if ckpt.exists():
            state = load_checkpoint(ckpt)
            self._check_resume(state)
        else:
            state = self._fresh_state(train, elements)
        model = build_model(dict(cfg.model), dtype=self.dtype)
        model.load_state_dict(state["model"])
        opt = torch.optim.AdamW(self._trainable(model), lr=cfg.lr, weight_decay=cfg.weight_decay)
        opt.load_state_dict(state["optimizer"])
        ema = state["ema"]
        steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
        total = cfg.max_steps if cfg.max_steps is not None else cfg.max_epochs * steps_per_epoch
        valid_set = valid if valid else train

        def save():
            state.update(model=model.state_dict(), optimizer=opt.state_dict(), ema=ema)
            _atomic_save(state, ckpt)

        def ema_model():  # e3nn modules hold ScriptFunctions, which cannot be deep-copied: rebuild instead
            m = build_model(dict(cfg.model), dtype=self.dtype)
            m.load_state_dict(ema)
            return m

        def diverged(what: str, idx, n_batches: int):
            where = ", ".join(f"{train[i].info.get('source', '?')} ({train[i].name})" for i in idx)
            bar.close()
            raise TrainingDivergedError(
                f"training {what} at step {state['step'] + 1} (epoch {state['epoch']}, batch {state['batch_in_epoch'] + 1} "
                f"of {n_batches}: structures {where}); stopped before the update, nothing saved from it. The labels are "
                f"finite, so the model diverged: lower lr ({cfg.lr:g}) or grad_clip ({cfg.grad_clip:g}) and train into a "
                "new output folder")

        bar = tqdm(total=total, initial=state["step"], desc="train", unit="step", disable=not self.progress)
        interrupted = False
        t0 = time.perf_counter()
        while not state["done"] and state["epoch"] < cfg.max_epochs and state["step"] < total:
            perm = np.random.default_rng([cfg.seed, state["epoch"]]).permutation(len(train))
            batches = [perm[i:i + cfg.batch_size] for i in range(0, len(train), cfg.batch_size)]
            model.train()
            losses = state.setdefault("epoch_losses", [])  # checkpointed: the epoch mean survives a resume
            while state["batch_in_epoch"] < len(batches) and state["step"] < total:
                idx = batches[state["batch_in_epoch"]]
                batch = collate([train[i] for i in idx], self.dtype)
                for g in opt.param_groups:
                    g["lr"] = _lr(cfg, state["step"], total)
                r = residuals(model(model_inputs(batch), True), batch)
                loss = weighted_loss(cfg, {k: (v ** 2).mean() for k, v in r.items()})
                opt.zero_grad(set_to_none=True)
                if not torch.isfinite(loss):
                    diverged(f"loss is {loss.item()}", idx, len(batches))
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                if not torch.isfinite(grad_norm):
                    diverged(f"gradient norm is {grad_norm.item()}", idx, len(batches))
                opt.step()
                with torch.no_grad():
                    for k, v in model.state_dict().items():
                        if v.dtype.is_floating_point:
                            ema[k].mul_(cfg.ema_decay).add_(v, alpha=1.0 - cfg.ema_decay)
                        else:
                            ema[k].copy_(v)
                losses.append(loss.item())
                state["step"] += 1
                state["batch_in_epoch"] += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4g}", epoch=state["epoch"])
                if cfg.stop_after_steps is not None and state["step"] >= cfg.stop_after_steps:
                    interrupted = True
                    break
                if state["step"] % cfg.checkpoint_every == 0:
                    save()
            if interrupted:
                break
            # end of epoch: validate the EMA weights, early stopping, best model
            err = _errors(ema_model(), valid_set, cfg.batch_size, self.dtype)
            val = _loss_value(cfg, err)
            if not math.isfinite(val):
                raise TrainingDivergedError(
                    f"validation loss of the EMA weights is {val} after epoch {state['epoch']} (step {state['step']}); "
                    f"nothing saved from it: lower lr ({cfg.lr:g}) or grad_clip ({cfg.grad_clip:g}) and train into a new output folder")
            state["history"].append({"epoch": state["epoch"], "step": state["step"], "lr": _lr(cfg, state["step"], total),
                                     "train_loss": float(np.mean(losses)) if losses else float("nan"), "val_loss": val,
                                     **{f"val_{k}": v for k, v in err.items() if not k.endswith("mse")}})
            if val < state["best_val"]:
                state["best_val"] = val
                state["bad_epochs"] = 0
                _atomic_save({"config": cfg.to_dict(), "model": {k: v.clone() for k, v in ema.items()}, "epoch": state["epoch"], "val_loss": val}, self.out / BEST)
            else:
                state["bad_epochs"] += 1
                if state["bad_epochs"] >= cfg.patience:
                    state["done"] = True
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
            state["epoch_losses"] = []
            self._write_metrics(state["history"])
            save()
        bar.close()
        save()
        if interrupted:
            return {"status": "interrupted", "step": state["step"]}
        best = load_checkpoint(self.out / BEST)
        final = build_model(dict(cfg.model), dtype=self.dtype)
        final.load_state_dict(best["model"])
        report = {
            "status": "finished", "steps": state["step"], "epochs": state["epoch"], "wall_s_this_run": time.perf_counter() - t0,
            "split": {"train": len(train), "valid": len(valid), "test": len(test),
                      "test_molecules": sorted({s.name for s in test})},
            "test": _errors(final, test, cfg.batch_size, self.dtype) if test else {},
            "valid": _errors(final, valid_set, cfg.batch_size, self.dtype),
            "data": [{"path": p, "sha256": file_sha256(p)} for p in cfg.data],
            "reference_energies_eV": dict(zip(state["elements"], state["reference_energies"])),
        }
        for part in ("test", "valid"):
            report[part] = {k: v for k, v in report[part].items() if not k.endswith("mse")}
        (self.out / REPORT).write_text(json.dumps(report, indent=1))
        return report


def deploy_run(run_dir, output, extra_provenance: Optional[dict] = None) -> Dict[str, object]:
    """Write the best (EMA) weights of a training run as a model file with provenance and metrics."""
    from ..deploy import save_model

    run_dir = Path(run_dir)
    best = run_dir / BEST
    if not best.is_file():
        raise DataFileError(f"{best} not found: train first (`openmlip train CONFIG.yaml`), or point at the run folder")
    ckpt = load_checkpoint(best)
    cfg = TrainConfig(**ckpt["config"])
    dtype = torch_dtype(cfg.dtype)
    model = build_model(dict(cfg.model), dtype=dtype)
    model.load_state_dict(ckpt["model"])
    report = json.loads((run_dir / REPORT).read_text()) if (run_dir / REPORT).is_file() else {}
    provenance = {"data": report.get("data", [{"path": p} for p in cfg.data]), "split": report.get("split", {}),
                  "training": {k: v for k, v in cfg.to_dict().items() if k not in ("data", "model")}, **(extra_provenance or {})}
    return save_model(model, output, provenance=provenance, metrics={"test": report.get("test", {}), "valid": report.get("valid", {})})
