"""The run store (openmlip.store): every resumable command refuses a rerun with another setting, naming it; one writer
per run; nothing unpickled; and each command's own fingerprint (MD, training, free energy, data generate)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import openmm
import pytest

from helpers.systems import hydrogen_molecules
from openmlip.errors import DataFileError, ResumeError, RunInUseError
from openmlip.store import RunStore, changed_settings


# ------------------------------------------------------------------------------------------------ the store itself
def test_each_changed_setting_is_named_old_to_new_and_the_allowed_ones_are_not(tmp_path):
    old = RunStore(tmp_path, "test", {"a": 1, "b": [1, 2], "c": "x", "steps": 10, "gone": 1}, may_change=["steps"])
    old.save_json("p.json", "test-kind", {"n": 3})
    new = RunStore(tmp_path, "test", {"a": 2, "b": (1, 2), "c": "x", "steps": 20, "new": True}, may_change=["steps"],
                   hints={"a": "was {old}, asked {new}"})
    with pytest.raises(ResumeError) as err:
        new.load_json("p.json", "test-kind")
    msg = str(err.value)
    # tuples and lists are one value; the allowed change (steps) and the unchanged ones are not listed
    assert "a: 1 -> 2 (was 1, asked 2); gone: 1 -> absent; new: absent -> true." in msg, msg
    assert "steps" not in msg and "b:" not in msg and "\n" not in msg and "new output folder (--out)" in msg
    assert old.load_json("p.json", "test-kind")["n"] == 3
    assert RunStore(tmp_path, "test", {**old.settings, "steps": 99}, may_change=["steps"]).load_json("p.json", "test-kind")
    assert changed_settings({"x": "a" + "y" * 200 + "b"}, {"x": "z"}) == [f"x: a{'y' * 37}...{'y' * 38}b -> z"]


def test_files_without_settings_damaged_or_pickled_are_refused_without_running_code(tmp_path):
    store = RunStore(tmp_path, "test", {"a": 1})
    (tmp_path / "bare.json").write_text(json.dumps({"format": "k", "n": 1}))
    with pytest.raises(DataFileError, match="bare.json records no settings"):
        store.load_json("bare.json", "k")
    (tmp_path / "cut.json").write_text('{"format": "k", "sett')
    with pytest.raises(DataFileError, match="cut.json is not an openmlip k file"):
        store.load_json("cut.json", "k")
    import pickle

    (tmp_path / "p.npz").write_bytes(pickle.dumps({"meta": "x"}))
    with pytest.raises(DataFileError, match="p.npz: not a readable openmlip unit file"):
        store.load_npz("p.npz")
    assert store.load_json("absent.json", "k") is None and store.load_npz("absent.npz") is None
    store.save_npz("u.npz", {"wall_s": 1.5}, x=np.arange(3.0))
    d = store.load_npz("u.npz")
    assert np.array_equal(d["x"], np.arange(3.0)) and d["meta"] == {"wall_s": 1.5, "settings": {"a": 1}}


def test_one_writer_per_run_and_a_killed_writer_leaves_no_stale_lock(tmp_path):
    store = RunStore(tmp_path, "MD", {})
    with store.lock("md"):
        with pytest.raises(RunInUseError, match=rf"{tmp_path} is being written by another process \(pid {os.getpid()}"):
            with RunStore(tmp_path, "MD", {}).lock("md"):
                pass
        with RunStore(tmp_path, "MD", {}).lock("window-000"):  # another unit of the same folder: allowed
            pass
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from openmlip.store import RunStore
        with RunStore({str(tmp_path)!r}, "MD", {{}}).lock("md"):
            print("locked", flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUseError, match=f"pid {holder.pid}"):
            with store.lock("md"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with store.lock("md"):  # the kernel dropped the dead process's lock
        pass


# ------------------------------------------------------------------------------------------------ MD
def _runner(out, system_kw=None, **kw):
    from openmlip.md import MDRunner

    system, top, pos = hydrogen_molecules(**(system_kw or {}))
    args = dict(timestep_fs=0.5, report_interval=5, checkpoint_interval=10, platform="Reference")
    args.update(kw)
    return MDRunner(system, top, pos, out, **args)


MD_CHANGES = [
    (dict(timestep_fs=1.0), "timestep_fs: 0.5 -> 1.0"),
    (dict(temperature=310.0), "temperature_K: 300.0 -> 310.0"),
    (dict(friction_per_ps=5.0), "friction_per_ps: 1.0 -> 5.0"),
    (dict(report_interval=10), "report_interval: 5 -> 10"),
    (dict(equilibrate_steps=5, equilibrate_friction_per_ps=10.0),
     "equilibrate_steps: absent -> 5; equilibrate_friction_per_ps: absent -> 10.0"),
    (dict(system_kw={"k_bond": 2000.0}), "force 0: HarmonicBondForce"),
    (dict(system_kw={"mass": 2.014}), "particles: 8 atoms, masses"),
    (dict(system_kw={"constrained": True}), "constraints: 0, "),
    (dict(settings={"potential": "b"}), "potential: a -> b"),
]


@pytest.fixture(scope="module")
def md_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("md") / "run"
    _runner(out, settings={"potential": "a"}).run(20, progress=False)
    return out


@pytest.mark.parametrize("kw, named", MD_CHANGES, ids=[c[1].split(":")[0] for c in MD_CHANGES])
def test_md_resume_with_any_changed_setting_is_refused_naming_it(md_run, kw, named):
    before = {p.name: p.read_bytes() for p in md_run.iterdir() if p.is_file()}
    kw = {"settings": {"potential": "a"}, **kw}
    with pytest.raises(ResumeError, match="MD run with other settings") as err:
        _runner(md_run, **{"checkpoint_interval": 10, **kw}).run(40, progress=False)
    assert named in str(err.value) and str(err.value).count(" -> ") == max(1, named.count(" -> ")), str(err.value)
    assert {p.name: p.read_bytes() for p in md_run.iterdir() if p.is_file()} == before  # nothing touched


def test_a_second_md_process_on_a_run_is_refused_and_writes_nothing(tmp_path):
    out = tmp_path / "md"
    _runner(out).run(10, progress=False)
    rows = (out / "state.csv").read_text()
    from openmlip.store import RunStore

    with RunStore(out, "MD", {}).lock("md"):  # as a live `openmlip md` on the same --out holds it
        with pytest.raises(RunInUseError, match="two MD runs in one folder"):
            _runner(out).run(20, progress=False)
    assert (out / "state.csv").read_text() == rows


def test_the_runner_leaves_the_callers_system_as_it_was(tmp_path):
    from openmlip.md import MDRunner

    system, top, pos = hydrogen_molecules(periodic=True)
    before = openmm.XmlSerializer.serialize(system)
    runner = MDRunner(system, top, pos, tmp_path / "npt", pressure_bar=1.0, platform="Reference", report_interval=5,
                      checkpoint_interval=10, box_vectors=system.getDefaultPeriodicBoxVectors())
    assert openmm.XmlSerializer.serialize(system) == before and system.getNumForces() == 1
    assert any(isinstance(f, openmm.MonteCarloBarostat) for f in runner.context.getSystem().getForces())


# ------------------------------------------------------------------------------------------------ training
def test_training_resume_names_every_changed_config_setting(tmp_path):
    """Each setting of a real TrainConfig (but those allowed to change) is compared: the store names it."""
    from openmlip.train.config import RESUMABLE_CHANGES, TrainConfig

    cfg = TrainConfig(data=[str(tmp_path / "d.h5")], output=str(tmp_path / "run"))
    settings = {**cfg.to_dict(), "world_size": 1}
    store = RunStore(tmp_path, "training", settings, may_change=RESUMABLE_CHANGES, flag="output")
    for key, value in settings.items():
        other = {**store.settings, key: [value, "changed"]}
        if key in RESUMABLE_CHANGES:
            store.check(other, "checkpoint.pt")
            continue
        with pytest.raises(ResumeError, match=rf"checkpoint.pt was written by a training run .*: {key}: "):
            store.check(other, "checkpoint.pt")


# ------------------------------------------------------------------------------------------------ free energy
def _fe(samples=20, **kw):
    from openmlip.fe import FESettings

    base = dict(lambdas=[0.0, 0.5, 1.0], temperature_K=300.0, timestep_fs=2.0, friction_per_ps=10.0, minimize_iterations=0,
                equilibrate_steps=10, samples=samples, sample_interval=5, checkpoint_samples=10, switches=2,
                switches_per_batch=2, switch_stages=3, switch_stage_steps=2, switch_decorrelation_steps=2, bootstrap=5,
                seed=1, platform="Reference")
    base.update(kw)
    return FESettings(**base)


def _engine(settings, k_b=800.0):
    from openmlip.fe import Engine
    from openmlip.fe.analytic import harmonic_wells

    system, pos = harmonic_wells(2, 200.0, k_b, 1.0, mass_amu=1.0)
    return Engine(system, pos, settings, progress=False)


FE_CHANGES = [(k, v) for k, v in [("lambdas", [0.0, 0.25, 1.0]), ("temperature_K", 310.0), ("timestep_fs", 1.0),
                                   ("friction_per_ps", 5.0), ("minimize_iterations", 5), ("equilibrate_steps", 20),
                                   ("equilibrate_friction_per_ps", 5.0), ("samples", 30), ("sample_interval", 10),
                                   ("seed", 2)]]


def test_free_energy_units_refuse_other_settings_and_another_system_naming_them(tmp_path):
    """Cases 5 and 6: a window made with other settings, another potential or another spec (here another force
    constant: the System's fingerprint) is refused, not reused or mixed into MBAR."""
    from openmlip.fe.engine import SWITCH_SETTINGS, WINDOW_SETTINGS
    from openmlip.fe.report import gather

    s = _fe()
    _engine(s).run_all(tmp_path)
    for key, value in FE_CHANGES:
        assert key in WINDOW_SETTINGS
        with pytest.raises(ResumeError, match=rf"window-000.npz was written by a free-energy window run .*: {key}: "):
            _engine(_fe(**{key: value})).run_window(0, tmp_path)
    with pytest.raises(ResumeError, match="switch run with other settings.*: switch_stages: 3 -> 4"):
        _engine(_fe(switch_stages=4)).run_switch_batch("forward", 0, tmp_path)
    assert set(SWITCH_SETTINGS) >= {"switches", "switches_per_batch", "switch_stage_steps", "switch_decorrelation_steps"}
    with pytest.raises(ResumeError, match="force 0: CustomExternalForce .* -> CustomExternalForce"):
        _engine(s, k_b=900.0).run_window(1, tmp_path)
    _engine(_fe(bootstrap=7, threads=1)).run_window(0, tmp_path)  # what shapes no unit may change
    # a leg whose windows came from two Systems is not gathered
    (tmp_path / "windows" / "window-002.npz").unlink()
    _engine(s, k_b=900.0).run_window(2, tmp_path)
    with pytest.raises(ResumeError, match="window-002.npz .*force 0: CustomExternalForce"):
        gather(tmp_path, s, switches=False)


def test_two_processes_never_compute_one_unit(tmp_path):
    s = _fe()
    eng = _engine(s)
    with eng.store(tmp_path, "window").lock("window-001"):
        with pytest.raises(RunInUseError, match="two free-energy window runs"):
            _engine(s).run_window(1, tmp_path)
        _engine(s).run_window(0, tmp_path)  # another unit runs beside it
    assert not (tmp_path / "windows" / "window-001.npz").exists()


# ------------------------------------------------------------------------------------------------ data generate
@pytest.mark.parametrize("change, named", [(dict(conformers=3), "conformers: 2 -> 3"), (dict(seed=5), "seed: 0 -> 5"),
                                           (dict(stride=3), "stride: 2 -> 3")])
def test_generate_refuses_finished_parts_and_checkpoints_of_other_settings(tmp_path, change, named):
    """Cases 7 and 8: a rerun into the same output with another --conformers/--seed/--stride is refused for a finished
    template and for a killed one's checkpoint, and writes nothing (the manifest keeps the settings it was made with)."""
    from openmlip.data.generate import generate

    kw = dict(conformers=2, seed=0, stride=2, progress=False, checkpoint_every=1)
    generate(tmp_path / "x.h5", ["water"], **kw)
    manifest = (tmp_path / "x.json").read_text()
    with pytest.raises(ResumeError, match=rf"water.done.json was written by a data generate run .*: {named}"):
        generate(tmp_path / "x.h5", ["water"], **{**kw, **change})
    assert (tmp_path / "x.json").read_text() == manifest
    assert generate(tmp_path / "y.h5", ["water"], **{**kw, "stop_after_conformers": 1})["status"] == "interrupted"
    with pytest.raises(ResumeError, match=rf"water.partial.json was written by a data generate run .*: {named}"):
        generate(tmp_path / "y.h5", ["water"], **{**kw, **change})
