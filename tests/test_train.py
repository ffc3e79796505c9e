"""Trainer: loss goes down, deploy gives a loadable model, resume equals an uninterrupted run.

Labels come from ASE's EMT potential (a real, if crude, reference potential that ships with ase),
so these tests exercise the training machinery without a QM engine.
"""
from __future__ import annotations


import json

import numpy as np
import pytest
import torch
import yaml
from ase.build import molecule
from ase.calculators.emt import EMT

from openmlip.data import Structure, write_spice
from openmlip.deploy import load_model
from openmlip.errors import ConfigError
from openmlip.train import Trainer, TrainConfig, deploy_run, reference_energies, split_by_molecule

MOLECULES = ["H2O", "NH3", "CH4", "CH3OH", "C2H6", "HCOOH", "CH3CHO", "C2H4"]


def _dataset(path, per_molecule=6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for name in MOLECULES:
        base = molecule(name)
        for _ in range(per_molecule):
            atoms = base.copy()
            atoms.positions += rng.normal(scale=0.06, size=atoms.positions.shape)
            atoms.calc = EMT()
            out.append(Structure(numbers=atoms.numbers, positions=atoms.positions.copy(), energy=atoms.get_potential_energy(),
                                 forces=atoms.get_forces(), name=name, subset="emt"))
    write_spice(path, out)
    return out


def _config(tmp_path, data, **kw):
    base = dict(data=[str(data)], output=str(tmp_path / "run"), batch_size=6, max_epochs=4, lr=5e-3, checkpoint_every=3,
                valid_fraction=0.15, test_fraction=0.15, ema_decay=0.9, threads=1,
                model=dict(elements=["H", "C", "N", "O"], num_channels=4, latent_dim=16, radial_mlp=[16], num_basis=6))
    base.update(kw)
    return TrainConfig(**base)


def test_split_is_by_molecule_and_reference_energies(tmp_path):
    data = _dataset(tmp_path / "d.h5", per_molecule=3)
    train, valid, test = split_by_molecule(data, 0.15, 0.15, seed=1)
    names = [{s.name for s in part} for part in (train, valid, test)]
    assert names[0].isdisjoint(names[1]) and names[0].isdisjoint(names[2]) and names[1].isdisjoint(names[2])
    assert len(train) + len(valid) + len(test) == len(data) and names[2]
    e = reference_energies(data, ["H", "C", "N", "O"])
    counts = np.array([[np.sum(s.numbers == z) for z in (1, 6, 7, 8)] for s in data])
    resid = counts @ e - np.array([s.energy for s in data])
    # least squares: residual orthogonal to the design matrix
    np.testing.assert_allclose(counts.T @ resid, 0.0, atol=1e-8)


def test_tiny_training_lowers_loss_and_deploys(tmp_path):
    data = tmp_path / "d.h5"
    _dataset(data)
    cfg = _config(tmp_path, data)
    report = Trainer(cfg, progress=False).run()
    assert report["status"] == "finished"
    hist = [float(r["val_loss"]) for r in json_rows(tmp_path / "run" / "metrics.csv")]
    assert hist[-1] < hist[0], hist
    assert set(report["test"]) >= {"energy_mae_meV_per_atom", "forces_mae_meV_per_A", "forces_rmse_meV_per_A"}
    deploy_run(tmp_path / "run", tmp_path / "model.pt")
    model, meta2 = load_model(tmp_path / "model.pt")
    assert meta2["metrics"]["test"] == report["test"] and meta2["provenance"]["data"][0]["sha256"] == report["data"][0]["sha256"]
    assert meta2["provenance"]["data"][0]["file"] == "d.h5" and str(tmp_path) not in json.dumps(meta2["provenance"])
    z = torch.tensor([8, 1, 1])
    pos = torch.tensor(molecule("H2O").positions, dtype=torch.float32)
    out = model({"pos": pos, "atomic_numbers": z, "total_charge": torch.zeros(1)})
    assert torch.isfinite(out["energy"]).all()


def json_rows(path):
    import csv

    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_resume_equals_uninterrupted(tmp_path):
    data = tmp_path / "d.h5"
    _dataset(data, per_molecule=4)
    a = _config(tmp_path / "a", data, max_epochs=3)
    Trainer(a, progress=False).run()
    b = _config(tmp_path / "b", data, max_epochs=3, stop_after_steps=5)
    assert Trainer(b, progress=False).run() == {"status": "interrupted", "step": 5}
    b2 = _config(tmp_path / "b", data, max_epochs=3)  # rerun the same command without the stop
    Trainer(b2, progress=False).run()
    sa = torch.load(tmp_path / "a" / "run" / "checkpoint.pt", weights_only=False)
    sb = torch.load(tmp_path / "b" / "run" / "checkpoint.pt", weights_only=False)
    assert sa["step"] == sb["step"]
    for key in ("model", "ema"):
        for name, tensor in sa[key].items():
            assert torch.equal(tensor, sb[key][name]), (key, name)
    assert json_rows(tmp_path / "a" / "run" / "metrics.csv") == json_rows(tmp_path / "b" / "run" / "metrics.csv")


def test_config_errors(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text(yaml.safe_dump({"data": ["x.h5"], "bacth_size": 3}))
    with pytest.raises(ValueError, match=r"unknown training option\(s\) \['bacth_size'\]"):
        TrainConfig.from_yaml(bad)
    with pytest.raises(ValueError, match="needs data"):
        TrainConfig()
    data = tmp_path / "d.h5"
    _dataset(data, per_molecule=2)
    cfg = _config(tmp_path, data, model=dict(elements=["H", "C", "O"]))  # N missing
    from openmlip.errors import UnsupportedElementError

    with pytest.raises(UnsupportedElementError, match="element\\(s\\) N not supported"):
        Trainer(cfg, progress=False).run()


def test_reference_energy_options_set_the_isolated_atom_limit(tmp_path):
    """Given per-element references, an isolated atom's energy is exactly its reference (Allegro: no pairs)."""
    import torch

    data = tmp_path / "d.h5"
    _dataset(data, per_molecule=2)
    ref = {"H": -1.5, "C": -7.0, "N": -8.25, "O": -9.75}
    cfg = _config(tmp_path, data, max_epochs=1, reference_energies=ref)
    Trainer(cfg, progress=False).run()
    state = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    from openmlip.models import build_model

    model = build_model(dict(cfg.model), dtype=torch.float32)
    model.load_state_dict(state["model"])
    for z, sym in ((1, "H"), (8, "O")):
        out = model({"pos": torch.zeros(1, 3), "atomic_numbers": torch.tensor([z]), "total_charge": torch.tensor([0.0])}, False)
        assert float(out["energy"].sum()) == pytest.approx(ref[sym], abs=1e-5)
    with pytest.raises(ValueError, match="reference_energies must be 'least_squares', 'gfn2-xtb-atoms' or a mapping"):
        _config(tmp_path, data, reference_energies="magic")


def test_an_element_only_in_held_out_molecules_is_named(tmp_path):
    data = tmp_path / "d.h5"
    _dataset(data, per_molecule=2)
    cfg = _config(tmp_path, data, max_epochs=1, test_molecules=["NH3"], valid_molecules=["CH4"])
    with pytest.warns(UserWarning, match="element N occurs in test molecules \\(NH3\\) but in no training molecule"):
        Trainer(cfg, progress=False).run()


def test_named_held_out_molecules(tmp_path):
    data = _dataset(tmp_path / "d.h5", per_molecule=2)
    train, valid, test = split_by_molecule(data, 0.3, 0.3, seed=0, valid_molecules=["NH3"], test_molecules=["H2O", "CH4"])
    assert {s.name for s in valid} == {"NH3"} and {s.name for s in test} == {"H2O", "CH4"}
    assert len(train) == len(data) - 6
    with pytest.raises(ValueError, match=r"held-out molecule\(s\) \['Xe2'\] not in the data"):
        split_by_molecule(data, 0.1, 0.1, 0, test_molecules=["Xe2"])
    with pytest.raises(ValueError, match="both validation and test"):
        split_by_molecule(data, 0.1, 0.1, 0, valid_molecules=["H2O"], test_molecules=["H2O"])


def test_validation_loss_is_the_training_loss(tmp_path):
    """One definition of the loss: the validation loss over a set equals the training step's loss on the same
    structures as one batch (float64), with charge labels too."""
    from openmlip.metrics import residuals
    from openmlip.models import build_model
    from openmlip.train.batching import collate, model_inputs
    from openmlip.train.trainer import _errors, _loss_value, weighted_loss

    structures = _dataset(tmp_path / "d.h5", per_molecule=1)
    rng = np.random.default_rng(1)
    for s in structures:
        s.charges = rng.normal(scale=0.1, size=len(s.numbers))
    cfg = _config(tmp_path, tmp_path / "d.h5", charges_weight=0.3)
    torch.manual_seed(0)
    model = build_model(dict(cfg.model), dtype=torch.float64)
    batch = collate(structures, torch.float64)
    step = weighted_loss(cfg, {k: (v ** 2).mean() for k, v in residuals(model(model_inputs(batch), True), batch).items()})
    err = _errors(model, structures, len(structures), torch.float64)
    assert "charges_mse" in err
    assert _loss_value(cfg, err) == pytest.approx(float(step), rel=1e-12)


def test_fine_tuning_from_a_model_file_refits_the_element_shifts(tmp_path):
    """init_model: the architecture and weights come from the file and the per-element shifts are refitted, so
    labels that differ from the file's model by a constant per element (xTB vs DFT total energies) are met
    from step 0; a model: section or fixed reference energies beside it are refused."""
    from openmlip.train.trainer import load_checkpoint

    data = tmp_path / "d.h5"
    structures = _dataset(data, per_molecule=3)
    Trainer(_config(tmp_path / "a", data, max_epochs=1, dtype="float64"), progress=False).run()
    deploy_run(tmp_path / "a" / "run", tmp_path / "a.pt")
    model, meta = load_model(tmp_path / "a.pt")
    delta = {1: -13.6, 6: -1029.8, 7: -1485.3, 8: -2041.1}  # eV per atom
    relabelled = []
    for s in structures:
        out = model({"pos": torch.tensor(s.positions), "atomic_numbers": torch.tensor(s.numbers),
                     "total_charge": torch.zeros(1, dtype=torch.float64)})
        forces = out["forces"].detach()
        relabelled.append(Structure(numbers=s.numbers, positions=s.positions, name=s.name, subset="shifted",
                                    energy=float(out["energy"].sum()) + sum(delta[int(z)] for z in s.numbers),
                                    forces=forces.numpy()))
    write_spice(tmp_path / "b.h5", relabelled)
    cfg = _config(tmp_path / "b", tmp_path / "b.h5", max_epochs=1, lr=1e-12, dtype="float64", init_model=str(tmp_path / "a.pt"),
                  model={})
    assert cfg.model["num_channels"] == 4 and cfg.init_model == str(tmp_path / "a.pt")
    report = Trainer(cfg, progress=False).run()
    state = load_checkpoint(tmp_path / "b" / "run" / "checkpoint.pt")
    shift = np.array(state["reference_energies"]) - model.state_dict()["per_species_shift"].numpy()
    np.testing.assert_allclose(shift, [delta[z] for z in (1, 6, 7, 8)], atol=1e-6)
    assert report["test"]["energy_mae_meV_per_atom"] < 1e-3 and report["test"]["forces_mae_meV_per_A"] < 1e-3
    (tmp_path / "a.pt").rename(tmp_path / "moved.pt")  # the saved config (model section filled in) needs no file
    deploy_run(tmp_path / "b" / "run", tmp_path / "b.pt")
    meta_b = load_model(tmp_path / "b.pt")[1]
    assert meta_b["config"] == meta["config"]
    assert meta_b["provenance"]["training"]["init_model"] == {"file": "a.pt", "sha256": None}  # by name, not by path
    (tmp_path / "moved.pt").rename(tmp_path / "a.pt")
    # fine-tuning data without N: N keeps the starting model's reference, which is named
    write_spice(tmp_path / "no-n.h5", [s for s in relabelled if 7 not in s.numbers])
    with pytest.warns(UserWarning, match="fine-tuning: element\\(s\\) N of a.pt occur in no training molecule"):
        Trainer(_config(tmp_path / "c", tmp_path / "no-n.h5", max_epochs=1, lr=1e-12, dtype="float64",
                        init_model=str(tmp_path / "a.pt"), model={}), progress=False).run()
    with pytest.raises(ConfigError, match="init_model takes the architecture from its model file, and this model: section differs"):
        _config(tmp_path / "c", tmp_path / "b.h5", init_model=str(tmp_path / "a.pt"))
    with pytest.raises(ConfigError, match="leave reference_energies at least_squares"):
        _config(tmp_path / "c", tmp_path / "b.h5", init_model=str(tmp_path / "a.pt"), model={},
                reference_energies="gfn2-xtb-atoms")
