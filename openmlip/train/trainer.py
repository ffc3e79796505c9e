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

import contextlib
import csv
import json
import math
import pickle
import resource
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import keys as K
from .._io import atomic_path, check_not_input, writable_dir, writable_file
from ..data import Structure
from ..data.dataset import ConformerSet, LabelKeys
from ..data.split import split_by_molecule
from ..deploy import torch_dtype
from ..errors import ConfigError, DataFileError, ResumeError, TrainingDivergedError, first_line  # noqa: F401 (re-exported)
from ..metrics import TERMS, error_metrics, residuals
from ..models import build_model
from ..models.config import ModelConfig
from ..nn.embedding import SpeciesIndex
from .batching import collate, model_inputs, to_device
from ..store import RunStore
from .config import RESUMABLE_CHANGES, TrainConfig
from .distributed import Process, process

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
METRICS = "metrics.csv"
REPORT = "report.json"


# ---------------------------------------------------------------------------------------------- data
def open_data(cfg: TrainConfig, cache_dir: Optional[Path] = None, sha256: Optional[List[str]] = None,
              progress: bool = False) -> ConformerSet:
    """The conformers of ``cfg.data`` (HDF5 files indexed once and read lazily; see :mod:`openmlip.data.dataset`)."""
    keys = LabelKeys(energy=cfg.energy_key, gradient=cfg.gradient_key, charges=cfg.charges_key)
    return ConformerSet(cfg.data, keys, cache_dirs=[cache_dir] if cache_dir else (), progress=progress, sha256=sha256)


def _composition(numbers: Sequence[np.ndarray], elements: Sequence[str]) -> np.ndarray:
    """[len(numbers), len(elements)] atom counts per element."""
    index = SpeciesIndex(elements)
    a = np.zeros((len(numbers), len(elements)))
    for k, z in enumerate(numbers):
        np.add.at(a[k], index(torch.as_tensor(z)).numpy(), 1.0)
    return a


