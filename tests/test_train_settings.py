"""Training settings, finite data and weights, and no unpickling.

Every training/model setting is type- and range-checked when the config is made (ConfigError
naming key, value and the allowed range); NaN labels are refused at load time; a non-finite loss stops
the run naming step and structures and never leaves non-finite weights in checkpoint.pt/best.pt; a
resume refuses a non-finite checkpoint.
Trainer checkpoints, best.pt and the generate/relabel progress files are read without
unpickling: a pickle whose ``__reduce__`` would create a marker file is refused with a DataFileError and
the marker never appears.
"""
from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import torch
import yaml
from ase.build import molecule
from ase.calculators.emt import EMT

from openmlip.cli import main as cli_main
from openmlip.data import XTB_LABELS, Structure, write_spice
from openmlip.errors import ConfigError, DataFileError, ResumeError
from openmlip.train import Trainer, TrainConfig, deploy_run
from openmlip.train.trainer import TrainingDivergedError, load_checkpoint

TINY_MODEL = dict(elements=["H", "C", "N", "O"], num_channels=2, latent_dim=8, radial_mlp=[8], num_basis=4, num_layers=1,
                  l_max=1)


def _dataset(path, nan_at=None):
    """H2O, NH3, CH4: two EMT-labelled conformers each (6 structures, stored in that name order by write_spice)."""
    rng = np.random.default_rng(0)
    out = []
    for name in ("CH4", "H2O", "NH3"):
        for _ in range(2):
            atoms = molecule(name)
            atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
            atoms.calc = EMT()
            out.append(Structure(numbers=atoms.numbers, positions=atoms.positions.copy(), energy=atoms.get_potential_energy(),
                                 forces=atoms.get_forces(), name=name))
    if nan_at is not None:
        out[nan_at].energy = float("nan")
    write_spice(path, out)
    return path


def _config(tmp_path, data, **kw):
    base = dict(data=[str(data)], output=str(tmp_path / "run"), batch_size=3, max_epochs=2, valid_fraction=0.0,
                test_fraction=0.0, threads=1, checkpoint_every=1, model=dict(TINY_MODEL))
    base.update(kw)
    return TrainConfig(**base)


