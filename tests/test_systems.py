"""Shipped system specs: each validates, runs end to end on the shipped potential (smoke settings) and
meets its expected observables; bad specs give one-line errors with exit code 2; killed runs resume."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mdtraj
import numpy as np
import pytest

from openmlip import DEFAULT_POTENTIAL
from openmlip.md.build import build_system
from openmlip.md.spec import SpecError, load_spec
from openmlip.md.system import run_system

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted(ROOT.glob("systems/*/system*.yaml"))


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "openmlip.cli", *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def test_every_shipped_system_has_a_spec():
    """... and every spec names the default potential, so the checks below are enforced with it."""
    assert {str(p.relative_to(ROOT)): load_spec(p).ml.potential for p in SPECS} == {
        str(p.relative_to(ROOT)): DEFAULT_POTENTIAL for p in SPECS}
    names = {p.parent.name for p in SPECS}
    assert {"ammonium-water", "water-box", "alanine-dipeptide", "t4l99a-pxylene"} <= names
    assert ROOT / "systems/ammonium-water/system-full-ml.yaml" in SPECS


# Measured failures of the default shipped potential (openmlip.DEFAULT_POTENTIAL, see its model card). The specs
# keep physical windows; these entries record what the model does to them, as measured in clean-clone CI.
# strict: fails every time (the test fails loudly the day a better model passes);
# not strict: fails in some runs and passes in others (chaotic MD on a marginal potential), so the
# physics check of that spec is NOT enforced until the model is fixed (issue "Data and training").
# Specs the default potential is known to fail, {"dir/stem": (strict, reason)}: none with openmlip-xtb-v7, which
# also passes every spec at full length (docs/training.md; v6 and v4 failed the two full-ML ones there).
# v2 failed ammonium-cluster and the full-ML variant every time and two others now and then; v3's formal-charge
# inputs, larger clusters and the MM-relaxed starting structures fixed them.
KNOWN_MODEL_FAILURES: dict = {}


def _spec_param(p):
    key = f"{p.parent.name}/{p.stem}"
    marks = []
    if key in KNOWN_MODEL_FAILURES:
        strict, reason = KNOWN_MODEL_FAILURES[key]
        marks = [pytest.mark.xfail(strict=strict, reason=f"{DEFAULT_POTENTIAL}: {reason}")]
    return pytest.param(p, id=key, marks=marks)


@pytest.mark.parametrize("spec_path", [_spec_param(p) for p in SPECS])
def test_spec_end_to_end_meets_expected_observables(spec_path, tmp_path):
    spec = load_spec(spec_path)
    assert spec.expected, "a shipped system must state expected observables"
    res = run_system(spec, tmp_path / "run", smoke=True, progress=False)
    md = spec.md_settings(smoke=True)
    traj = mdtraj.load(str(tmp_path / "run/md/trajectory.h5"))
    assert traj.n_frames == md.steps // md.report_interval
    np.testing.assert_allclose(np.diff(traj.time), md.report_interval * md.timestep_fs / 1000, rtol=1e-4)
    if md.pressure_bar:  # NPT: the Monte Carlo barostat changed the box, and density stays liquid-like
        vols = traj.unitcell_volumes
        assert np.ptp(vols) > 0 and np.all(np.abs(vols / vols[0] - 1) < 0.1)
    failed = [c for c in res["analysis"]["checks"] if not c["pass"]]
    assert not failed, f"{spec.name}: {failed}"
    report = (tmp_path / "run/report.md").read_text()
    assert spec.name in report and "Expected observables" in report
    temperature = res["analysis"]["results"]["temperature"]  # production rows of state.csv, in every report
    assert temperature["target_K"] == md.temperature_K and temperature["rows"] >= 2 and temperature["mean_K"] > 0
    assert f"{temperature['mean_K']:.1f} ± {temperature['std_K']:.1f} K (target {md.temperature_K:g} K)" in report
    for c in res["analysis"]["checks"]:
        assert c["observable"] in report
    run = json.loads((tmp_path / "run/md/run.json").read_text())
    assert run["threads"] == {"torch": 1, "openmm": 1} and run["ns_per_day"] > 0
    # the platform's settings and CUDA graphs are recorded (graphs only count on the CUDA platform)
    if run["platform"] == "CPU":
        assert run["platform_properties"] == {"Threads": "1"} and run["cuda_graphs"] is False
    elif run["platform"] == "CUDA":
        assert run["platform_properties"] == {"Precision": "mixed"} and isinstance(run["cuda_graphs"], bool)
    assert "| platform settings |" in report


def test_ml_region_and_charge_of_the_charged_system():
    spec = load_spec(ROOT / "systems/ammonium-water")
    built = build_system(spec)
    top = built["mdtraj_topology"]
    assert [top.atom(i).residue.name for i in built["ml_atoms"]] == ["NH4"] * 5
    import openmm
    import openmmtorch
    import torch

    # electrostatic embedding (split long range): the ML atoms keep reference charges in OpenMM's PME, their MM
    # charges shifted evenly to the region's +1 (the ion's own charges already sum to +1: no shift), the water's
    # charges stay, Cl- keeps -1; the TorchForce carries the predicted charges' difference from the reference
    nb = [f for f in built["system"].getForces() if isinstance(f, openmm.NonbondedForce)][0]
    q = [nb.getParticleParameters(i)[0]._value for i in range(nb.getNumParticles())]
    assert [q[i] for i in built["ml_atoms"]] == pytest.approx([-0.4, 0.35, 0.35, 0.35, 0.35], abs=1e-9)
    assert sum(q) == pytest.approx(0.0, abs=1e-6)
    force = next(f for f in built["system"].getForces() if f.getName() == "TorchForce")
    module = openmmtorch.TorchForce.cast(force).getModule()
    pos = torch.tensor(built["positions"].value_in_unit(openmm.unit.nanometer), dtype=torch.float64)
    box = torch.tensor([v.value_in_unit(openmm.unit.nanometer) for v in built["system"].getDefaultPeriodicBoxVectors()],
                       dtype=torch.float64)
    _, e_embedding, q_ml = module.potential.embedding_energy_terms(pos, box)
    assert float(q_ml.sum()) == pytest.approx(1.0, abs=1e-5)

    # the ion's whole electrostatic solvation: the NonbondedForce's part (the reference charges in PME) plus the
    # TorchForce's embedding term
    def nonbonded_energy(charges_on):
        system = openmm.System()
        for i in range(built["system"].getNumParticles()):
            system.addParticle(built["system"].getParticleMass(i))
        system.setDefaultPeriodicBoxVectors(*built["system"].getDefaultPeriodicBoxVectors())
        copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(nb))
        if not charges_on:
            for i in built["ml_atoms"]:
                _, sigma, eps = copy.getParticleParameters(i)
                copy.setParticleParameters(i, 0.0, sigma, eps)
            for k in range(copy.getNumExceptions()):
                i, j, qq, sigma, eps = copy.getExceptionParameters(k)
                if i in built["ml_atoms"] or j in built["ml_atoms"]:
                    copy.setExceptionParameters(k, i, j, 0.0, sigma, eps)
        system.addForce(copy)
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"),
                                 {"Threads": "1"})
        context.setPositions(built["positions"])
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)

    solvation = nonbonded_energy(True) - nonbonded_energy(False) + float(e_embedding)
    assert solvation < -100.0  # kJ/mol: NH4+ is solvated


BAD = {
    "missing key": ("name: x\nml: {selection: all}\n", "missing required key 'structure'"),
    "missing file": ("name: x\nstructure: nothere.pdb\nml: {selection: all, embedding: none}\n", "file 'nothere.pdb' not found"),
    "unknown key": ("name: x\nstructure: s.xyz\nml: {selection: all, embedding: none, charge: 1}\nmd: {stepz: 3}\n",
                    "unknown key(s) 'stepz'"),
    "empty selection": ("name: x\nstructure: s.xyz\nml: {selection: resname XYZ, embedding: mechanical}\n"
                        "forcefield: [amber14/tip3p.xml]\n", "matches no atom"),
    "bad embedding": ("name: x\nstructure: s.xyz\nml: {selection: all, embedding: magnetic}\n", "'magnetic' is not one of"),
    "bad range": ("name: x\nstructure: s.xyz\nml: {selection: all, embedding: none}\n"
                  "analysis: {bonds: [{name: oh, elements: O-H}]}\nexpected: [{observable: oh.mean_A, range: [2, 1]}]\n",
                  "range must be [low, high]"),
    "unknown observable": ("name: x\nstructure: s.xyz\nml: {selection: all, embedding: none}\n"
                           "expected: [{observable: nh.mean_A, range: [1, 2]}]\n", "names no analysis"),
    "observable key typo": ("name: x\nstructure: s.xyz\nml: {selection: all, embedding: none}\n"
                            "analysis: {bonds: [{name: oh, elements: O-H}]}\nexpected: [{observable: oh.mean_a, range: [1, 2]}]\n",
                            "observable 'oh.mean_a': oh (bonds) reports no 'mean_a' (did you mean oh.mean_A?)"),
    "observable without viscosity": ("name: x\nstructure: s.xyz\nml: {selection: all, embedding: none}\n"
                                     "analysis: {msd: [{name: w, selection: name O}]}\n"
                                     "expected: [{observable: w.D_infinite_1e-5_cm2_per_s, range: [1, 2]}]\n",
                                     "needs viscosity_mPa_s in the msd entry 'w'"),
    "reserved name": ("name: x\nstructure: s.xyz\nml: {selection: all, embedding: none}\n"
                      "analysis: {bonds: [{name: temperature, elements: O-H}]}\n", "the run's own temperature observable"),
    "bad cutoff": ("name: x\nstructure: s.xyz\nml: {selection: all, embedding: none}\nnonbonded: {cutoff_nm: -1}\n",
                   "nonbonded: cutoff_nm=-1 is out of range; set cutoff_nm to a finite number > 0"),
    "not yaml": ("name: [x\n", "not valid YAML"),
    "unknown potential": ("name: x\nstructure: s.xyz\nml: {selection: all, embedding: none, charge: 0, potential: nope-v9}\n",
                          "'nope-v9' is neither an installed openmlip potential"),
}
#: checked when the System is built, not when the spec is read
BUILD_TIME = ("empty selection", "unknown potential")


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_spec_is_one_line_exit_2(case, tmp_path):
    text, message = BAD[case]
    (tmp_path / "s.xyz").write_text("3\nwater\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n")
    (tmp_path / "system.yaml").write_text(text)
    if case not in BUILD_TIME:
        with pytest.raises(SpecError) as err:
            load_spec(tmp_path)
        assert message in str(err.value)
    proc = _cli("md", str(tmp_path), "--out", str(tmp_path / "out"), "--quiet")
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("openmlip: error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name,text,words", [
    ("s.xyz", "3\nwater\nO 0 0 0\nH 0.96 0\n", "structure s.xyz cannot be read as an xyz/extxyz file (XYZError"),
    ("s.pdb", "ATOM      1  O   HOH A   1      garbage\nEND\n", "structure s.pdb cannot be read as a PDB file (ValueError"),
])
def test_a_damaged_structure_file_is_one_line(tmp_path, name, text, words):
    """Issue #34: before, ASE's XYZError or OpenMM's ValueError with a traceback."""
    (tmp_path / name).write_text(text)
    (tmp_path / "system.yaml").write_text(f"name: x\nstructure: {name}\nml: {{selection: all, embedding: none, charge: 0}}\n")
    proc = _cli("md", str(tmp_path), "--out", str(tmp_path / "out"), "--quiet")
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("openmlip: error:")]
    assert proc.returncode == 2 and len(lines) == 1 and words in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_temperature_summary_is_the_production_rows_of_state_csv(tmp_path):
    """Mean, standard deviation and least-squares slope of state.csv's temperatures from the end of equilibration on
    (the equilibration rows, here far off, are left out); specs may check ``temperature.mean_K`` like any observable."""
    from openmlip.md.report import temperature_summary

    t = np.arange(1, 21) * 0.05  # ps
    temps = np.where(t < 0.5, 900.0, 290.0 + 10.0 * (t - 0.5))  # production from 0.5 ps: 290 K rising 10 K/ps
    with open(tmp_path / "state.csv", "w") as fh:
        fh.write("step,time_ps,potential_kJmol,kinetic_kJmol,total_kJmol,temperature_K\n")
        fh.writelines(f"{k},{tk},0,0,0,{T}\n" for k, (tk, T) in enumerate(zip(t, temps)))
    s = temperature_summary(tmp_path / "state.csv", 0.5, 300.0)
    prod = temps[t >= 0.5 - 1e-9]
    assert s["rows"] == len(prod) == 11 and s["target_K"] == 300.0
    assert s["mean_K"] == pytest.approx(prod.mean()) and s["std_K"] == pytest.approx(prod.std())
    assert s["slope_K_per_ps"] == pytest.approx(10.0)
    assert temperature_summary(tmp_path / "state.csv", 5.0, 300.0) is None  # no production rows
    assert temperature_summary(tmp_path / "absent.csv", 0.5, 300.0) is None
    text = (tmp_path / "state.csv").read_text()
    (tmp_path / "cut.csv").write_text(text + "21,1.05,0,0")  # a kill mid-row: that row is left out
    assert temperature_summary(tmp_path / "cut.csv", 0.5, 300.0) == s
    lines = text.splitlines()
    (tmp_path / "bad.csv").write_text("\n".join(lines[:3] + ["x,y,0,0,0,z"] + lines[3:]) + "\n")
    with pytest.raises(SpecError, match="bad.csv: row 4 has no readable time_ps/temperature_K"):
        temperature_summary(tmp_path / "bad.csv", 0.5, 300.0)
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "s.xyz").write_text("3\nwater\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n")
    (spec / "system.yaml").write_text("name: x\nstructure: s.xyz\nml: {selection: all, embedding: none}\n"
                                      "expected: [{observable: temperature.mean_K, range: [270, 330]}]\n")
    assert load_spec(spec).expected[0]["observable"] == "temperature.mean_K"


