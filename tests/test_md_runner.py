"""MD runner: platform choice, resume after SIGKILL/SIGTERM with continuous unique frames and trajectories never
modified in place, blow-up detection."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mdtraj
import numpy as np
import pytest

SYSTEMS = Path(__file__).resolve().parent.parent / "systems"

SCRIPT = """
import sys
import openmlip
import openmm.app as app, openmm.unit as u
from openmlip.md import MDRunner
pdb = app.PDBFile(r"{pdb}")
ff = app.ForceField("amber14/tip3p.xml", r"{ffxml}")
system = ff.createSystem(pdb.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * u.nanometer, constraints=app.HBonds)
runner = MDRunner(system, pdb.topology, pdb.positions, sys.argv[1], timestep_fs=float(sys.argv[3]), report_interval=20,
                  checkpoint_interval=100, platform="CPU", box_vectors=pdb.topology.getPeriodicBoxVectors())
out = runner.run(int(sys.argv[2]), minimize=True, progress=False)
print("RESULT", out["resumed"], out["platform"], out["steps"])
"""


def _script(tmp_path):
    s = tmp_path / "run.py"
    s.write_text(SCRIPT.format(pdb=SYSTEMS / "ammonium-water" / "ammonium-water.pdb", ffxml=SYSTEMS / "ammonium-water" / "ammonium.xml"))
    return s


def test_choose_platform_prefers_fastest_available_and_explains():
    from openmlip.openmm.platform import choose_platform

    platform, props, reasons = choose_platform(threads=1)
    assert platform.getName() == "CPU" and props == {"Threads": "1"}  # no GPU here: CUDA/OpenCL skipped with a reason
    assert reasons[-1] == "CPU: chosen" and reasons[0].startswith("CUDA:")
    with pytest.raises(ValueError, match="platform 'CUDA' is not available"):
        choose_platform("CUDA")


def _wait_for_checkpoint(meta, at_least, proc, timeout=240):
    import json

    deadline = time.time() + timeout
    while time.time() < deadline:
        if meta.exists() and json.loads(meta.read_text())["step"] >= at_least:
            return
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint at step >= {at_least} within {timeout} s")


def _frame_steps(path):
    return np.round(mdtraj.load(str(path)).time / 0.001).astype(int).tolist()  # ps -> steps of 1 fs


def test_resume_after_sigkill_and_sigterm_gives_continuous_unique_frames(tmp_path):
    """SIGKILL: the frames already on disk wait as atomically written segments (no trajectory.h5 is
    ever open for writing). SIGTERM (a batch system's time limit): the run stops cleanly and every frame
    so far is in trajectory.h5. Each rerun continues from the checkpoint; the final trajectory is
    continuous and unique, and the file the SIGTERM left was never modified in place (a hard link to it
    keeps its bytes)."""
    import hashlib
    import json

    out = tmp_path / "md"
    script = _script(tmp_path)
    meta = out / "checkpoint.json"
    cmd = [sys.executable, str(script), str(out), "3000", "1.0"]

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_checkpoint(meta, 200, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(meta.read_text())["step"]
    assert 200 <= killed_at < 3000
    segments = sorted(int(p.stem) for p in (out / "trajectory.segments").glob("*.h5"))
    assert segments and segments[0] == 100 and segments[-1] >= killed_at  # one per checkpoint, on disk
    assert not (out / "trajectory.h5").exists()

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_checkpoint(meta, killed_at + 400, proc)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    termed_at = json.loads(meta.read_text())["step"]
    assert not (out / "trajectory.segments").exists()
    steps = _frame_steps(out / "trajectory.h5")
    assert steps == list(range(20, steps[-1] + 1, 20)) and steps[-1] >= termed_at  # nothing lost, nothing twice
    os.link(out / "trajectory.h5", tmp_path / "kept.h5")
    digest = hashlib.sha256((tmp_path / "kept.h5").read_bytes()).hexdigest()

    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "RESULT True CPU 3000" in res.stdout
    assert _frame_steps(out / "trajectory.h5") == list(range(20, 3001, 20))  # continuous, unique, nothing missing
    assert hashlib.sha256((tmp_path / "kept.h5").read_bytes()).hexdigest() == digest
    assert not (out / "trajectory.segments").exists() and not list(out.glob(".*.tmp"))
    rows = (out / "state.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(20, 3001, 20))


def test_blow_up_stops_with_clear_error_and_keeps_good_outputs(tmp_path):
    out = tmp_path / "md"
    res = subprocess.run([sys.executable, str(_script(tmp_path)), str(out), "2000", "40.0"], capture_output=True, text=True, timeout=600)
    assert res.returncode != 0
    assert "BlowUpError: simulation blew up at step" in res.stderr and "lower the timestep" in res.stderr
    if (out / "trajectory.h5").exists():
        traj = mdtraj.load(str(out / "trajectory.h5"))
        assert np.all(np.isfinite(traj.xyz))
    assert (out / "checkpoint.chk").exists()


def test_runner_with_shipped_potential_full_ml_cluster(tmp_path):
    """NH4+(H2O)4, all ML with the shipped default potential, minimised then 200 MD steps: N–H stays bonded,
    and the saved frames of an open system are not wrapped into a box (a bug this test caught)."""
    from ase.io import read

    import openmlip  # noqa: F401
    from openmlip.analysis import compute_bond_lengths
    from openmlip.md import MDRunner
    from openmlip.md.structure import xyz_topology
    from openmmml import MLPotential

    atoms = read(str(SYSTEMS / "ammonium-cluster" / "structure.xyz"))
    top = xyz_topology(atoms)  # bonds let the plugin put the +1 on N, as in the training data
    system = MLPotential("openmlip-xtb-v7").createSystem(top, charge=1)
    runner = MDRunner(system, top, atoms.positions / 10.0, tmp_path, timestep_fs=0.5, report_interval=20,
                      checkpoint_interval=100, platform="CPU")
    out = runner.run(200, progress=False)
    assert out["steps"] == 200 and out["platform"] == "CPU"
    traj = mdtraj.load(str(tmp_path / "trajectory.h5"))
    bonds = compute_bond_lengths(traj, pairs=[(0, k) for k in range(1, 5)])
    # nm: NH4+ intact and frames not scrambled by wrapping (a wrapped frame gives N–H of nanometres);
    # how close the bond is to xTB's 1.03 Å is the ammonium-cluster spec's check (tests/test_systems.py)
    assert traj.n_frames == 10 and 0.095 < bonds["mean"] < 0.125 and bonds["distances"].max() < 0.14


def test_long_checkpoint_interval_bounds_buffered_frames(tmp_path, monkeypatch):
    """With a checkpoint interval far longer than the report interval, buffered frames go to disk as
    extra segments once they pass the memory bound; the trajectory still comes out whole and in order."""
    import openmm.app as app
    import openmm.unit as u

    import openmlip.md.runner as runner_mod
    from openmlip.md import MDRunner

    pdb = app.PDBFile(str(SYSTEMS / "ammonium-water" / "ammonium-water.pdb"))
    ff = app.ForceField("amber14/tip3p.xml", str(SYSTEMS / "ammonium-water" / "ammonium.xml"))
    system = ff.createSystem(pdb.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * u.nanometer, constraints=app.HBonds)
    frame_bytes = pdb.topology.getNumAtoms() * 3 * 4
    monkeypatch.setattr(runner_mod, "FRAME_BUFFER_BYTES", 2 * frame_bytes)  # at most 2 frames in memory
    written = []
    flush = MDRunner._flush_frames

    def spy(self):
        written.append(len(self._frames))
        flush(self)

    monkeypatch.setattr(MDRunner, "_flush_frames", spy)
    runner = MDRunner(system, pdb.topology, pdb.positions, tmp_path / "md", timestep_fs=1.0, report_interval=10,
                      checkpoint_interval=1000, platform="CPU", box_vectors=pdb.topology.getPeriodicBoxVectors())
    runner.run(100, minimize=False, progress=False)
    assert max(written) <= 3 and sum(written) == 10  # 10 frames, never more than the bound (+1) held
    assert _frame_steps(tmp_path / "md" / "trajectory.h5") == list(range(10, 101, 10))
    assert not (tmp_path / "md" / "trajectory.segments").exists()


def _small_water(cutoff_nm=0.7):
    import openmm.app as app
    import openmm.unit as u

    pdb = app.PDBFile(str(SYSTEMS / "ammonium-water" / "ammonium-water-small.pdb"))
    ff = app.ForceField("amber14/tip3p.xml", str(SYSTEMS / "ammonium-water" / "ammonium.xml"))
    system = ff.createSystem(pdb.topology, nonbondedMethod=app.PME, nonbondedCutoff=cutoff_nm * u.nanometer,
                             constraints=app.HBonds)
    return system, pdb


def _production_temperature(out, from_step):
    import csv

    with open(out / "state.csv") as fh:
        return float(np.mean([float(r["temperature_K"]) for r in csv.DictReader(fh) if int(r["step"]) > from_step]))


def test_strong_equilibration_friction_brings_a_minimised_system_to_the_target_temperature(tmp_path):
    """From a minimised structure half the kinetic energy drawn at 300 K goes into the potential; with γ = 1/ps the
    deficit decays as exp(-2γt), and the structure's slower relaxation away from the minimum drains more for ~1 ps
    (measured here: γ = 10/ps throughout gives 265, 284, 288, 301, 303 K in successive 0.4 ps windows). After 1 ps of
    equilibration with 10/ps (then 1/ps) production runs at the target; with 1/ps throughout it does not.

    One 0.6 ps production window of 749 degrees of freedom gives its mean temperature to only ±7 K (the total energy
    relaxes at 2γ = 2/ps, slower than the window): measured over seeds 1-8, 290-310 K after 10/ps and 254-264 K with
    1/ps throughout. So the test pools independent runs (three and two seeds): ±4 K and ±3 K on the two means."""
    from openmlip.md import MDRunner

    temps = {}
    for gamma_eq, seeds in ((1.0, (1, 2)), (10.0, (1, 2, 3))):
        runs = []
        for seed in seeds:
            system, pdb = _small_water()
            out = tmp_path / f"g{gamma_eq:g}-s{seed}"
            runner = MDRunner(system, pdb.topology, pdb.positions, out, timestep_fs=1.0,
                              report_interval=20, checkpoint_interval=200, platform="CPU", friction_per_ps=1.0,
                              equilibrate_steps=1000, equilibrate_friction_per_ps=gamma_eq, minimize_iterations=200,
                              seed=seed, box_vectors=pdb.topology.getPeriodicBoxVectors())
            runner.run(1600, minimize=True, progress=False)
            assert runner.integrator.getFriction().value_in_unit(runner.integrator.getFriction().unit) == 1.0  # production
            runs.append(_production_temperature(out, 1000))
        temps[gamma_eq] = float(np.mean(runs))
    assert 285 < temps[10.0] < 315, temps  # ±3.7 sigma
    assert temps[1.0] < temps[10.0] - 25, temps  # measured difference ~42 K, sigma 5 K


def test_resume_inside_equilibration_keeps_the_phase_friction_and_refuses_another_equilibration(tmp_path):
    from openmlip.errors import ResumeError
    from openmlip.md import MDRunner

    def runner(**kw):
        system, pdb = _small_water()
        args = dict(timestep_fs=1.0, report_interval=10, checkpoint_interval=50, platform="CPU", friction_per_ps=1.0,
                    equilibrate_steps=100, equilibrate_friction_per_ps=10.0, box_vectors=pdb.topology.getPeriodicBoxVectors())
        args.update(kw)
        return MDRunner(system, pdb.topology, pdb.positions, tmp_path / "md", **args)

    gamma = lambda r: r.integrator.getFriction().value_in_unit(r.integrator.getFriction().unit)  # noqa: E731
    first = runner()
    first.run(50, minimize=False, progress=False)  # stopped inside equilibration
    assert gamma(first) == 10.0
    with pytest.raises(ResumeError, match=r"equilibrate_friction_per_ps: 10.0 -> 5.0"):
        runner(equilibrate_friction_per_ps=5.0).run(150, minimize=False, progress=False)
    seen = []
    second = runner()
    step = second.integrator.step

    def spy(n):
        seen.append((n, gamma(second)))
        step(n)

    second.integrator.step = spy
    second.run(150, minimize=False, progress=False)
    assert seen == [(10, 10.0)] * 5 + [(10, 1.0)] * 5  # the phase boundary (step 100) ends a chunk; friction per phase
    assert _frame_steps(tmp_path / "md" / "trajectory.h5") == list(range(10, 151, 10))


def test_ctrl_c_keeps_every_written_frame_and_the_rerun_continues(tmp_path):
    """Ctrl-C during MD (here: in the chunk after the second checkpoint) raises Interrupted, still a
    KeyboardInterrupt, naming the step the checkpoint holds; the same run again continues from there and the
    trajectory comes out whole, each step once."""
    from openmlip.errors import Interrupted
    from openmlip.md import MDRunner

    def runner():
        system, pdb = _small_water()
        return MDRunner(system, pdb.topology, pdb.positions, tmp_path / "md", timestep_fs=1.0, report_interval=10,
                        checkpoint_interval=20, platform="CPU", box_vectors=pdb.topology.getPeriodicBoxVectors())

    first = runner()
    step, calls = first.integrator.step, []

    def ctrl_c(n):
        calls.append(n)
        if len(calls) == 5:
            raise KeyboardInterrupt
        step(n)

    first.integrator.step = ctrl_c
    with pytest.raises(Interrupted, match=r"checkpoint\.\w+ holds step 40: rerun the same command") as err:
        first.run(100, minimize=False, progress=False)
    assert isinstance(err.value, KeyboardInterrupt)
    assert _frame_steps(tmp_path / "md" / "trajectory.h5") == [10, 20, 30, 40]
    out = runner().run(100, minimize=False, progress=False)
    assert out["resumed"] and _frame_steps(tmp_path / "md" / "trajectory.h5") == list(range(10, 101, 10))


def test_seed_0_is_a_seed_like_any_other(tmp_path):
    """OpenMM reads the seed 0 as "random": every shipped spec says `seed: 0`, and two identical runs differed
    from the first report on.  openmlip maps each seed to its own OpenMM seed (openmm_seed), so they agree to
    1e-6 (the CPU platform's PME sums are not bitwise repeatable across Contexts), and seed 1 differs."""
    from openmlip.md import MDRunner
    from openmlip.openmm.platform import openmm_seed

    assert [openmm_seed(s) for s in (0, 1, 2**31 - 2)] == [1, 2, 2**31 - 1]

    def states(name, seed):
        system, pdb = _small_water()
        MDRunner(system, pdb.topology, pdb.positions, tmp_path / name, timestep_fs=1.0, report_interval=10,
                 checkpoint_interval=30, platform="CPU", seed=seed,
                 box_vectors=pdb.topology.getPeriodicBoxVectors()).run(30, minimize=False, progress=False)
        return np.loadtxt(tmp_path / name / "state.csv", delimiter=",", skiprows=1)

    first = states("a", 0)
    np.testing.assert_allclose(states("b", 0), first, rtol=1e-6)
    assert np.abs(states("c", 1)[:, -1] - first[:, -1]).max() > 1.0  # K


def test_a_resume_on_another_platform_or_with_a_damaged_trajectory_says_what_to_do(tmp_path):
    """Before: OpenMM's raw loadCheckpoint error, and an HDF5 traceback for a trajectory cut in half."""
    from openmlip.errors import DataFileError, ResumeError
    from openmlip.md import MDRunner

    def runner(platform):
        system, pdb = _small_water()
        return MDRunner(system, pdb.topology, pdb.positions, tmp_path / "md", timestep_fs=1.0, report_interval=10,
                        checkpoint_interval=20, platform=platform, box_vectors=pdb.topology.getPeriodicBoxVectors())

    runner("CPU").run(20, minimize=False, progress=False)
    with pytest.raises(ResumeError, match=r"checkpoint.chk was written on OpenMM's CPU platform, and an OpenMM checkpoint "
                                          r"loads only on the platform that wrote it \(this run chose Reference\): rerun "
                                          r"with --platform CPU"):
        runner("Reference").run(40, minimize=False, progress=False)
    traj = tmp_path / "md" / "trajectory.h5"
    os.truncate(traj, traj.stat().st_size // 2)
    with pytest.raises(DataFileError, match=r"trajectory.h5 \(\d+ bytes\) cannot be read \(HDF5ExtError\).*frames before the "
                                            r"checkpoint \(step 20\) are lost: put back an intact copy"):
        runner("CPU").run(40, minimize=False, progress=False)
