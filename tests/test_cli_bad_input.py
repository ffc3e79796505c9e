"""MD, analysis, plugin and CLI entry points: every bad input is a correct result or a
one-line typed error; resuming never mixes two Hamiltonians or deletes frames; packaging never deletes its input."""
from __future__ import annotations

import dataclasses

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch


from helpers.systems import hydrogen_molecules, make_model, water_like_mdtraj_topology
from openmlip import cli
from openmlip.errors import ConfigError, DataFileError, OutputError, ResumeError, SelectionError
from openmlip.md import MDRunner
from openmlip.md.spec import SpecError, load_spec

ROOT = Path(__file__).resolve().parents[1]


def _main(capsys, *args):
    """``openmlip ARGS`` in this process: (exit code, stderr)."""
    code = cli.main([str(a) for a in args])
    return code, capsys.readouterr().err


def _one_line_error(code, err, *words):
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("openmlip: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "openmlip.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"})


# ----------------------------------------------------------------------------- MDRunner on a toy system
def _runner(out, k_bond=1000.0, **kw):
    system, top, pos = hydrogen_molecules(k_bond)
    args = dict(timestep_fs=0.5, report_interval=5, checkpoint_interval=10, platform="Reference")
    args.update(kw)
    return MDRunner(system, top, pos, out, **args)


def _steps(path, timestep_fs=0.5):
    return np.rint(mdtraj.load(str(path)).time / (timestep_fs / 1000)).astype(int).tolist()


def test_resume_refuses_another_hamiltonian_or_ensemble_and_allows_the_rest(tmp_path):
    """Case 13: a resume with another timestep, temperature, force or named setting is a ResumeError listing
    each change old -> new; steps, checkpoint interval and threads may change and frames stay continuous."""
    out = tmp_path / "md"
    _runner(out, settings={"potential": "a"}).run(20, progress=False)
    for kw, words in [
        (dict(timestep_fs=1.0), ["timestep_fs: 0.5 -> 1.0"]),
        (dict(temperature=310.0), ["temperature_K: 300.0 -> 310.0"]),
        (dict(friction_per_ps=5.0), ["friction_per_ps: 1.0 -> 5.0"]),
        (dict(k_bond=2000.0), ["force 0: HarmonicBondForce"]),
        (dict(settings={"potential": "b"}), ["potential: a -> b"]),
    ]:
        kw.setdefault("settings", {"potential": "a"})
        with pytest.raises(ResumeError) as err:
            _runner(out, **kw).run(40, progress=False)
        msg = str(err.value)
        assert all(w in msg for w in words) and "new output folder (--out)" in msg and "\n" not in msg, msg
    res = _runner(out, settings={"potential": "a"}, checkpoint_interval=20).run(40, progress=False)
    assert res["resumed"] and res["steps"] == 40
    assert _steps(out / "trajectory.h5") == list(range(5, 41, 5))


def test_spec_resume_settings_name_the_potential_and_ml_region(tmp_path):
    """The spec's named settings (for MDRunner(settings=...)) make a changed potential or ML charge a named change."""
    spec = load_spec(ROOT / "systems/ammonium-cluster")
    other = tmp_path / "other.pt"
    from openmlip.deploy import save_model

    save_model(make_model("allegro", "sum", torch.float32), other)
    out = tmp_path / "md"
    _runner(out, settings=spec.resume_settings()).run(10, progress=False)
    with pytest.raises(ResumeError) as err:
        _runner(out, settings=spec.resume_settings(str(other))).run(20, progress=False)
    from openmlip.openmm.registry import resolve_potential

    name = spec.ml.potential
    sha = hashlib.sha256(resolve_potential(name).read_bytes()).hexdigest()[:16]
    assert f"potential: {name} (model sha256 {sha}) -> other.pt (model sha256 " in str(err.value)
    spec = dataclasses.replace(spec, ml=dataclasses.replace(spec.ml, charge=0.0))
    with pytest.raises(ResumeError, match="ml.charge: 1 -> 0"):
        _runner(out, settings=spec.resume_settings()).run(20, progress=False)


def test_changed_report_interval_never_deletes_frames(tmp_path):
    """Case 12: a resume with another --report-interval is refused with the trajectory untouched; a checkpoint
    record without settings is refused too (it cannot be checked), with the trajectory untouched."""
    out = tmp_path / "md"
    _runner(out).run(40, progress=False)
    digest = hashlib.sha256((out / "trajectory.h5").read_bytes()).hexdigest()
    with pytest.raises(ResumeError, match="report_interval: 5 -> 10"):
        _runner(out, report_interval=10, checkpoint_interval=10).run(60, progress=False)
    assert hashlib.sha256((out / "trajectory.h5").read_bytes()).hexdigest() == digest
    meta = json.loads((out / "checkpoint.json").read_text())
    del meta["settings"]
    (out / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(DataFileError, match="records no settings"):
        _runner(out, report_interval=10, checkpoint_interval=10).run(60, progress=False)
    assert hashlib.sha256((out / "trajectory.h5").read_bytes()).hexdigest() == digest


def test_truncated_checkpoint_is_refused_and_an_interrupted_write_resumes(tmp_path):
    """A truncated checkpoint.chk is a DataFileError naming the file and the fix (it used to load silently and
    give NaN); a kill between writing checkpoint.json and checkpoint.chk resumes from the previous checkpoint."""
    out = tmp_path / "md"
    _runner(out).run(20, progress=False)
    at_20 = (out / "checkpoint.chk").read_bytes()
    _runner(out, checkpoint_interval=20).run(40, progress=False)  # one checkpoint, at 40: the previous one is 20
    good = (out / "checkpoint.chk").read_bytes()
    (out / "checkpoint.chk").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataFileError) as err:
        _runner(out).run(60, progress=False)
    assert "checkpoint.chk is truncated or corrupt" in str(err.value) and "delete checkpoint.chk" in str(err.value)
    (out / "checkpoint.chk").write_bytes(at_20)  # checkpoint.json says step 40, the file still holds step 20
    res = _runner(out).run(60, progress=False)
    assert res["resumed"] and _steps(out / "trajectory.h5") == list(range(5, 61, 5))
    (out / "checkpoint.json").write_text('{"step": 6')
    with pytest.raises(DataFileError, match="checkpoint.json is not an openmlip openmlip-md-checkpoint file .*: delete "
                                            "checkpoint.json and checkpoint.chk to restart this run from step 0"):
        _runner(out).run(80, progress=False)


def test_runner_settings_are_validated(tmp_path):
    with pytest.raises(ConfigError, match="threads=0"):
        _runner(tmp_path, threads=0)
    with pytest.raises(ConfigError, match="checkpoint_interval \\(7\\) must be a multiple of report_interval"):
        _runner(tmp_path, checkpoint_interval=7)


# ------------------------------------------------------------------------------- openmlip md / run (CLI)
def _cluster_spec(tmp_path, timestep_fs=0.5):
    spec = tmp_path / "cluster"
    spec.mkdir()
    (spec / "structure.xyz").write_bytes((ROOT / "systems/ammonium-cluster/structure.xyz").read_bytes())
    text = (ROOT / "systems/ammonium-cluster/system.yaml").read_text()
    (spec / "system.yaml").write_text(text.replace("timestep_fs: 0.5", f"timestep_fs: {timestep_fs}"))
    return spec


def test_md_blow_up_with_flat_energy_is_detected(tmp_path):
    """20 fs steps on the ML cluster: atoms fly apart (bonds reached 85,000 Å) while the potential energy stays
    flat at the separated atoms' value, so neither NaN nor the energy jump fired and the run 'succeeded'."""
    res = _cli("md", _cluster_spec(tmp_path, timestep_fs=20), "--smoke", "--out", tmp_path / "out", "--quiet")
    line = _one_line_error(res.returncode, res.stderr, "simulation blew up at step 10", "atoms are flying apart",
                           "lower the timestep")
    assert "kT" in line
    traj = tmp_path / "out/trajectory.h5"
    if traj.exists():
        t = mdtraj.load(str(traj))
        assert t.n_frames == 0 or np.abs(t.xyz).max() < 5


def test_md_resume_with_another_potential_or_report_interval_is_refused(tmp_path):
    """Cases 13 and 12 through the CLI: `openmlip md` into the same --out with another --potential or
    --report-interval exits 2 with a ResumeError (it used to continue with the new Hamiltonian / delete frames)."""
    spec, out = _cluster_spec(tmp_path), tmp_path / "out"
    base = ["md", spec, "--smoke", "--steps", "60", "--equilibrate-steps", "10", "--out", out, "--quiet"]
    first = _cli(*base)
    assert first.returncode == 0, first.stderr[-2000:]
    digest = hashlib.sha256((out / "trajectory.h5").read_bytes()).hexdigest()
    other = tmp_path / "other.pt"
    from openmlip.deploy import save_model

    save_model(make_model("allegro", "sum", torch.float32), other)
    res = _cli(*base, "--potential", other)
    _one_line_error(res.returncode, res.stderr, "MD run with other settings", "TorchForce",
                    "the ML potential", "new output folder (--out)")
    res = _cli(*base, "--report-interval", "20")
    _one_line_error(res.returncode, res.stderr, "report_interval: 10 -> 20")
    assert hashlib.sha256((out / "trajectory.h5").read_bytes()).hexdigest() == digest
    more = _cli(*base[:4], "100", *base[5:], "--threads", "2")  # more steps and threads: not physics
    assert more.returncode == 0 and "resumed" in more.stdout, more.stderr[-2000:]
    assert _steps(out / "trajectory.h5") == list(range(10, 101, 10))


@pytest.mark.parametrize("args", [["md", "systems/ammonium-cluster", "--threads", "0"],
                                  ["run", "systems/ammonium-cluster", "--threads", "-2"],
                                  ["demo", "--threads", "0"]])
def test_threads_must_be_positive(capsys, tmp_path, args):
    _one_line_error(*_main(capsys, *args, "--out", tmp_path / "o"), "--threads", "positive integer")


@pytest.mark.parametrize("args,words", [
    (["data", "generate", "--out", "x.h5", "--templates", "nosuch"], ["--templates: unknown template(s) nosuch"]),
    (["data", "generate", "--out", "x.h5", "--conformers", "0"], ["--conformers 0: must be a positive integer"]),
    (["data", "relabel", "in.h5", "--out", "x.h5", "--conformers", "-1"], ["--conformers -1: must be a positive integer"]),
])
def test_data_options_are_checked_by_the_cli(capsys, args, words):
    """Bare ValueErrors from deeper code now keep their traceback (they are bugs), so the CLI checks its own options."""
    _one_line_error(*_main(capsys, *args), *words)


def test_unwritable_output_folder_fails_before_any_compute(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    _one_line_error(*_main(capsys, "md", ROOT / "systems/ammonium-cluster", "--out", blocker / "md", "--quiet"),
                    "cannot write the MD output folder", str(blocker / "md"))
    _one_line_error(*_main(capsys, "run", ROOT / "systems/ammonium-cluster", "--out", blocker / "run"),
                    "cannot write the run output folder")
    _one_line_error(*_main(capsys, "analyze", ROOT / "missing.h5", "--bonds", "O-H", "--out", blocker / "an"),
                    "cannot write the analysis output folder")
    # issue #34: train, data generate, import, deploy and evaluate (before: after the compute, or a raw OSError)
    from openmlip.openmm.registry import shipped_models

    model = shipped_models()["openmlip-xtb-v7"]
    data = ROOT / "tests" / "data" / "mace" / "mace-tiny-float64.pt"
    config = tmp_path / "train.yaml"
    config.write_text(f"data: [{tmp_path / 'never-read.h5'}]\noutput: {blocker / 'run'}\nmodel: {{elements: [H, O]}}\n")
    _one_line_error(*_main(capsys, "train", config), "cannot write the training output folder", str(blocker / "run"))
    _one_line_error(*_main(capsys, "data", "generate", "--out", blocker / "d.h5", "--templates", "water", "--conformers", "1"),
                    "cannot write the output file's folder", str(blocker))
    _one_line_error(*_main(capsys, "import", data, blocker / "m.pt"), "cannot write the model file's folder")
    _one_line_error(*_main(capsys, "import", data, tmp_path), f"the model file {tmp_path} is a folder: give a file path")
    _one_line_error(*_main(capsys, "deploy", tmp_path / "no-run", "--out", blocker / "m.pt"),
                    "cannot write the model file's folder")
    _one_line_error(*_main(capsys, "evaluate", model, tmp_path / "never-read.h5", "--out", blocker / "ev"),
                    "cannot write the evaluation output folder")
    if os.geteuid() != 0:  # root writes into read-only folders
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        _one_line_error(*_main(capsys, "md", ROOT / "systems/ammonium-cluster", "--out", ro, "--quiet"),
                        "cannot write the MD output folder", str(ro))


def test_an_output_that_is_an_input_is_refused_and_the_input_kept(capsys, tmp_path):
    """Before: `import SRC SRC` overwrote the source model, `data harvest RUN --out RUN/md/trajectory.h5` the MD
    trajectory, `data relabel IN.h5 --out IN.h5` replaced 72 conformers by 2, `deploy RUN --out RUN/best.pt` the
    run's checkpoint.  Now each is a one-line error before anything is read or computed."""
    run = tmp_path / "run"
    (run / "md").mkdir(parents=True)
    files = {name: run / name for name in ("best.pt", "source.pth", "data.h5", "md/trajectory.h5")}
    for k, path in enumerate(files.values()):
        path.write_bytes(bytes([k]) * 64)
    before = {p: p.read_bytes() for p in files.values()}
    src, data, traj = files["source.pth"], files["data.h5"], files["md/trajectory.h5"]
    _one_line_error(*_main(capsys, "import", src, src), f"output {src} would overwrite the input {src}")
    _one_line_error(*_main(capsys, "data", "relabel", data, "--out", data), "would overwrite the input")
    _one_line_error(*_main(capsys, "data", "relabel", data, "--out", data.with_suffix(".hdf5")),
                    "would overwrite the input", "(or its manifest)")  # data.json is the input's manifest
    _one_line_error(*_main(capsys, "deploy", run, "--out", files["best.pt"]), "lies inside the input folder")
    _one_line_error(*_main(capsys, "data", "harvest", ROOT / "systems/ammonium-water", run, "--out", traj),
                    "lies inside the input folder", "choose a --out outside it")
    _one_line_error(*_main(capsys, "data", "harvest", ROOT / "systems/ammonium-water", traj, "--out", traj),
                    "would overwrite the input")
    assert {p: p.read_bytes() for p in files.values()} == before


def test_analyze_refuses_another_systems_trajectory(capsys, tmp_path):
    """Before: `analyze --system ammonium-cluster --strict` on a 1,020-atom NH4+/water trajectory: all checks PASS,
    exit 0.  The trajectory must have the spec's atoms, element by element."""
    traj = mdtraj.load(str(ROOT / "systems/ammonium-water/ammonium-water.pdb"))
    traj = mdtraj.join([traj] * 3)
    traj.time = np.arange(3) * 100.0
    path = tmp_path / "trajectory.h5"
    traj.save_hdf5(str(path))
    _one_line_error(*_main(capsys, "analyze", path, "--system", ROOT / "systems/ammonium-cluster", "--strict",
                           "--out", tmp_path / "an"), "1020 atoms, but ammonium-cluster's structure has")
    traj.topology.atom(0).element = mdtraj.element.hydrogen  # same count, an H where the N was
    traj.save_hdf5(str(path))
    _one_line_error(*_main(capsys, "analyze", path, "--system", ROOT / "systems/ammonium-water", "--out", tmp_path / "an"),
                    "atom 0 is H, but ammonium-water's structure has N there")


def test_spec_selection_errors_are_found_on_load(tmp_path):
    (tmp_path / "s.xyz").write_text("3\nwater\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n")
    head = "name: x\nstructure: s.xyz\nbox_nm: 1.6\nml: {selection: all, embedding: none}\n"
    for body, key in [("analysis: {rdf: [{name: oo, a: name O and (, b: name O}]}\n", "analysis.rdf[0].a"),
                      ("analysis: {msd: [{name: w, selection: resname HOH and elment O}]}\n", "analysis.msd[0].selection"),
                      ("analysis: {bonds: [{name: oh, elements: O-H, selection: foo}]}\n", "analysis.bonds[0].selection")]:
        (tmp_path / "system.yaml").write_text(head + body)
        with pytest.raises(SpecError) as err:
            load_spec(tmp_path)
        assert key in str(err.value) and "cannot parse selection" in str(err.value), str(err.value)
    (tmp_path / "system.yaml").write_text(head.replace("selection: all, embedding: none", "selection: resname NH4 and,"
                                                       " embedding: mechanical") + "forcefield: x.xml\n")
    with pytest.raises(SpecError, match="ml.selection: cannot parse selection"):
        load_spec(tmp_path)


def test_spec_rdf_range_is_checked_against_the_box(tmp_path):
    (tmp_path / "s.xyz").write_text("3\nwater\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n")
    head = "name: x\nstructure: s.xyz\nbox_nm: 1.6\nml: {selection: all, embedding: none}\n"
    (tmp_path / "system.yaml").write_text(head + "analysis: {rdf: [{name: oo, a: name O, b: name O, r_max_nm: 1.0}]}\n")
    with pytest.raises(SpecError, match=r"analysis.rdf\[0\].r_max_nm: 1 nm exceeds half the smallest box width \(0.8 nm\)"):
        load_spec(tmp_path)
    (tmp_path / "system.yaml").write_text(head + "analysis: {rdf: [{name: oo, a: name O, b: name O}]}\n")
    with pytest.warns(UserWarning, match="lowered from the default 1 nm to 0.8 nm"):
        spec = load_spec(tmp_path)
    assert spec.analysis["rdf"][0]["r_max_nm"] == pytest.approx(0.8)
    (tmp_path / "system.yaml").write_text(head + "analysis: {rdf: [{name: oo, a: name O, b: name O, r_max_nm: -1}]}\n")
    with pytest.raises(SpecError, match="r_max_nm: must be a positive number of nm"):
        load_spec(tmp_path)


# ---------------------------------------------------------------------------------------- openmlip analyze
@pytest.fixture(scope="module")
def gas_traj(tmp_path_factory):
    """Uncorrelated ideal-gas 'waters' (O with two H bonded) in a 1.6 nm box, like the shipped water box."""
    rng = np.random.default_rng(1)
    n, frames, L = 60, 40, 1.6
    top = water_like_mdtraj_topology(n)
    geom = np.array([[0, 0, 0], [0.1, 0, 0], [-0.025, 0.097, 0]])
    xyz = (rng.uniform(0, L, size=(frames, n, 1, 3)) + geom).reshape(frames, 3 * n, 3)
    t = mdtraj.Trajectory(xyz.astype(np.float32), top, time=np.arange(frames) * 0.1)
    t.unitcell_vectors = np.repeat(np.eye(3, dtype=np.float32)[None] * L, frames, axis=0)
    path = tmp_path_factory.mktemp("gas") / "gas.h5"
    t.save_hdf5(str(path))
    return path


def test_analyze_rdf_range_is_clamped_or_refused(capsys, gas_traj, tmp_path):
    """Case 10: the default --r-max 1.0 nm on a 1.6 nm box gave g(r) falling to ~0.2 beyond 0.8 nm (pairs missed
    by the minimum image) without a word; now the default is lowered to 0.8 nm with a warning, an explicit
    larger value is refused and g(r) of the ideal gas is 1 out to the end."""
    code, err = _main(capsys, "analyze", gas_traj, "--rdf", "name O/name O", "--out", tmp_path / "a")
    assert code == 0, err
    assert "openmlip: warning: RDF range lowered from the default 1 nm to 0.8 nm" in err and "Traceback" not in err
    rdf = next(v for k, v in json.loads((tmp_path / "a/results.json").read_text()).items() if k.startswith("rdf"))
    assert rdf["r_max_A"] == pytest.approx(8.0)
    r, g, _ = np.loadtxt(next((tmp_path / "a").glob("rdf_*.csv")), delimiter=",", skiprows=1).T
    assert r[-1] < 8.0 and abs(g[r > 5].mean() - 1) < 0.05
    _one_line_error(*_main(capsys, "analyze", gas_traj, "--rdf", "name O/name O", "--r-max", "1.0", "--out", tmp_path / "b"),
                    "exceeds half the smallest box width (0.8 nm)", "use r_max <= 0.8")
    _one_line_error(*_main(capsys, "analyze", gas_traj, "--rdf", "name O/name O", "--r-max", "-1", "--out", tmp_path / "c"),
                    "--r-max -1: must be a positive RDF range in nm")


@pytest.mark.parametrize("args,words", [
    (["--rdf", "name O/name O and ("], ["--rdf 'name O/name O and (' (after the /)", "cannot parse selection"]),
    (["--rdf", "name Q/name O"], ["--rdf 'name Q/name O' (before the /)", "matches no atoms"]),
    (["--msd", "name O or"], ["--msd: cannot parse selection 'name O or'"]),
    (["--msd", "name Xx"], ["--msd: selection 'name Xx' matches no atoms"]),
    (["--bonds", "N-H"], ["no N–H pairs found"]),
    (["--system", "systems/water-box", "--rdf", "name O/name O"], ["--system takes the analyses from system.yaml"]),
])
def test_analyze_bad_option_names_the_option(capsys, gas_traj, tmp_path, args, words):
    _one_line_error(*_main(capsys, "analyze", gas_traj, *args, "--out", tmp_path / "x"), *words)


def test_analyze_truncated_or_empty_trajectory(capsys, gas_traj, tmp_path):
    cut = tmp_path / "cut.h5"
    cut.write_bytes(gas_traj.read_bytes()[:20000])
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    for path in (cut, empty):
        with pytest.raises(DataFileError, match="empty, truncated or not a trajectory"):
            from openmlip.analysis.report import load_trajectory

            load_trajectory(str(path))
        _one_line_error(*_main(capsys, "analyze", path, "--bonds", "O-H", "--out", tmp_path / "x"),
                        f"trajectory '{path}'", "cannot be read", "rerun the MD")


# ------------------------------------------------------------------------------------------------ plugin
def _model(path):
    from openmlip.deploy import save_model

    save_model(make_model("allegro", "sum", torch.float64), path)
    return path


def test_plugin_overwrite_never_deletes_its_input(tmp_path, monkeypatch):
    """Case 14: `openmlip plugin NAME NAME/.../model.pt --out NAME --overwrite` removed the folder before copying
    the model out of it; `--out .` would delete the working folder."""
    from openmlip.plugin import create_plugin

    dist = create_plugin("p", _model(tmp_path / "m.pt"), tmp_path / "p")
    own = dist / "openmlip_plugin_p" / "model.pt"
    digest = hashlib.sha256(own.read_bytes()).hexdigest()
    create_plugin("p", own, dist, "re-packaged in place", overwrite=True)  # the plugin's own model: works
    assert hashlib.sha256(own.read_bytes()).hexdigest() == digest and "re-packaged" in (dist / "README.md").read_text()
    assert "| aggregation | sum |" in (dist / "README.md").read_text()
    with pytest.raises(FileExistsError, match="overwrite"):
        create_plugin("p", own, dist)
    inside = _model(dist / "new.pt")
    with pytest.raises(OutputError, match="lies inside"):
        create_plugin("p", inside, dist, overwrite=True)
    assert inside.is_file() and own.is_file()
    monkeypatch.chdir(dist)
    for out in (".", ".."):
        with pytest.raises(OutputError, match="is the working folder or holds it"):
            create_plugin("p", tmp_path / "m.pt", out, overwrite=True)
    assert own.is_file()
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not an openmlip plugin folder"):
        create_plugin("p", tmp_path / "m.pt", foreign, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_plugin_cli_refuses_the_working_folder(capsys, tmp_path, monkeypatch):
    _model(tmp_path / "m.pt")
    monkeypatch.chdir(tmp_path)
    _one_line_error(*_main(capsys, "plugin", "p", "m.pt", "--out", ".", "--overwrite"), "working folder")
    assert (tmp_path / "m.pt").is_file()


def test_plugin_card_inputs_that_are_not_what_evaluate_writes_are_one_line_errors(capsys, tmp_path, monkeypatch):
    _model(tmp_path / "m.pt")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.md").write_bytes(b"\xff\xfe bad")
    _one_line_error(*_main(capsys, "plugin", "p", "m.pt", "--notes", "notes.md"), "--notes notes.md", "not UTF-8 text")
    _one_line_error(*_main(capsys, "plugin", "p", "m.pt", "--notes", "nowhere.md"), "--notes nowhere.md", "No such file")
    ev = tmp_path / "ev"
    ev.mkdir()
    _one_line_error(*_main(capsys, "plugin", "p", "m.pt", "--evaluation", "ev"), "no errors.json there")
    for text in ("42", "[1, 2]", "{not json"):
        (ev / "errors.json").write_text(text)
        _one_line_error(*_main(capsys, "plugin", "p", "m.pt", "--evaluation", "ev"), "errors.json", "run")
    (ev / "errors.json").write_text('{"model_sha256": "0"}')
    (ev / "dissociation.json").write_text('{"model_sha256": "0"}')  # a list of scans is what evaluate writes
    _one_line_error(*_main(capsys, "plugin", "p", "m.pt", "--evaluation", "ev"), "errors.json was written for another model")
    from openmlip._io import file_sha256

    (ev / "errors.json").write_text(f'{{"model_sha256": "{file_sha256(tmp_path / "m.pt")}"}}')
    _one_line_error(*_main(capsys, "plugin", "p", "m.pt", "--evaluation", "ev"),
                    "errors.json lacks what openmlip evaluate writes")  # the right file's sha, but no tables
    assert not (tmp_path / "openmlip-plugin-p").exists()


def test_plugin_docs_match_the_shipped_model():
    from openmlip import DEFAULT_POTENTIAL
    from openmlip.deploy import load_model

    name = DEFAULT_POTENTIAL
    model = ROOT / f"plugins/{name}/openmlip_plugin_{name.replace('-', '_')}/model.pt"
    _, meta = load_model(model)
    card = (ROOT / f"plugins/{name}/README.md").read_text()
    agg = meta["config"]["aggregation"]
    assert f"| aggregation | {agg} |" in card and re.search(f"`?{agg}`? aggregation", card)
    assert hashlib.sha256(model.read_bytes()).hexdigest() in card
    readme = (ROOT / "plugins/README.md").read_text()
    assert "No trained potential ships yet" not in readme and f"[`{name}`]({name}/README.md)" in readme
    assert "**the default**" in readme.split(f"[`{name}`]")[1]


# ------------------------------------------------------------------------------------ CLI error handling
def test_only_typed_errors_are_one_liners(capsys, monkeypatch):
    """A bare ValueError is a bug and keeps its traceback; openmlip's typed errors are one line, exit 2."""
    def bug(args):
        raise ValueError("a bug")

    monkeypatch.setattr(cli, "_cmd_doctor", bug)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["doctor"])

    def typed(args):
        raise SelectionError("selection 'x' matches no atoms")

    monkeypatch.setattr(cli, "_cmd_doctor", typed)
    _one_line_error(*_main(capsys, "doctor"), "selection 'x' matches no atoms")



def test_files_of_the_wrong_kind_and_unknown_levels_of_theory_are_named(capsys, tmp_path):
    """Issue #34: a trajectory or a YAML given as data (before: a ValueError about an array's truth value, an
    XYZError), a missing data file outside training (before: "fix the data: entry of the training config"), and
    a functional or basis PySCF does not know (before: a KeyError from the first SCF; a bare basis name)."""
    import mdtraj

    from openmlip.data import write_spice
    from openmlip.data.structure import Structure

    traj = tmp_path / "trajectory.h5"
    top = mdtraj.Topology()
    top.add_atom("O", mdtraj.element.oxygen, top.add_residue("HOH", top.add_chain()))
    mdtraj.Trajectory(np.zeros((2, 1, 3)), top).save_hdf5(str(traj))
    spec = ROOT / "systems" / "ammonium-cluster" / "system.yaml"
    _one_line_error(*_main(capsys, "evaluate", "openmlip-xtb-v7", traj, "--out", tmp_path / "ev"),
                    "is not in SPICE layout (it looks like an mdtraj trajectory)")
    _one_line_error(*_main(capsys, "data", "relabel", traj, "--out", tmp_path / "r.h5"),
                    "is not in SPICE layout (it looks like an mdtraj trajectory)")
    _one_line_error(*_main(capsys, "evaluate", "openmlip-xtb-v7", spec, "--out", tmp_path / "ev"),
                    "is not an extxyz file", "data files are SPICE-layout HDF5 (.h5) or extxyz")
    _one_line_error(*_main(capsys, "evaluate", "openmlip-xtb-v7", tmp_path / "none.h5", "--out", tmp_path / "ev"),
                    f"data file '{tmp_path / 'none.h5'}' not found; check the path")
    water = Structure(numbers=np.array([8, 1, 1]), positions=np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]),
                      energy=0.0, forces=np.zeros((3, 3)), name="water", subset="t")
    data = tmp_path / "water.h5"
    write_spice(data, [water], energy_key="xtb_total_energy", gradient_key="xtb_total_gradient")
    _one_line_error(*_main(capsys, "data", "relabel", data, "--out", tmp_path / "a.h5", "--xc", "nonsense", "--quiet"),
                    "--xc nonsense: PySCF does not know this functional")
    _one_line_error(*_main(capsys, "data", "relabel", data, "--out", tmp_path / "b.h5", "--basis", "def2-nonsense",
                           "--quiet"), "--basis def2-nonsense: PySCF has no such basis set for H")
    assert not (tmp_path / "a.h5").exists() and not (tmp_path / "b.h5").exists()