class _Bomb:
    """Unpickling this creates ``path`` (stands for any code a file could run)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# ------------------------------------------------------------------------------------------ case 11
@pytest.mark.parametrize("key, value, words", [
    ("ema_decay", 2.0, ["ema_decay=2.0", "out of range", "[0, 1)"]),
    ("ema_decay", 1.0, ["ema_decay=1.0", "[0, 1)"]),
    ("batch_size", "eight", ["batch_size='eight'", "not an integer", ">= 1"]),
    ("batch_size", 0, ["batch_size=0", "out of range", ">= 1"]),
    ("batch_size", 2.5, ["batch_size=2.5", "not an integer"]),
    ("batch_size", True, ["batch_size=True", "not an integer"]),
    ("threads", 0, ["threads=0", ">= 1"]),
    ("lr", "5e-3", ["lr='5e-3'", "not a finite number", "write 5.0e-3"]),
    ("lr", float("nan"), ["lr=nan", "not a finite number", "> 0"]),
    ("lr", -1.0, ["lr=-1.0", "> 0"]),
    ("lr_min_factor", 1.5, ["lr_min_factor=1.5", "[0, 1]"]),
    ("grad_clip", 0, ["grad_clip=0", "> 0"]),
    ("seed", -1, ["seed=-1", ">= 0"]),
    ("max_epochs", 0, ["max_epochs=0", ">= 1"]),
    ("max_steps", 0, ["max_steps=0", ">= 1"]),
    ("patience", "20", ["patience='20'", "not an integer"]),
    ("checkpoint_every", 0, ["checkpoint_every=0", ">= 1"]),
    ("forces_weight", -1.0, ["forces_weight=-1.0", ">= 0"]),
    ("valid_fraction", 1.0, ["valid_fraction=1.0", "[0, 1)"]),
    ("test_fraction", 0.95, ["valid_fraction + test_fraction", "< 1"]),
    ("dtype", "float16", ["dtype='float16' is not allowed", "'float32' or 'float64'"]),
    ("output", 3, ["output=3", "not a string"]),
    ("energy_key", None, ["energy_key=None", "not a string"]),
    ("valid_molecules", "H2O", ["valid_molecules='H2O'", "list of molecule names"]),
    ("reference_energies", {"H": "x"}, ["reference_energies must be", "finite numbers"]),
    ("data", [3], ["data=[3]", "list of data file paths"]),
    ("data", ["d.txt"], ["'d.txt'", "unknown format", ".h5"]),
    ("model", {"cutoff": "5"}, ["model.cutoff='5'", "not a finite number"]),
    ("model", {"cutoff": float("inf")}, ["model.cutoff=inf", "not a finite number"]),
    ("model", {"num_channels": 0}, ["model.num_channels=0", ">= 1"]),
    ("model", {"l_max": 4}, ["model.l_max=4", "0..3"]),
    ("model", {"zbl": "yes"}, ["model.zbl='yes'", "true or false"]),
    ("model", {"elements": "HO"}, ["model.elements='HO'", "list of element symbols"]),
    ("model", {"radial_mlp": 16}, ["model.radial_mlp=16", "list of integer widths"]),
    ("model", {"aggregation": "mean"}, ["model.aggregation='mean'", "'smoothmax'"]),
    ("model", {"architecture": "mace"}, ["model.architecture='mace' is not allowed", "'allegro' or 'nequip'"]),
    ("model", {"cutof": 4.0}, ["unknown model option(s) ['cutof']"]),
    ("model", [1], ["model=[1]", "not a mapping"]),
])
def test_every_setting_is_checked_when_the_config_is_made(tmp_path, key, value, words):
    kw = dict(data=[str(tmp_path / "d.h5")], model=dict(TINY_MODEL))
    kw[key] = {**TINY_MODEL, **value} if key == "model" and isinstance(value, dict) else value
    with pytest.raises(ConfigError) as info:
        TrainConfig(**kw)
    msg = str(info.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_yaml_errors_and_data_as_one_path(tmp_path):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text("data: d.h5\noutput: run\nbatch_size: 4\n")
    cfg = TrainConfig.from_yaml(cfg_path)
    assert cfg.data == [str((tmp_path / "d.h5").resolve())] and cfg.output == str((tmp_path / "run").resolve())
    assert TrainConfig(data=str(tmp_path / "d.h5")).data == [str(tmp_path / "d.h5")]
    cfg_path.write_text("- data: d.h5\n")
    with pytest.raises(ConfigError, match="is not a mapping of options"):
        TrainConfig.from_yaml(cfg_path)
    cfg_path.write_text("data: [d.h5\n")
    with pytest.raises(ConfigError, match="is not readable YAML"):
        TrainConfig.from_yaml(cfg_path)
    cfg_path.write_text("data: d.h5\nema_decay: 2.0\n")
    with pytest.raises(ConfigError, match=r"ema_decay=2\.0 is out of range"):
        TrainConfig.from_yaml(cfg_path)
    with pytest.raises(ConfigError, match="not found"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")


def test_cli_bad_setting_is_one_line_exit_2(tmp_path, capsys):
    _dataset(tmp_path / "d.h5")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"data": ["d.h5"], "batch_size": "eight", "model": TINY_MODEL}))
    assert cli_main(["train", str(tmp_path / "c.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "batch_size='eight' is not an integer" in err, err
    assert not (tmp_path / "training").exists()


def test_nan_label_is_refused_at_load_time(tmp_path):
    data = _dataset(tmp_path / "nan.h5", nan_at=5)
    with pytest.raises(DataFileError, match=r"structure 5 \('NH3'\) has a non-finite energy label") as info:
        Trainer(_config(tmp_path, data), progress=False).run()
    assert "nan.h5" in str(info.value)
    assert not (tmp_path / "run" / "checkpoint.pt").exists() and not (tmp_path / "run" / "best.pt").exists()


def test_diverging_training_stops_naming_the_batch_and_saves_nothing_non_finite(tmp_path):
    data = _dataset(tmp_path / "d.h5")
    cfg = _config(tmp_path, data, lr=1e6, grad_clip=1e30)
    with pytest.raises(TrainingDivergedError) as info:
        Trainer(cfg, progress=False).run()
    msg = str(info.value)
    assert "\n" not in msg and "at step 2 (epoch 0, batch 2 of 2" in msg and "d.h5[" in msg and "lower lr" in msg, msg
    assert not (tmp_path / "run" / "best.pt").exists()
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")  # the step-1 checkpoint: finite (else DataFileError)
    assert state["step"] == 1


def test_resume_refuses_a_non_finite_checkpoint(tmp_path):
    data = _dataset(tmp_path / "d.h5")
    assert Trainer(_config(tmp_path, data, stop_after_steps=1), progress=False).run()["status"] == "interrupted"
    ckpt = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name].fill_(float("nan"))
    torch.save(state, ckpt)
    with pytest.raises(DataFileError, match=r"non-finite weights .*not resumed"):
        Trainer(_config(tmp_path, data), progress=False).run()


def test_checkpoints_hold_only_safe_types_and_resume_exactly(tmp_path):
    """weights_only=True reads what the trainer writes; a split run ends bit-identical to a whole one."""
    data = _dataset(tmp_path / "d.h5")
    whole = _config(tmp_path / "a", data, max_epochs=2)
    Trainer(whole, progress=False).run()
    assert Trainer(_config(tmp_path / "b", data, stop_after_steps=3), progress=False).run()["status"] == "interrupted"
    Trainer(_config(tmp_path / "b", data), progress=False).run()
    sa = torch.load(tmp_path / "a" / "run" / "checkpoint.pt", weights_only=True)
    sb = torch.load(tmp_path / "b" / "run" / "checkpoint.pt", weights_only=True)
    assert sa["step"] == sb["step"] == 4
    for key in ("model", "ema"):
        for name, tensor in sa[key].items():
            assert torch.equal(tensor, sb[key][name]), (key, name)
    torch.load(tmp_path / "b" / "run" / "best.pt", weights_only=True)


def test_changed_settings_on_resume_is_a_resume_error(tmp_path):
    data = _dataset(tmp_path / "d.h5")
    Trainer(_config(tmp_path, data, stop_after_steps=1), progress=False).run()
    with pytest.raises(ResumeError, match=r"training run with other settings.*: lr: [0-9.e-]+ -> 0\.001\. Use a new output folder"):
        Trainer(_config(tmp_path, data, lr=1e-3), progress=False).run()


# ------------------------------------------------------------------------------------------ case 15
def test_trainer_checkpoint_and_best_are_never_unpickled(tmp_path):
    data = _dataset(tmp_path / "d.h5")
    marker = tmp_path / "marker"
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": {}, "config": _Bomb(marker)}, run / "checkpoint.pt")  # zip format, as torch.save writes
    with pytest.raises(DataFileError, match="needs unpickling"):
        Trainer(_config(tmp_path, data), progress=False).run()
    assert not marker.exists()
    (run / "best.pt").write_bytes(pickle.dumps({"model": _Bomb(marker)}))  # a bare pickle
    with pytest.raises(DataFileError, match="needs unpickling"):
        deploy_run(run, tmp_path / "model.pt")
    assert not marker.exists()
    (run / "best.pt").write_bytes(b"")
    with pytest.raises(DataFileError, match="not a readable openmlip checkpoint"):
        deploy_run(run, tmp_path / "model.pt")


@pytest.mark.parametrize("name", ["ammonium.partial.json"])
def test_generate_progress_file_is_never_unpickled(tmp_path, name):
    from openmlip.data.generate import generate

    marker = tmp_path / "marker"
    parts = tmp_path / "x.h5.parts"
    parts.mkdir()
    (parts / name).write_bytes(pickle.dumps({"conformers": [_Bomb(marker)]}))
    with pytest.raises(DataFileError, match="unsafe format") as info:
        generate(tmp_path / "x.h5", ["ammonium"], conformers=2, progress=False)
    assert not marker.exists()
    assert name in str(info.value) and "delete it and rerun" in str(info.value)


@pytest.mark.parametrize("suffix", [".partial.json"])
def test_relabel_progress_file_is_never_unpickled(tmp_path, suffix):
    from openmlip.data.dft import relabel

    src = tmp_path / "xtb.h5"
    z, pos = np.array([8, 1, 1]), np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    write_spice(src, [Structure(numbers=z, positions=pos, energy=-100.0, forces=np.zeros((3, 3)), charges=np.zeros(3),
                                name="water")],
                **XTB_LABELS.kwargs())
    marker = tmp_path / "marker"
    (tmp_path / ("dft.h5" + suffix)).write_bytes(pickle.dumps({"done": [_Bomb(marker)], "chosen": [0]}))
    with pytest.raises(DataFileError, match="unsafe format"):
        relabel(src, tmp_path / "dft.h5", 1, progress=False)
    assert not marker.exists()


def test_progress_files_round_trip_exactly_and_check_what_they_resume(tmp_path):
    from openmlip.data.dft import RELABEL_PROGRESS, relabel
    from openmlip.data.structure import structure_from_json, structure_to_json
    from openmlip.store import RunStore

    s = Structure(numbers=np.array([8, 1, 1]), positions=np.array([[0.1 + 0.2, 1 / 3, math.pi]] * 3), total_charge=-1.0,
                  energy=-2079.123456789012345, forces=np.random.default_rng(1).normal(size=(3, 3)), charges=np.array([-1.2, 0.1, 0.1]),
                  formal_charges=np.array([-1.0, 0.0, 0.0]), name="hydroxide-ish", subset="ions")
    rng = np.random.default_rng(7)
    rng.normal(size=5)
    store = RunStore(tmp_path, "test", {"seed": 7})
    store.save_json("p.json", "test-kind", {"s": structure_to_json(s), "rng": rng.bit_generator.state})
    state = store.load_json("p.json", "test-kind")
    back = structure_from_json(state["s"])
    for key in ("numbers", "positions", "forces", "charges", "formal_charges"):
        assert np.array_equal(getattr(back, key), getattr(s, key)) and getattr(back, key).dtype == getattr(s, key).dtype, key
    assert (back.energy, back.total_charge, back.name, back.subset) == (s.energy, s.total_charge, s.name, s.subset)
    rng2 = np.random.default_rng(0)
    rng2.bit_generator.state = json.loads(json.dumps(state["rng"]))
    assert np.array_equal(rng2.normal(size=4), rng.normal(size=4))
    with pytest.raises(DataFileError, match="is not an openmlip other-kind file"):
        store.load_json("p.json", "other-kind")
    # a relabel progress file made for other conformers is not continued
    src = tmp_path / "xtb.h5"
    write_spice(src, [s], **XTB_LABELS.kwargs())
    other = RunStore(tmp_path, "data relabel", {"input": str(src.resolve()), "chosen": [5]})
    other.save_json("dft.h5.partial.json", RELABEL_PROGRESS, {"done": [structure_to_json(s)]})
    with pytest.raises(ResumeError, match=r"chosen: \[5\] -> \[0\]"):
        relabel(src, tmp_path / "dft.h5", 1, progress=False)