def fit_reference_energies(composition: np.ndarray, mean_energy: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Per-element energies (eV) by least squares, E ≈ Σ_s n_s e_s over every conformer, from per-molecule
    sums: ``count`` conformers of one composition with mean energy ``mean_energy`` weigh as √count rows (the
    same minimiser as one row per conformer).  Elements absent from the data get 0."""
    w = np.sqrt(np.asarray(count, dtype=float))
    sol, *_ = np.linalg.lstsq(composition * w[:, None], np.asarray(mean_energy, dtype=float) * w, rcond=None)
    sol[composition.sum(0) == 0] = 0.0
    return sol


def reference_energies(structures: Sequence[Structure], elements: Sequence[str]) -> np.ndarray:
    """Per-element energies (eV) by least squares: E ≈ Σ_s n_s e_s."""
    return fit_reference_energies(_composition([s.numbers for s in structures], elements),
                                  np.array([s.energy for s in structures]), np.ones(len(structures)))


# ------------------------------------------------------------------------------------------ helpers
def _warn_unfitted_elements(data: ConformerSet, parts, elements, init_model: Optional[str] = None) -> None:
    """Least-squares reference energies come from the training molecules: an element found only in held-out ones
    keeps an unfitted energy, and their energy errors say nothing about the model; when fine-tuning, an element
    of the model found in no training molecule keeps the starting model's reference energy (another method's)."""
    from ase.data import chemical_symbols

    from ..nn.embedding import normalize_elements

    trained = {int(z) for g in parts[0] for z in data.groups[g].header.numbers}
    if init_model is not None:
        kept = [e for e in normalize_elements(elements) if chemical_symbols.index(e) not in trained]
        if kept:
            warnings.warn(f"fine-tuning: element(s) {', '.join(kept)} of {Path(init_model).name} occur in no training "
                          "molecule and keep that model's reference energies, which may belong to another method: "
                          "energies of molecules with them mix two references; add training molecules with them",
                          UserWarning, stacklevel=3)
    for part, what in ((parts[1], "validation"), (parts[2], "test")):
        missing = {}
        for g in part:
            for z in sorted({int(z) for z in data.groups[g].header.numbers} - trained):
                missing.setdefault(chemical_symbols[z], []).append(data.groups[g].header.name)
        for element, names in missing.items():
            warnings.warn(f"element {element} occurs in {what} molecules ({', '.join(sorted(set(names)))}) but in no training "
                          f"molecule: its reference energy is not fitted and their energy errors are meaningless (forces "
                          f"are fine); train on a molecule with {element}, or hold out another one", UserWarning, stacklevel=3)


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


def weighted_loss(cfg: TrainConfig, mse: Dict[str, Any]):
    """The training loss from the mean squared residuals (tensors in a step, floats in validation)."""
    loss = cfg.energy_weight * mse["energy"] + cfg.forces_weight * mse["forces"]
    if "charges" in mse and cfg.charges_weight > 0:
        loss = loss + cfg.charges_weight * mse["charges"]
    return loss


def _errors(model, data, batch_size: int, dtype, indices=None, proc: Optional[Process] = None) -> Dict[str, float]:
    """Energy MAE per atom (meV/atom), force MAE/RMSE (meV/Å), charge MAE (e) and the loss terms
    (:func:`~openmlip.metrics.error_metrics`) over the conformers ``indices`` of ``data`` (a ConformerSet or a list
    of structures; all by default).  Several processes each take every ``world_size``-th conformer and the sums
    are added up."""
    proc = proc or Process()
    model.eval()
    idx = np.arange(len(data)) if indices is None else np.asarray(indices)
    mine = idx[proc.rank::proc.world_size]
    sums = torch.zeros(3 * len(TERMS), dtype=torch.float64)
    for start in range(0, len(mine), batch_size):
        batch = to_device(collate([data[int(i)] for i in mine[start:start + batch_size]], dtype), proc.device)
        r = {k: v.detach().double().cpu() for k, v in residuals(model(model_inputs(batch), True), batch).items()}
        for k, term in enumerate(TERMS):
            if term in r:
                sums[3 * k:3 * k + 3] += torch.stack([torch.tensor(float(r[term].numel()), dtype=torch.float64),
                                                      r[term].abs().sum(), r[term].pow(2).sum()])
    s = proc.all_reduce_sum(sums).tolist()
    return error_metrics({term: tuple(s[3 * k:3 * k + 3]) for k, term in enumerate(TERMS)}, mse=True)


def _loss_value(cfg: TrainConfig, err: Dict[str, float]) -> float:
    """The training loss over a whole set, from :func:`_errors`."""
    return float(weighted_loss(cfg, {k: err[f"{k}_mse"] for k in ("energy", "forces", "charges") if f"{k}_mse" in err}))


def _cpu(obj):
    """A copy of a (nested) state with every tensor on the CPU (checkpoints load anywhere)."""
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu(v) for v in obj]
    return obj


class _Conformers(torch.utils.data.Dataset):
    """Training conformers for a DataLoader: position ``i`` of the training part -> its Structure."""

    def __init__(self, data: ConformerSet, indices: np.ndarray):
        self.data, self.indices = data, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Structure:
        return self.data[int(self.indices[i])]


# ------------------------------------------------------------------------------------------ trainer
class Trainer:
    """``Trainer(cfg).run()``: one process, or one of ``torchrun``'s (see :mod:`openmlip.train.distributed`).

    With W processes each step takes ``W * batch_size`` conformers; process r computes on the r-th part and
    its loss share is normalised by the whole batch's counts, so the averaged gradient is exactly that of
    one process with batch ``W * batch_size`` (tested).  Process 0 writes checkpoints, metrics and reports.
    """

    def __init__(self, cfg: TrainConfig, progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        self.out = Path(cfg.output)
        self.dtype = torch_dtype(cfg.dtype)
        self.proc = Process()

    # ---------------------------------------------------------------------------------- set-up
    def _data(self) -> Tuple[ConformerSet, Tuple[np.ndarray, np.ndarray, np.ndarray], List[str]]:
        """The data (process 0 indexes it first; the others then read its index) and the split's conformer
        indices (train, valid, test)."""
        proc = self.proc
        data = open_data(self.cfg, self.out, progress=self.progress) if proc.is_main else None
        sha = proc.broadcast(data.sha256 if data is not None else None)
        if data is None:
            data = open_data(self.cfg, self.out, sha256=sha)
        elements = ModelConfig.from_dict(dict(self.cfg.model)).elements
        index = SpeciesIndex(elements)
        for g in data.groups:
            index.check(g.header.numbers)
        parts = split_by_molecule(range(len(data.groups)), self.cfg.valid_fraction, self.cfg.test_fraction, self.cfg.seed,
                                  self.cfg.valid_molecules, self.cfg.test_molecules, key=lambda k: data.groups[k].header.name)
        if self.cfg.reference_energies == "least_squares" and proc.is_main:
            _warn_unfitted_elements(data, parts, elements, self.cfg.init_model)
        return data, tuple(data.conformers_of(p) for p in parts), elements

    def _trainable(self, model):
        """Parameters to optimise: with given (non-least-squares) reference energies the per-element
        shifts stay fixed, so an isolated atom's energy is exactly its reference."""
        fixed = self.cfg.reference_energies != "least_squares"
        return [p for n, p in model.named_parameters() if not (fixed and n == "per_species_shift")]

    def _fresh_state(self, data: ConformerSet, train: np.ndarray, elements):
        torch.manual_seed(self.cfg.seed)
        model = build_model(dict(self.cfg.model), dtype=self.dtype)
        groups = [data.groups[g] for g in sorted(set(data.group_of(train).tolist()))]
        ref = self.cfg.reference_energies
        if ref == "least_squares":
            e_ref = fit_reference_energies(_composition([g.header.numbers for g in groups], elements),
                                           np.array([g.energy_mean for g in groups]), np.array([g.count for g in groups]))
        else:
            if ref == "gfn2-xtb-atoms":
                from ..data.xtb import isolated_atom_energies

                ref = isolated_atom_energies(elements)
            missing = [e for e in elements if e not in ref]
            if missing:
                raise ConfigError(f"reference_energies lacks element(s) {missing}; give an energy (eV) for every model element")
            e_ref = np.array([float(ref[e]) for e in elements])
        f_rms = math.sqrt(sum(g.force_sq_sum for g in groups) / sum(3 * len(g.header.numbers) * g.count for g in groups))
        if self.cfg.init_model is not None:
            e_ref = self._init_from_file(model, data, train, elements)
        else:
            with torch.no_grad():
                model.per_species_shift.copy_(torch.tensor(e_ref, dtype=self.dtype))
                model.per_species_scale.fill_(max(f_rms, 1e-3))
        opt = torch.optim.AdamW(self._trainable(model), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        return {
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "ema": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "step": 0, "epoch": 0, "batch_in_epoch": 0, "best_val": float("inf"), "bad_epochs": 0,
            "history": [], "config": self.cfg.to_dict(), "reference_energies": e_ref.tolist(), "elements": list(elements),
            "done": False, "epoch_losses": [], "world_size": self.proc.world_size,
        }

    def _init_from_file(self, model, data: ConformerSet, train: np.ndarray, elements, per_group: int = 8) -> np.ndarray:
        """Load ``init_model``'s weights into ``model`` and refit its per-element shifts to this data: the file's
        shifts plus a least-squares fit of (label − model) over the training molecules (up to ``per_group``
        conformers each).  Returns the new shifts (eV)."""
        from ..deploy import load_model
        from ..models import rebuild_model

        module, meta = load_model(self.cfg.init_model)
        if list(meta["elements"]) != list(elements):
            raise ConfigError(f"init_model {self.cfg.init_model} knows elements {meta['elements']}, this run {list(elements)}")
        model.load_state_dict(rebuild_model(module, meta["config"]).to(self.dtype).state_dict())
        model.eval()
        rows = data.group_of(train)
        groups = sorted(set(rows.tolist()))
        residual = []
        for g in groups:
            picks = train[rows == g][:per_group]
            batch = collate([data[int(i)] for i in picks], self.dtype)
            predicted = model(model_inputs(batch), False)[K.ENERGY].detach().double().numpy()
            residual.append(float(np.mean(batch[K.ENERGY_REF].double().numpy() - predicted)))
        shift = fit_reference_energies(_composition([data.groups[g].header.numbers for g in groups], elements),
                                       np.array(residual), np.array([data.groups[g].count for g in groups]))
        e_ref = model.per_species_shift.detach().double().numpy() + shift
        with torch.no_grad():
            model.per_species_shift.copy_(torch.tensor(e_ref, dtype=self.dtype))
        model.train()
        return e_ref

    def _write_metrics(self, history: List[Dict[str, float]]):
        if not history or not self.proc.is_main:
            return
        with atomic_path(self.out / METRICS) as tmp:
            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=list(history[0]))
                w.writeheader()
                w.writerows(history)

    def _save(self, obj, path: Path) -> None:
        if self.proc.is_main:
            _atomic_save(_cpu(obj), path)

    # ---------------------------------------------------------------------------------- batches
    def _batches(self, n_train: int, epoch: int) -> List[np.ndarray]:
        """The epoch's batches (positions in the training part): a pure function of (seed, epoch); each has
        ``world_size * batch_size`` conformers (the last fewer; one with fewer than ``world_size`` is skipped)."""
        perm = np.random.default_rng([self.cfg.seed, epoch]).permutation(n_train)
        size = self.cfg.batch_size * self.proc.world_size
        batches = [perm[i:i + size] for i in range(0, n_train, size)]
        if batches and len(batches[-1]) < self.proc.world_size:
            batches.pop()
        return batches

    def _shard(self, batch: np.ndarray) -> np.ndarray:
        return np.array_split(batch, self.proc.world_size)[self.proc.rank]

    def _loader(self, data: ConformerSet, train: np.ndarray, batches: List[np.ndarray]):
        """This process's part of each batch, collated (in ``loader_workers`` background processes if > 0)."""
        return torch.utils.data.DataLoader(
            _Conformers(data, train), batch_sampler=[self._shard(b).tolist() for b in batches],
            collate_fn=partial(collate, dtype=self.dtype), num_workers=self.cfg.loader_workers)

    # ---------------------------------------------------------------------------------- run
    def run(self) -> Dict[str, object]:
        torch.set_num_threads(self.cfg.threads)
        if self.cfg.matmul_precision != "highest":
            torch.set_float32_matmul_precision(self.cfg.matmul_precision)
        with process(self.cfg.device) as self.proc:
            try:
                return self._run()
            finally:
                self.proc = Process(device=self.proc.device)

    def _run(self) -> Dict[str, object]:
        cfg, proc = self.cfg, self.proc
        writable_dir(self.out, "training output")  # before the data are read and indexed
        store = RunStore(self.out, "training", {**cfg.to_dict(), "world_size": proc.world_size},
                         may_change=RESUMABLE_CHANGES, flag="output", hints={"world_size": (
                             "training processes: the batches would differ; resume with as many, torchrun "
                             "--nproc_per_node={old} ..., or train into a new output folder")})
        with store.lock("train") if proc.is_main else contextlib.nullcontext():
            return self._train(store)

    def _train(self, store: RunStore) -> Dict[str, object]:
        from tqdm.auto import tqdm

        cfg, proc = self.cfg, self.proc
        data, (train, valid, test), elements = self._data()
        ckpt = self.out / CHECKPOINT
        if ckpt.exists():
            state = load_checkpoint(ckpt)
            store.check({**state["config"], "world_size": int(state.get("world_size", 1))}, ckpt)
        else:
            state = self._fresh_state(data, train, elements)
        model = build_model(dict(cfg.model), dtype=self.dtype).to(proc.device)
        model.load_state_dict(state["model"])
        opt = torch.optim.AdamW(self._trainable(model), lr=cfg.lr, weight_decay=cfg.weight_decay)
        opt.load_state_dict(state["optimizer"])
        ema = {k: v.to(proc.device) for k, v in state["ema"].items()}
        net = model
        if proc.distributed:
            # some parameters take part only in some batches (e.g. the smoothmax temperature: charged structures)
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[proc.device] if proc.device.type == "cuda" else None, find_unused_parameters=True)
        steps_per_epoch = len(self._batches(len(train), 0))
        total = cfg.max_steps if cfg.max_steps is not None else cfg.max_epochs * steps_per_epoch
        valid_set = valid if len(valid) else train

        def save():
            state.update(model=model.state_dict(), optimizer=opt.state_dict(), ema=ema)
            self._save(state, ckpt)

        def ema_model():  # e3nn modules hold ScriptFunctions, which cannot be deep-copied: rebuild instead
            m = build_model(dict(cfg.model), dtype=self.dtype).to(proc.device)
            m.load_state_dict(ema)
            return m

        def diverged(what: str, batch: np.ndarray, n_batches: int):
            where = ", ".join(f"{s.info.get('source', '?')} ({s.name})" for s in (data[int(i)] for i in train[batch]))
            bar.close()
            raise TrainingDivergedError(
                f"training {what} at step {state['step'] + 1} (epoch {state['epoch']}, batch {state['batch_in_epoch'] + 1} "
                f"of {n_batches}: structures {where}); stopped before the update, nothing saved from it. The labels are "
                f"finite, so the model diverged: lower lr ({cfg.lr:g}) or grad_clip ({cfg.grad_clip:g}) and train into a "
                "new output folder")

        bar = tqdm(total=total, initial=state["step"], desc="train", unit="step", disable=not (self.progress and proc.is_main))
        interrupted = False
        t0 = time.perf_counter()
        clock = {"data_s": 0.0, "step_s": 0.0, "conformers": 0}
        while not state["done"] and state["epoch"] < cfg.max_epochs and state["step"] < total:
            batches = self._batches(len(train), state["epoch"])
            todo = batches[state["batch_in_epoch"]:]
            model.train()
            losses = state.setdefault("epoch_losses", [])  # checkpointed: the epoch mean survives a resume
            loader = iter(self._loader(data, train, todo))
            for chunk in todo:
                if state["step"] >= total:
                    break
                t_start = time.perf_counter()
                batch = to_device(next(loader), proc.device)
                clock["data_s"] += time.perf_counter() - t_start
                for g in opt.param_groups:
                    g["lr"] = _lr(cfg, state["step"], total)
                atoms = int(data.num_atoms(train[chunk]).sum())  # the whole batch's counts, on every process
                if not data.has_charges(train[chunk]).all():
                    batch.pop(K.CHARGES_REF, None)
                count = {"energy": len(chunk), "forces": 3 * atoms, "charges": atoms}
                r = residuals(net(model_inputs(batch), True), batch)
                share = weighted_loss(cfg, {k: v.pow(2).sum() / count[k] for k, v in r.items()})
                loss = proc.all_reduce_sum(share.detach().clone())  # the loss of the whole batch
                opt.zero_grad(set_to_none=True)
                if not torch.isfinite(loss):
                    diverged(f"loss is {loss.item()}", chunk, len(batches))
                (share * proc.world_size).backward()  # DDP averages gradients over processes: this sums the shares
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                if not torch.isfinite(grad_norm):
                    diverged(f"gradient norm is {grad_norm.item()}", chunk, len(batches))
                opt.step()
                with torch.no_grad():
                    for k, v in model.state_dict().items():
                        if v.dtype.is_floating_point:
                            ema[k].mul_(cfg.ema_decay).add_(v, alpha=1.0 - cfg.ema_decay)
                        else:
                            ema[k].copy_(v)
                losses.append(loss.item())
                clock["step_s"] += time.perf_counter() - t_start
                clock["conformers"] += len(chunk)
                state["step"] += 1
                state["batch_in_epoch"] += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4g}", epoch=state["epoch"])
                if cfg.stop_after_steps is not None and state["step"] >= cfg.stop_after_steps:
                    interrupted = True
                    break
                if state["step"] % cfg.checkpoint_every == 0:
                    save()
            del loader
            if interrupted:
                break
            self._end_epoch(state, ema_model(), data, valid_set, total, losses)
            save()
        bar.close()
        save()
        if interrupted:
            return {"status": "interrupted", "step": state["step"], **({"rank": proc.rank} if proc.distributed else {})}
        return self._report(state, data, (train, valid, test), valid_set, time.perf_counter() - t0, clock)

    def _end_epoch(self, state, ema_model, data, valid_set, total, losses) -> None:
        """Validate the EMA weights; early stopping; best model; metrics."""
        cfg = self.cfg
        err = _errors(ema_model, data, cfg.batch_size, self.dtype, valid_set, self.proc)
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
            self._save({"config": cfg.to_dict(), "model": ema_model.state_dict(), "epoch": state["epoch"], "val_loss": val},
                       self.out / BEST)
        else:
            state["bad_epochs"] += 1
            if state["bad_epochs"] >= cfg.patience:
                state["done"] = True
        state["epoch"] += 1
        state["batch_in_epoch"] = 0
        state["epoch_losses"] = []
        self._write_metrics(state["history"])

    def _report(self, state, data: ConformerSet, parts, valid_set, wall_s: float, clock) -> Dict[str, object]:
        """Test and validation errors of the best weights, data provenance and throughput; ``report.json``."""
        cfg, proc = self.cfg, self.proc
        train, valid, test = parts
        proc.barrier()  # best.pt is written by process 0
        best = load_checkpoint(self.out / BEST)
        final = build_model(dict(cfg.model), dtype=self.dtype).to(proc.device)
        final.load_state_dict(best["model"])
        test_names = sorted({data.groups[g].header.name for g in set(data.group_of(test).tolist())})
        report = {
            "status": "finished", "steps": state["step"], "epochs": state["epoch"], "wall_s_this_run": wall_s,
            "split": {"train": len(train), "valid": len(valid), "test": len(test), "test_molecules": test_names},
            "test": _errors(final, data, cfg.batch_size, self.dtype, test, proc) if len(test) else {},
            "valid": _errors(final, data, cfg.batch_size, self.dtype, valid_set, proc),
            "data": [{"path": str(p), "sha256": h} for p, h in zip(data.paths, data.sha256)],
            "reference_energies_eV": dict(zip(state["elements"], state["reference_energies"])),
            "device": str(proc.device), "processes": proc.world_size, **({"rank": proc.rank} if proc.distributed else {}),
            "throughput": {
                "conformers_per_s": clock["conformers"] / clock["step_s"] if clock["step_s"] else None,
                "data_loading_fraction": clock["data_s"] / clock["step_s"] if clock["step_s"] else None,
                "peak_rss_MB_process0": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            },
        }
        for part in ("test", "valid"):
            report[part] = {k: v for k, v in report[part].items() if not k.endswith("mse")}
        if proc.is_main:
            with atomic_path(self.out / REPORT) as tmp:
                Path(tmp).write_text(json.dumps(report, indent=1))
        data.close()
        return report