def test_md_then_analyze_cli_and_resume_after_kill(tmp_path):
    """openmlip md killed mid-run resumes with continuous unique frames; analyze --system checks them."""
    import os
    import signal
    import time

    spec = ROOT / "systems/ammonium-cluster"
    out = tmp_path / "md"
    args = [sys.executable, "-m", "openmlip.cli", "md", str(spec), "--smoke", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until a checkpoint after step 0 exists, then kill hard
        meta = out / "checkpoint.json"
        if meta.exists() and json.loads(meta.read_text())["step"] >= 100:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _cli("md", str(spec), "--smoke", "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "resumed" in done.stdout
    speed = json.loads((out / "run.json").read_text())["ms_per_step"]
    again = _cli("md", str(spec), "--smoke", "--out", str(out), "--quiet")  # finished: no step runs
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "run.json").read_text())["ms_per_step"] == speed  # not the time of zero steps
    traj = mdtraj.load(str(out / "trajectory.h5"))
    md = load_spec(spec).md_settings(smoke=True)
    expected = np.arange(1, md.steps // md.report_interval + 1) * md.report_interval * md.timestep_fs / 1000
    np.testing.assert_allclose(traj.time, expected, rtol=1e-5)
    an = _cli("analyze", str(out / "trajectory.h5"), "--system", str(spec), "--smoke", "--out", str(tmp_path / "an"))
    assert an.returncode == 0, an.stdout + an.stderr
    checks = json.loads((tmp_path / "an/checks.json").read_text())
    assert {c["observable"] for c in checks} == {"nh.mean_A", "nh.max_A", "oh.mean_A"}
    assert sum(ln.startswith(("  PASS", "  FAIL")) for ln in an.stdout.splitlines()) == 3
    strict = _cli("analyze", str(out / "trajectory.h5"), "--system", str(spec), "--smoke", "--strict", "--out", str(tmp_path / "an2"))
    assert strict.returncode == (0 if all(c["pass"] for c in checks) else 1)


@pytest.mark.parametrize("cmd", ["md", "run"])
def test_md_and_run_help(cmd):
    proc = _cli(cmd, "--help")
    assert proc.returncode == 0 and "system.yaml" in proc.stdout and "--smoke" in proc.stdout
