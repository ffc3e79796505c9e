"""openmlip.fe: known-answer free energies through the λ-window/switching engine, resume, spec and CLI."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

import openmlip  # noqa: F401  (torch before openmm)
import openmm

import torch

from helpers.physics import openmm_energy
from helpers.systems import model_file
from openmlip.errors import ConfigError, DataFileError, ResumeError
from openmlip.fe.analytic import harmonic_wells, harmonic_wells_dg
from openmlip.fe.engine import Engine, FESettings, window_file
from openmlip.store import read_npz
from openmlip.fe.report import gather

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ROOT / "systems"

# n particles (1 amu) in harmonic wells, k 200 -> 800 kJ/mol/nm^2, plus a constant 5 kJ/mol: ΔG = 6 kT ln 4 + 5
N, K_A, K_B, OFFSET, T = 4, 200.0, 800.0, 5.0, 300.0


def _settings(**kw):
    base = dict(lambdas=[0, 0.2, 0.4, 0.6, 0.8, 1.0], temperature_K=T, timestep_fs=2.0, friction_per_ps=10.0,
                minimize_iterations=0, equilibrate_steps=200, samples=200, sample_interval=50, checkpoint_samples=50,
                switches=40, switches_per_batch=20, switch_stages=40, switch_stage_steps=5,
                switch_decorrelation_steps=50, bootstrap=100, seed=1, platform="Reference")
    base.update(kw)
    return FESettings(**base)


@pytest.fixture(scope="module")
def harmonic_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("harmonic")
    s = _settings()
    system, pos = harmonic_wells(N, K_A, K_B, OFFSET, mass_amu=1.0)
    Engine(system, pos, s, progress=False).run_all(out)
    return out, s, gather(out, s, title="harmonic wells")


def test_known_answer_harmonic_wells_mbar_and_bar_within_two_standard_errors(harmonic_run):
    """ΔG = (3N/2) kT ln(kB/kA) + c exactly; MBAR (windows) and BAR (switches) recover it within 2σ."""
    out, s, res = harmonic_run
    exact = harmonic_wells_dg(N, K_A, K_B, OFFSET, T)
    assert exact == pytest.approx(1.5 * N * s.kT * math.log(4.0) + OFFSET)
    m, b = res["mbar"], res["neq"]["bar"]
    print(f"exact {exact:.3f} kJ/mol, MBAR {m['dg_kJmol']:.3f} ± {m['err_kJmol']:.3f}, "
          f"BAR {b['dg_kJmol']:.3f} ± {b['err_kJmol']:.3f}")
    for est in (m, b):
        assert 0.05 < est["err_kJmol"] < 1.5            # an honest, non-degenerate error bar
        assert abs(est["dg_kJmol"] - exact) < 2 * est["err_kJmol"]
    # bootstrap and pymbar's asymptotic error agree within a factor of two
    assert 0.5 < m["err_kJmol"] / m["err_analytic_kJmol"] < 2.0
    # kJ/mol, kcal/mol and kT are the same number
    assert m["dg_kcalmol"] * 4.184 == pytest.approx(m["dg_kJmol"])
    assert m["dg_kT"] * s.kT == pytest.approx(m["dg_kJmol"])
    # overlap matrix: rows sum to 1, neighbours overlap
    ov = np.asarray(m["overlap"])
    assert ov.shape == (6, 6) and np.allclose(ov.sum(axis=1), 1.0, atol=1e-6)
    assert m["min_neighbour_overlap"] > 0.05
    # Jarzynski each way is biased but close; forward/reverse dissipation is positive (second law)
    assert all(d > 0 for d in res["neq"]["dissipation_kT"])
    for key in ("jarzynski_forward", "jarzynski_reverse"):
        assert abs(res["neq"][key]["dg_kJmol"] - exact) < 4 * s.kT
    for name in ("results.json", "report.md", "overlap.png", "convergence.png", "work.png"):
        assert (out / name).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "MBAR" in report and "BAR" in report and "kcal/mol" in report and "kT =" in report


def test_known_answer_constant_offset_exact():
    """E_B = E_A + c: ΔG = c with zero variance, to round-off, from both estimators."""
    s = _settings(lambdas=[0.0, 1.0], samples=20, sample_interval=10, equilibrate_steps=20, switches=4,
                  switches_per_batch=2, switch_stages=5, switch_stage_steps=2, switch_decorrelation_steps=5,
                  bootstrap=10)
    system, pos = harmonic_wells(3, K_A, K_A, 7.5, mass_amu=1.0)
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        Engine(system, pos, s, progress=False).run_all(out)
        res = gather(out, s)
    assert res["mbar"]["dg_kJmol"] == pytest.approx(7.5, abs=1e-6)
    assert res["mbar"]["err_kJmol"] < 1e-6
    assert res["neq"]["bar"]["dg_kJmol"] == pytest.approx(7.5, abs=1e-6)
    for key in ("jarzynski_forward", "jarzynski_reverse"):
        assert res["neq"][key]["dg_kJmol"] == pytest.approx(7.5, abs=1e-6)


def test_window_resumes_after_kill_and_equals_nothing_lost(harmonic_run, tmp_path):
    """A window killed after its first checkpoint resumes from the partial file: same samples kept, same count."""
    src, s, _ = harmonic_run
    system, pos = harmonic_wells(N, K_A, K_B, OFFSET, mass_amu=1.0)
    eng = Engine(system, pos, s, progress=False)
    calls = {"n": 0}
    original = eng.endpoint_energies

    def dying(ctx, lam):
        calls["n"] += 1
        if calls["n"] == 120:  # after the checkpoints at 50 and 100 samples
            raise KeyboardInterrupt
        return original(ctx, lam)

    eng.endpoint_energies = dying
    with pytest.raises(KeyboardInterrupt):
        eng.run_window(2, tmp_path)
    part = window_file(tmp_path, 2).with_name("window-002.partial.npz")
    kept = read_npz(part)["e_end"]
    assert kept.shape == (100, 2) and not window_file(tmp_path, 2).exists()
    Engine(system, pos, s, progress=False).run_window(2, tmp_path)
    done = eng.store(tmp_path, "window").load_npz("window-002.npz")
    assert done["u_kn"].shape == (6, 200) and not part.exists()
    assert np.array_equal(done["e_end"][:100], kept)         # the samples before the kill are kept as they were
    # the uninterrupted run of the same window made the same first 100 samples (same seed, same chain)
    ref = read_npz(window_file(src, 2))["e_end"]
    assert np.allclose(ref[:100], kept)
    # rerunning a finished unit is a no-op; other settings are refused instead of mixed in
    Engine(system, pos, s, progress=False).run_window(2, tmp_path)
    with pytest.raises(ResumeError):
        Engine(system, pos, _settings(samples=300), progress=False).run_window(2, tmp_path)


def test_gather_names_missing_units_and_settings_are_checked(tmp_path):
    s = _settings()
    with pytest.raises(DataFileError, match="window 0"):
        gather(tmp_path, s)
    with pytest.raises(ConfigError, match="lambdas"):
        _settings(lambdas=[0.0, 0.5])
    with pytest.raises(ConfigError, match="samples"):
        _settings(samples=0)
    with pytest.raises(ConfigError, match="unknown"):
        FESettings.from_dict({"sampels": 3})
    system = openmm.System()
    system.addParticle(1.0)
    with pytest.raises(ConfigError, match="lambda_interpolate"):
        Engine(system, np.zeros((1, 3)), s, progress=False)


def test_linear_check_refuses_nonlinear_lambda(tmp_path):
    system, pos = harmonic_wells(2, K_A, K_B, 0.0)
    f = openmm.CustomExternalForce("lambda_interpolate^2*x^2")
    f.addGlobalParameter("lambda_interpolate", 1.0)
    f.addParticle(0, [])
    system.addForce(f)
    with pytest.raises(ConfigError, match="not linear"):
        Engine(system, pos + 0.1, _settings(equilibrate_steps=0), progress=False).run_window(1, tmp_path)


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_a_time_step_far_too_long_is_a_blow_up_naming_the_unit(tmp_path, platform):
    """500 fs in wells with a 220 fs period (Verlet is stable below 70 fs): a BlowUpError naming the unit and the
    time step, no unit file (before: OpenMM's raw NaN exception, or NaN energies handed to MBAR)."""
    from openmlip.errors import BlowUpError

    system, pos = harmonic_wells(N, K_A, K_B, OFFSET, mass_amu=1.0)
    s = _settings(timestep_fs=500.0, equilibrate_steps=0, samples=20, sample_interval=50, platform=platform)
    with pytest.raises(BlowUpError, match=r"λ window 1 \(λ=0.2\), sample \d+ blew up .*timestep_fs 500 is likely too long"):
        Engine(system, pos + 0.01, s, progress=False).run_window(1, tmp_path)
    assert not list(tmp_path.rglob("*.npz"))
    with pytest.raises(BlowUpError, match=r"forward switch 1 of batch 0 blew up"):
        Engine(system, pos + 0.01, s, progress=False).run_switch_batch("forward", 0, tmp_path)


# -- ML/MM through the spec and the CLI -----------------------------------------------------------

FE_SECTION = """
free_energy:
  description: test
  legs:
    mechanical: {}
    electrostatic: {ml: {embedding: electrostatic}}
  difference: [electrostatic, mechanical]
  settings: {windows: 2, timestep_fs: 0.5, minimize_iterations: 5, equilibrate_steps: 5, samples: 4,
             sample_interval: 3, checkpoint_samples: 2, switches: 2, switches_per_batch: 2, switch_stages: 2,
             switch_stage_steps: 2, switch_decorrelation_steps: 3, bootstrap: 5}
"""


@pytest.fixture(scope="module")
def small_spec(tmp_path_factory):
    """NH4+ and Cl- in 123 TIP3P waters (1.6 nm box) with a free_energy section."""
    d = tmp_path_factory.mktemp("spec")
    src = SYSTEMS / "ammonium-water"
    shutil.copy(src / "ammonium-water-small.pdb", d)
    shutil.copy(src / "ammonium.xml", d)
    model = model_file(d / "model.pt", dtype=torch.float32)  # the machinery under test, not trained physics
    (d / "system.yaml").write_text(f"""name: ammonium-small
structure: ammonium-water-small.pdb
forcefield: [amber14/tip3p.xml, ammonium.xml]
nonbonded: {{method: PME, cutoff_nm: 0.7, constraints: HBonds, rigid_water: true}}
ml: {{selection: resname NH4, potential: {model}, embedding: mechanical, charge: 1}}
md: {{temperature_K: 300, steps: 100, report_interval: 10, checkpoint_interval: 100}}
""" + FE_SECTION)
    return d


def test_spec_section_builds_interpolating_mlmm_leg(small_spec):
    """λ=0 is the MM System, λ=1 the ML/MM System of the spec (both embeddings)."""
    from openmlip.fe.spec import build_leg, load_fe_spec
    from openmlip.md.build import build_system

    spec = load_fe_spec(small_spec)
    assert list(spec.legs) == ["mechanical", "electrostatic"] and spec.difference == ("electrostatic", "mechanical")
    assert spec.fe_settings().lambdas == [0.0, 1.0]
    for leg in spec.legs:
        built = build_leg(spec, leg)
        leg_spec = built["spec"]
        plain = build_system(leg_spec)  # the ML/MM System `openmlip md` simulates
        from openmlip.md.structure import load_structure

        mm = load_structure(leg_spec)[3]

        def energy(system, lam=None):
            return openmm_energy(system, built["positions"], platform="CPU", properties={"Threads": "1"},
                                 params=None if lam is None else {"lambda_interpolate": lam})

        e_mm, e_ml = energy(mm), energy(plain["system"])
        # CPU platform, single precision PME: agreement to 1e-6 relative
        assert energy(built["system"], 0.0) == pytest.approx(e_mm, rel=1e-6)
        assert energy(built["system"], 1.0) == pytest.approx(e_ml, rel=1e-6)
        assert energy(built["system"], 0.5) == pytest.approx(0.5 * (e_mm + e_ml), rel=1e-6)
        # the engine's ΔU (only the forces that carry λ; for the electrostatic embedding one is the TorchForce
        # itself, λ inside the graph) is the whole System's E(1) - E(0)
        eng = Engine(built["system"], built["positions"], FESettings(lambdas=[0.0, 1.0], temperature_K=300.0),
                     box_vectors=built.get("box"), progress=False)
        ctx = eng._context(0.0, 1)
        eng.check_linear(ctx, 0.0)
        e0, e1 = eng.endpoint_energies(ctx, 0.0)
        assert e1 - e0 == pytest.approx(e_ml - e_mm, rel=1e-6, abs=1e-3)


def test_spec_errors(tmp_path, small_spec):
    from openmlip.fe.spec import load_fe_spec

    d = tmp_path / "s"
    shutil.copytree(small_spec, d)
    text = (d / "system.yaml").read_text()
    (d / "system.yaml").write_text(text.split("free_energy:")[0])
    with pytest.raises(ConfigError, match="no free_energy section"):
        load_fe_spec(d)
    # (what the file says instead, the error); a leg's region and MM treatment are checked as the spec's are, on load
    for old, new, words in (("mechanical: {}", "mechanical: {ml: {embedding: none}}", "MM end state"),
                            ("mechanical: {}", "mechanical: {ml: {charge: 0.5}}", "legs.mechanical.ml: .*charge"),
                            ("mechanical: {}", "mechanical: {nonbonded: {cutoff_nm: 0}}",
                             "legs.mechanical.nonbonded: cutoff_nm=0 is out of range"),
                            ("samples: 4,", "samples: -1,", "samples"),
                            ("[electrostatic, mechanical]", "[electrostatic, water]", "difference")):
        assert old in text
        (d / "system.yaml").write_text(text.replace(old, new))
        with pytest.raises(ConfigError, match=words):
            load_fe_spec(d)


def test_cli_units_one_by_one_then_gather(small_spec, tmp_path, capsys):
    """The fan-out path: every unit as its own command (as Snakemake runs them), then --gather with ΔΔG."""
    import argparse

    from openmlip.fe import cli

    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    cli.add_parser(sub)

    def run(*argv):
        args = p.parse_args(["fe", str(small_spec), "--out", str(tmp_path), "--quiet", "--platform", "CPU", *argv])
        return args.func(args)

    assert run("--list-units") == 0
    units = [x for x in capsys.readouterr().out.split("\n") if x]
    assert units == [f"{leg} {unit}" for leg in ("mechanical", "electrostatic")
                     for unit in ("window 0", "window 1", "forward 0", "reverse 0")]
    for line in units[:4]:  # one leg unit by unit (the cluster path), the other in one process
        leg, kind, idx = line.split()
        assert run("--leg", leg, *(["--window", idx] if kind == "window" else ["--switch", f"{kind}:{idx}"])) == 0
    assert run("--leg", "electrostatic") == 0
    assert run("--gather") == 0
    printed = capsys.readouterr().out
    assert "ΔΔG electrostatic − mechanical" in printed
    import json

    res = json.loads((tmp_path / "results.json").read_text())
    a, b = res["legs"]["electrostatic"]["mbar"], res["legs"]["mechanical"]["mbar"]
    assert res["difference"]["mbar"]["dg_kJmol"] == pytest.approx(a["dg_kJmol"] - b["dg_kJmol"])
    assert (tmp_path / "report.md").exists() and (tmp_path / "mechanical" / "report.md").exists()
    leg = json.loads((tmp_path / "mechanical" / "results.json").read_text())
    assert leg["embedding"] == "mechanical" and leg["mbar"]["raw_samples"] == [4, 4]
    with pytest.raises(ConfigError, match="exactly one --leg"):
        run("--window", "0")


def test_shipped_specs_have_valid_free_energy_sections():
    from openmlip.fe.spec import load_fe_spec

    for name, legs in (("ammonium-water", {"mechanical", "electrostatic"}), ("t4l99a-pxylene", {"solvent", "complex"})):
        spec = load_fe_spec(SYSTEMS / name)
        assert set(spec.legs) == legs
        s, smoke = spec.fe_settings(), spec.fe_settings(smoke=True)
        assert s.lambdas[0] == 0.0 and s.lambdas[-1] == 1.0 and smoke.samples < s.samples
    t4l = load_fe_spec(SYSTEMS / "t4l99a-pxylene")
    assert t4l.difference == ("complex", "solvent")
    assert t4l.leg_spec("solvent").structure == {"prmtop": "ligand.prmtop", "inpcrd": "ligand.crd"}
