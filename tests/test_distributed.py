"""Data-parallel training with torchrun (gloo on the CPU): the same parameters as one process with the
whole batch, and a killed run resumed by rerunning the same command ends where an uninterrupted one does."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import yaml

from openmlip.errors import ResumeError
from openmlip.train import Trainer, TrainConfig
from test_train import _dataset

OPENMLIP = str(Path(sys.executable).parent / "openmlip")
MODEL = dict(elements=["H", "C", "N", "O"], num_channels=4, latent_dim=8, radial_mlp=[8], num_basis=4, num_layers=1, l_max=1)


def _yaml(folder: Path, data: Path, **kw) -> Path:
    cfg = dict(data=[str(data)], output=str(folder / "run"), batch_size=4, max_epochs=3, lr=5e-3, valid_fraction=0.0,
               test_fraction=0.0, ema_decay=0.9, threads=1, dtype="float64", checkpoint_every=1, model=dict(MODEL), seed=3,
               weight_decay=0.01)  # decay: a parameter that no batch uses must stay untouched, as in one process
    cfg.update(kw)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _torchrun(config: Path, nproc: int = 2, **popen) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "--no-python",
           OPENMLIP, "train", str(config), "--quiet"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def _state(folder: Path):
    return torch.load(folder / "run" / "checkpoint.pt", weights_only=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp") / "d.h5"
    _dataset(path, per_molecule=3)  # 8 molecules x 3 conformers
    return path


def test_two_processes_with_batch_b_equal_one_with_batch_2b(tmp_path, data):
    two = _yaml(tmp_path / "two", data, batch_size=4)
    out = _finish(_torchrun(two))
    assert "finished: 9 steps, 3 epochs" in out and out.count("finished:") == 1, out[-2000:]  # process 0 speaks
    one = TrainConfig.from_yaml(_yaml(tmp_path / "one", data, batch_size=8))
    Trainer(one, progress=False).run()
    a, b = _state(tmp_path / "two"), _state(tmp_path / "one")
    assert a["step"] == b["step"] == 9 and a["world_size"] == 2 and b["world_size"] == 1
    for key in ("model", "ema"):
        for name, tensor in b[key].items():
            torch.testing.assert_close(a[key][name], tensor, rtol=1e-9, atol=1e-12, msg=f"{key}.{name}")
    for row_a, row_b in zip(a["history"], b["history"]):
        assert row_a["val_loss"] == pytest.approx(row_b["val_loss"], rel=1e-9)
        assert row_a["train_loss"] == pytest.approx(row_b["train_loss"], rel=1e-9)
    report = (tmp_path / "two" / "run" / "report.json").read_text()
    assert '"processes": 2' in report
    # a different number of processes cannot continue the run: its batches would differ
    with pytest.raises(ResumeError, match=r"world_size: 2 -> 1 \(training processes: the batches would differ.*--nproc_per_node=2"):
        Trainer(TrainConfig.from_yaml(_yaml(tmp_path / "two", data, batch_size=4)), progress=False).run()


def test_killed_two_process_run_resumes_to_the_uninterrupted_result(tmp_path, data):
    whole = _finish(_torchrun(_yaml(tmp_path / "whole", data, max_epochs=30)))
    assert "finished: 90 steps" in whole
    cut = _yaml(tmp_path / "cut", data, max_epochs=30)
    proc = _torchrun(cut)
    ckpt = tmp_path / "cut" / "run" / "checkpoint.pt"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["step"] >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    for child in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
        child.send_signal(signal.SIGKILL)  # both training processes (torchrun starts them in new sessions) and torchrun
    proc.communicate()
    killed_at = _state(tmp_path / "cut")["step"]
    assert 3 <= killed_at < 90 and not (tmp_path / "cut" / "run" / "report.json").exists()
    _finish(_torchrun(cut))  # the same command again
    a, b = _state(tmp_path / "whole"), _state(tmp_path / "cut")
    assert a["step"] == b["step"] == 90
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), (key, name, killed_at)
    assert a["history"] == b["history"]
    assert np.isfinite([r["val_loss"] for r in a["history"]]).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for a GPU that this machine has")
def test_a_gpu_that_is_not_there_is_a_config_error(tmp_path, data):
    from openmlip.errors import ConfigError

    for device in ("cuda", "cuda:1"):
        cfg = TrainConfig.from_yaml(_yaml(tmp_path, data, device=device))
        with pytest.raises(ConfigError, match=rf"device='{device}' but torch sees no CUDA device.*device: auto"):
            Trainer(cfg, progress=False).run()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    with pytest.raises(ConfigError, match=r"device='gpu' is not allowed; set device to a string 'auto', 'cpu', 'cuda'"):
        TrainConfig.from_yaml(_yaml(tmp_path, data, device="gpu"))
    with pytest.raises(ConfigError, match=r"matmul_precision='medium' is not allowed"):
        TrainConfig.from_yaml(_yaml(tmp_path, data, matmul_precision="medium"))


@pytest.mark.parametrize("env, words", [
    ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK=5 is not in 0..1 (WORLD_SIZE=2): no such process"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "-1"}, "LOCAL_RANK=-1 is not in 0..1"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0 must be >= 1"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR and MASTER_PORT not set"),
])
def test_torchrun_variables_that_cannot_work_are_refused_at_once(monkeypatch, env, words):
    """Before: WORLD_SIZE=2 RANK=5 hung without a word."""
    from openmlip.errors import ConfigError
    from openmlip.train.distributed import process

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=re.escape(words)):
        with process("cpu"):
            pass
    assert time.monotonic() - t0 < 5.0


def test_a_rank_whose_peers_never_come_says_what_it_waited_for(monkeypatch, caplog):
    """Before: RANK=0 of 2 with no second process waited silently for torch's 30 min; now it says what it waits for
    and how long, and ends in one ConfigError at that timeout."""
    import logging
    import socket

    from openmlip.errors import ConfigError
    from openmlip.train.distributed import process

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(name, value)
    t0 = time.monotonic()
    with caplog.at_level(logging.INFO, logger="openmlip"):
        with pytest.raises(ConfigError, match=rf"rank 0 of 2: the 2 training processes did not meet at 127.0.0.1:{port} "
                                              r"within 3 s .*torchrun --nproc-per-node 2"):
            with process("cpu", timeout_s=3):
                pass
    assert 2.5 < time.monotonic() - t0 < 60.0
    assert f"rank 0 of 2: waiting up to 3 s for all 2 processes to meet at 127.0.0.1:{port}" in caplog.text
