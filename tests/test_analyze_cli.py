"""openmlip analyze: outputs from a trajectory file, and one-line errors with exit code 2."""
from __future__ import annotations

import json
import subprocess
import sys

import mdtraj
from helpers.systems import water_like_mdtraj_topology
import numpy as np
import pytest


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "openmlip.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def water_traj(tmp_path_factory):
    """A random walk of 'water' molecules (rigid O–H 0.1 nm) in a 2 nm box, saved as mdtraj HDF5."""
    rng = np.random.default_rng(0)
    n, frames, L = 40, 120, 2.0
    centres = rng.uniform(0, L, size=(n, 3)) + np.cumsum(rng.normal(scale=0.02, size=(frames, n, 3)), axis=0)
    xyz = []
    top = water_like_mdtraj_topology(n)
    geom = np.array([[0, 0, 0], [0.1, 0, 0], [-0.025, 0.097, 0]])
    xyz = (centres[:, :, None, :] + geom[None, None]).reshape(frames, 3 * n, 3) % L
    t = mdtraj.Trajectory(xyz.astype(np.float32), top, time=np.arange(frames) * 0.1)
    t.unitcell_vectors = np.repeat(np.eye(3, dtype=np.float32)[None] * L, frames, axis=0)
    path = tmp_path_factory.mktemp("traj") / "water.h5"
    t.save_hdf5(str(path))
    return path


def test_analyze_writes_report_plots_and_numbers(water_traj, tmp_path):
    out = tmp_path / "an"
    res = _cli("analyze", str(water_traj), "--bonds", "O-H", "--rdf", "name O/name O", "--msd", "name O", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["bonds_O-H"]["mean_A"] == pytest.approx(1.0, abs=1e-3)  # rigid geometry, across box wraps
    msd = next(v for k, v in results.items() if k.startswith("msd"))
    # σ = 0.02 nm per 0.1 ps per component: D = σ²/(2 Δt) = 0.002 nm²/ps = 2e-5 cm²/s (1 nm²/ps = 1e-2 cm²/s)
    assert msd["D_1e-5_cm2_per_s"] == pytest.approx(2.0, rel=0.3)
    for name in ("report.md", "bonds_O-H.png", "bonds_O-H.csv"):
        assert (out / name).stat().st_size > 0
    assert "## RDF `name O` – `name O`" in (out / "report.md").read_text()


def test_a_dcd_with_a_topology_of_another_size_is_named(water_traj, tmp_path):
    """Before: "empty, truncated or not a trajectory" for a DCD whose --top has another number of atoms."""
    t = mdtraj.load(str(water_traj))
    t.save_dcd(str(tmp_path / "w.dcd"))
    t[0].save_pdb(str(tmp_path / "w.pdb"))
    t.atom_slice(range(60))[0].save_pdb(str(tmp_path / "small.pdb"))
    res = _cli("analyze", str(tmp_path / "w.dcd"), "--top", str(tmp_path / "small.pdb"), "--bonds", "O-H",
               "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "has 120 atoms per frame but the topology" in res.stderr and "has 60: pass --top the structure" in res.stderr
    assert _cli("analyze", str(tmp_path / "w.dcd"), "--top", str(tmp_path / "w.pdb"), "--bonds", "O-H",
                "--out", str(tmp_path / "y")).returncode == 0


@pytest.mark.parametrize("args,message", [
    (["/nonexistent.h5", "--bonds", "N-H"], "trajectory '/nonexistent.h5' not found"),
    (["TRAJ", "--bonds", "NH"], "--bonds takes element pairs like N-H"),
    (["TRAJ", "--rdf", "name O"], "--rdf takes 'SELECTION_A/SELECTION_B'"),
    (["TRAJ"], "nothing to do"),
    (["TRAJ", "--msd", "name Xx"], "selection"),
])
def test_bad_input_one_line_exit_2(water_traj, tmp_path, args, message):
    args = [str(water_traj) if a == "TRAJ" else a for a in args]
    res = _cli("analyze", *args, "--out", str(tmp_path / "x"))
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and message in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("command", ["doctor", "demo", "data generate", "train", "deploy", "analyze", "plugin"])
def test_every_command_has_help(command):
    res = _cli(*command.split(), "--help")
    assert res.returncode == 0 and "usage: openmlip" in res.stdout


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_the_output_folder_holds_one_whole_analysis(water_traj, tmp_path, monkeypatch, capsys):
    """Trajectory A's analysis, then B's into the same folder: Ctrl-C during B (here: in its MSD, after its bond
    and RDF files were written) leaves A's folder byte for byte, with one line and exit code 130; B finished
    leaves only B's files (none of A's RDF and MSD beside them); a folder of other files is refused first."""
    from openmlip import cli
    from openmlip.analysis import report

    out = tmp_path / "an"
    assert cli.main(["analyze", str(water_traj), "--bonds", "O-H", "--rdf", "name O/name O", "--msd", "name O",
                     "--out", str(out)]) == 0
    a = _files(out)
    assert {"results.json", "report.md", "bonds_O-H.csv"} <= set(a) and any(n.startswith("msd") for n in a)

    def ctrl_c(*args, **kw):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(report, "_msd", ctrl_c)
        capsys.readouterr()
        assert cli.main(["analyze", str(water_traj), "--bonds", "O-O", "--rdf", "name H1/name H1", "--msd", "name H1",
                         "--out", str(out)]) == 130
    err = capsys.readouterr().err.splitlines()  # a warning about the RDF range may come first
    assert err[-1] == f"openmlip: interrupted; the analysis output folder {out} is as it was: rerun the same command"
    assert not any("Traceback" in line for line in err), err
    assert _files(out) == a
    assert sorted(p.name for p in tmp_path.iterdir()) == ["an"]  # no temporary folder left

    assert cli.main(["analyze", str(water_traj), "--bonds", "O-O", "--out", str(out)]) == 0
    b = _files(out)
    assert set(b) == {"results.json", "report.md", "bonds_O-O.csv", "bonds_O-O.png"}
    assert set(json.loads(b["results.json"])) == {"frames", "atoms", "bonds_O-O"}

    other = tmp_path / "run"
    other.mkdir()
    (other / "trajectory.h5").write_bytes(b"keep me")
    capsys.readouterr()
    assert cli.main(["analyze", str(water_traj), "--bonds", "O-H", "--out", str(other)]) == 2
    err = capsys.readouterr().err
    assert "holds other files (trajectory.h5)" in err and "choose a new or empty folder (--out)" in err, err
    assert (other / "trajectory.h5").read_bytes() == b"keep me"