# training settings that describe the machine and folders of a run, not the model: left out of a model's provenance
MACHINE_SETTINGS = ("data", "model", "output", "device", "loader_workers", "stop_after_steps")


def deploy_run(run_dir, output, extra_provenance: Optional[dict] = None) -> Dict[str, object]:
    """Write the best (EMA) weights of a training run as a model file with provenance and metrics."""
    from .._io import file_sha256
    from ..deploy import save_model

    run_dir = Path(run_dir)
    check_not_input(output, [run_dir], "output")
    writable_file(output, "model file")
    best = run_dir / BEST
    if not best.is_file():
        raise DataFileError(f"{best} not found: train first (`openmlip train CONFIG.yaml`), or point at the run folder")
    ckpt = load_checkpoint(best)
    cfg = TrainConfig(**ckpt["config"])
    dtype = torch_dtype(cfg.dtype)
    model = build_model(dict(cfg.model), dtype=dtype)
    model.load_state_dict(ckpt["model"])
    report = json.loads((run_dir / REPORT).read_text()) if (run_dir / REPORT).is_file() else {}
    # files by name and hash, not by the folders of the machine that trained (those belong to no user of the file)
    data = [{"file": Path(d["path"]).name, "sha256": d.get("sha256")} for d in report.get("data", [{"path": p} for p in cfg.data])]
    training = {k: v for k, v in cfg.to_dict().items() if k not in MACHINE_SETTINGS}
    if cfg.init_model is not None:  # by name and hash, like the data
        start = Path(cfg.init_model)
        training["init_model"] = {"file": start.name, "sha256": file_sha256(start) if start.is_file() else None}
    provenance = {"data": data, "split": report.get("split", {}), "training": training, **(extra_provenance or {})}
    return save_model(model, output, provenance=provenance, metrics={"test": report.get("test", {}), "valid": report.get("valid", {})})
