"""Model files (round trip, validation errors) and the command line."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest
import torch

from helpers.systems import ammonium_water_cluster, as_data, evaluate, make_model
from openmlip import MODEL_FORMAT_VERSION
from openmlip.deploy import METADATA_NAME, load_model, save_model
from openmlip.errors import ModelFileError


def test_round_trip_preserves_outputs_and_metadata(tmp_path):
    model = make_model("nequip", "charge-gated", torch.float64, electrostatics=True)
    path = tmp_path / "m.pt"
    save_model(model, path, provenance={"dataset": "x.h5", "sha256": "abc"}, metrics={"force_mae_meV_A": 12.0})
    loaded, meta = load_model(path)
    assert meta["format_version"] == MODEL_FORMAT_VERSION
    assert meta["elements"] == ["H", "C", "N", "O", "Na", "Cl"] and meta["cutoff"] == 4.5
    assert meta["units"]["energy"] == "eV" and meta["dtype"] == "float64" and meta["electrostatics"] is True
    assert meta["provenance"]["sha256"] == "abc" and meta["metrics"]["force_mae_meV_A"] == 12.0
    z, pos = ammonium_water_cluster()
    data = as_data(z, pos, charge=1.0)
    a, b = evaluate(model, data), evaluate(loaded, data)
    for k in ("energy", "forces", "charges"):
        torch.testing.assert_close(b[k], a[k], rtol=1e-12, atol=1e-12)
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist; pass the path of a file written by `openmlip deploy`"):
        load_model(tmp_path / "nope.pt")


def test_truncated_file(tmp_path):
    path = tmp_path / "m.pt"
    save_model(make_model(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="is corrupt or not a TorchScript archive.*re-create it with `openmlip deploy`"):
        load_model(path)


def test_not_an_openmlip_file(tmp_path):
    path = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(ModelFileError, match="has no openmlip metadata"):
        load_model(path)


def test_newer_format_version(tmp_path):
    path = tmp_path / "m.pt"
    save_model(make_model(), path)
    # rewrite the metadata entry with a future format version
    with zipfile.ZipFile(path) as zin:
        items = {n: zin.read(n) for n in zin.namelist()}
    name = next(n for n in items if n.endswith("extra/" + METADATA_NAME))
    meta = json.loads(items[name])
    meta["format_version"] = MODEL_FORMAT_VERSION + 1
    items[name] = json.dumps(meta).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
        for n, d in items.items():
            zout.writestr(n, d)
    with pytest.raises(ModelFileError, match=f"uses openmlip model format {MODEL_FORMAT_VERSION + 1}.*upgrade openmlip"):
        load_model(path)


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "openmlip.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_doctor_reports_reference_and_cpu_with_torch_plugin():
    res = _cli("doctor", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    rep = json.loads(res.stdout)
    assert rep["ok"] is True
    for name in ("Reference", "CPU"):
        assert rep["platforms"][name]["torch_plugin"] is True
    assert rep["versions"]["torch"].startswith("2.9.") and rep["versions"]["openmmtorch"] == "1.5"
    text = _cli("doctor")
    assert "Reference  Torch plugin loaded" in text.stdout and "status: OK" in text.stdout


def test_demo_writes_outputs(tmp_path):
    res = _cli("demo", "--out", str(tmp_path), "--steps", "40", "--quiet")
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["energy_rel_diff"] < 1e-5 and summary["final_energy_finite"]
    import mdtraj

    traj = mdtraj.load(str(tmp_path / "md" / "trajectory.h5"))  # the runner's outputs: the demo is a spec run
    assert traj.n_atoms == 17 and traj.n_frames >= 20
    assert json.loads((tmp_path / "md" / "run.json").read_text())["system"] == "ammonium-cluster"
    assert f"Outputs in {tmp_path}" in res.stdout


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    res = _cli("demo", "--out", str(tmp_path), "--steps", "0")
    assert res.returncode == 2
    assert res.stderr.strip().startswith("openmlip: error:") and "Traceback" not in res.stderr


def test_doctor_states_whether_openmm_ml_s_other_potentials_build_ml_mm_systems():
    """The stack's cost, pinned to the behaviour: openmm-ml's ASE potential (its PythonForce route, shared by
    MACE, ANI, ...) builds a whole-ML System here, and its ML/MM System works exactly when the doctor says so.
    On openmm 8.5.2 it fails on PythonForce.setParticles; the day a fixed openmm-torch lets the pin move, this
    test fails until the doctor's note and the README's paragraph go."""
    from pathlib import Path

    import openmm
    import openmm.app as app
    from ase.calculators.lj import LennardJones
    from openmmml import MLPotential

    from openmlip.doctor import run_checks

    top = app.Topology()
    chain = top.addChain()
    for _ in range(2):
        res = top.addResidue("AR", chain)
        top.addAtom("Ar", app.element.argon, res)
    mm = openmm.System()
    for _ in range(2):
        mm.addParticle(39.9)
    potential = MLPotential("ase")
    whole = potential.createSystem(top, calculator=LennardJones(sigma=3.4, epsilon=0.0104))
    ctx = openmm.Context(whole, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions([openmm.Vec3(0, 0, 0), openmm.Vec3(0.38, 0, 0)])
    x = 3.4 / 3.8
    lj_kj = 4 * 0.0104 * (x**12 - x**6) * 96.485332  # eV -> kJ/mol (ASE's LennardJones is shifted to 0 at rc = 10.2 Å)
    assert ctx.getState(getEnergy=True).getPotentialEnergy()._value == pytest.approx(lj_kj, rel=0.02)
    try:
        potential.createMixedSystem(top, mm, [0], calculator=LennardJones())
        mixed = True
    except AttributeError as exc:
        assert "setParticles" in str(exc)
        mixed = False
    rep = run_checks()
    assert rep.openmm_ml_mixed_systems is mixed
    assert mixed == (tuple(int(v) for v in openmm.__version__.split(".")[:2]) >= (8, 6))
    noted = any("PythonForce.setParticles" in n and "second environment" in n for n in rep.notes)
    assert noted is not mixed
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert ("'PythonForce' object has no attribute 'setParticles'" in readme) is not mixed
