"""No native crash and no silent wrong number inside the TorchScript graph .

A ``TorchForce`` used to segfault on any error raised inside the model graph (openmm-torch freezes the
module, and torch's freeze frees the methods it inlined: printing the error's traceback then read freed
memory).  The OpenMM cases therefore run in a subprocess on the Reference and CPU platforms, so that a
regression fails the test instead of killing pytest.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.systems import ammonium_water_cluster, as_data, evaluate, make_model
from openmlip.errors import GeometryError, UnsupportedElementError
from openmlip.nn.neighbors import neighbor_list
from openmlip.openmm import OpenMMPotential

PLATFORMS = ["Reference", "CPU"]

# Each case prints one JSON line {"case", "error", "message"} as soon as it has run: a segfault shows as a
# non-zero exit code after the last case that finished.
_NATIVE_SCRIPT = r'''
import json, sys
import numpy as np, torch
import openmlip, openmm
from helpers.systems import ammonium_water_cluster, make_model
from openmlip.openmm import OpenMMPotential, create_force
from openmlip.openmm.embedding import EmbeddedPotential
torch.set_num_threads(1)
platform = openmm.Platform.getPlatformByName(sys.argv[1])
model = make_model("allegro", "sum", torch.float64)


def context(force, n, box=None):
    system = openmm.System()
    for _ in range(n):
        system.addParticle(16.0)
    if box is not None:
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    system.addForce(force)
    return openmm.Context(system, openmm.VerletIntegrator(0.0005), platform)


def report(case, call):
    try:
        call()
        out = {"case": case, "error": None, "message": ""}
    except Exception as exc:
        out = {"case": case, "error": type(exc).__name__, "message": str(exc).strip().splitlines()[-1]}
    print(json.dumps(out), flush=True)


def energy_forces(ctx):
    ctx.getState(getEnergy=True, getForces=True)


z, pos = ammonium_water_cluster()
pos_nm = pos / 10.0

# case 1: an element the model lacks reaching the graph (the constructor refuses it; here forced in)
pot = OpenMMPotential(model, z.tolist(), total_charge=1.0, dtype=torch.float64)
pot.atomic_numbers[3] = 26
ctx = context(create_force(pot), len(z))
ctx.setPositions(pos_nm)
report("element", lambda: energy_forces(ctx))

# a force built for fewer particles than the System has
pot = OpenMMPotential(model, z[:8].tolist(), total_charge=1.0, dtype=torch.float64)
ctx = context(create_force(pot), len(z))
ctx.setPositions(pos_nm)
report("particles", lambda: energy_forces(ctx))

# case 4: non-finite and coincident ML coordinates, both backends
for backend in ("torchforce", "pythonforce"):
    pot = OpenMMPotential(model, z.tolist(), total_charge=1.0, dtype=torch.float64)
    ctx = context(create_force(pot, backend), len(z))
    for case, value in (("nan", np.nan), ("inf", np.inf)):
        bad = pos_nm.copy()
        bad[3, 1] = value
        ctx.setPositions(bad)
        report(f"{case}-{backend}", lambda: energy_forces(ctx))
    same = pos_nm.copy()
    same[7] = same[2]
    ctx.setPositions(same)
    report(f"coincident-{backend}", lambda: energy_forces(ctx))
    ctx.setPositions(pos_nm)
    report(f"valid-{backend}", lambda: energy_forces(ctx))

# case 3: 27 waters in a 0.93 nm box (model cutoff 0.45 nm), shrunk at run time to 0.8 nm
rng = np.random.default_rng(0)
zw, pw = [], []
for i in range(3):
    for j in range(3):
        for k in range(3):
            o = np.array([i, j, k]) * 3.1 + rng.normal(scale=0.1, size=3)
            zw += [8, 1, 1]
            pw += [o, o + [0.96, 0, 0], o + [-0.24, 0.93, 0]]
pw = np.array(pw) / 10.0
box = np.eye(3) * 0.93
for method in ("brute", "cell"):
    pot = OpenMMPotential(model, zw, periodic=True, dtype=torch.float64, neighbor_method=method)
    ctx = context(create_force(pot), len(zw), box)
    ctx.setPositions(pw)
    report(f"box-ok-{method}", lambda: energy_forces(ctx))
    ctx.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in np.eye(3) * 0.8])
    report(f"box-getstate-{method}", lambda: energy_forces(ctx))
    report(f"box-step-{method}", lambda: ctx.getIntegrator().step(1))

# case 3, electrostatic embedding: ML = first water, MM = the others (TIP3P charges), embedding cutoff
# 0.6 nm > model cutoff: the box must be >= 1.2 nm; 1.0 nm passes the model's bound but not the embedding's
mm = list(range(3, len(zw)))
charges = [-0.834 if zw[i] == 8 else 0.417 for i in mm]
scaled = pw * (1.3 / 0.93)
pot = EmbeddedPotential(model, zw[:3], mm, charges, embedding_cutoff=0.6, indices=[0, 1, 2], num_particles=len(zw),
                        periodic=True, dtype=torch.float64)
ctx = context(create_force(pot), len(zw), np.eye(3) * 1.3)
ctx.setPositions(scaled)
report("embedding-box-ok", lambda: energy_forces(ctx))
ctx.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in np.eye(3) * 1.0])
report("embedding-box-getstate", lambda: energy_forces(ctx))
report("embedding-box-step", lambda: ctx.getIntegrator().step(1))
print("DONE", flush=True)
'''


@pytest.fixture(scope="module", params=PLATFORMS)
def native(request):
    """Run the OpenMM cases in a subprocess on one platform: (exit code, {case: result}, output)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _NATIVE_SCRIPT, request.param], cwd=Path(__file__).parent,
                          env=env, capture_output=True, text=True, timeout=900)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            results[row["case"]] = row
    return proc.returncode, results, proc.stdout[-3000:] + proc.stderr[-3000:], request.param


def _expect(native, case, *words, error="OpenMMException"):
    rc, results, output, _ = native
    assert case in results, f"case {case!r} never finished (exit code {rc}):\n{output}"
    row = results[case]
    assert row["error"] == error, row
    for word in words:
        assert word in row["message"], row


def test_native_cases_exit_cleanly(native):
    rc, results, output, _ = native
    assert rc == 0 and "DONE" in output, f"exit code {rc}:\n{output}"


# ---- case 1: unsupported elements ----------------------------------------------------------------------


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "scripted"])
def test_unsupported_element_refused_at_construction(scripted):
    model = make_model("allegro", "sum", torch.float64)
    if scripted:
        model = torch.jit.script(model)
    with pytest.raises(UnsupportedElementError, match=r"element\(s\) Fe not supported by this model; it knows H, C, N, O, Na, Cl"):
        OpenMMPotential(model, [8, 1, 1, 26])
    with pytest.raises(UnsupportedElementError, match="8.5 not supported"):
        OpenMMPotential(model, [8.5, 1, 1])
    OpenMMPotential(model, [8, 1, 1])


def test_species_lookup_raises_in_graph():
    model = make_model("allegro", "sum", torch.float64)
    z, pos = ammonium_water_cluster()
    z[3] = 26
    with pytest.raises(UnsupportedElementError, match="element.s. Fe not supported by this model; it knows H, C, N, O, Na, Cl"):
        evaluate(model, as_data(z, pos, charge=1.0))
    z[3] = 200  # beyond the periodic table: no out-of-range lookup
    with pytest.raises(torch.jit.Error, match=r"UnsupportedElementError: element\(s\) 200 not supported"):
        evaluate(torch.jit.script(model), as_data(z, pos, charge=1.0))


def test_unsupported_element_in_torchforce_is_an_exception(native):
    _expect(native, "element", "UnsupportedElementError", "Fe not supported by this model")


def test_wrong_particle_count_is_an_exception(native):
    n = len(ammonium_water_cluster()[0])
    _expect(native, "particles", "SelectionError", f"built for a System of 8 particles but OpenMM passed {n}")


# ---- case 3: a periodic box shrunk below twice the cutoff at run time -------------------------------------


@pytest.mark.parametrize("method", ["brute", "cell"])
def test_shrunk_box_raises_from_getstate_and_step(native, method):
    _expect(native, f"box-ok-{method}", error=None)
    for call in ("getstate", "step"):
        _expect(native, f"box-{call}-{method}", "BoxError: periodic box width 0.8 nm is below twice the model cutoff "
                "(2 x 0.45 nm)", "enlarge the box")


def test_embedding_box_bound_includes_the_embedding_cutoff(native):
    _expect(native, "embedding-box-ok", error=None)
    for call in ("getstate", "step"):
        _expect(native, f"embedding-box-{call}", "periodic box width 1 nm is below twice the electrostatic embedding "
                "cutoff (2 x 0.6 nm)")


# ---- case 4: non-finite and coincident coordinates --------------------------------------------------------


@pytest.mark.parametrize("backend", ["torchforce", "pythonforce"])
def test_nonfinite_and_coincident_coordinates_raise(native, backend):
    platform = native[3]
    _expect(native, f"inf-{backend}", "coordinates of 1 ML particle(s) are not finite (NaN or inf), particles [3]")
    if platform == "CPU":  # OpenMM's CPU platform refuses NaN coordinates itself, before any force runs
        _expect(native, f"nan-{backend}", "NaN")
    else:
        _expect(native, f"nan-{backend}", "coordinates of 1 ML particle(s) are not finite (NaN or inf), particles [3]")
    _expect(native, f"coincident-{backend}", "ML particles 2 and 7 are closer than 1e-4 Å", "duplicated atom")
    _expect(native, f"valid-{backend}", error=None)


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "scripted"])
def test_model_neighbor_list_refuses_nonfinite_and_coincident_atoms(scripted):
    """The ASE / training route: the model builds its own list and used to drop a NaN atom silently."""
    model = make_model("nequip", "sum", torch.float64)
    if scripted:
        model = torch.jit.script(model)
    error = torch.jit.Error if scripted else GeometryError
    z, pos = ammonium_water_cluster()
    for value in (np.nan, np.inf):
        bad = pos.copy()
        bad[3, 1] = value
        with pytest.raises(error, match=r"positions of 1 atom\(s\) are not finite \(NaN or inf\), atom indices \[3\]"):
            evaluate(model, as_data(z, bad, charge=1.0))
    same = pos.copy()
    same[7] = same[2]
    with pytest.raises(error, match="atoms 2 and 7 are closer than 1e-4 Å"):
        evaluate(model, as_data(z, same, charge=1.0))
    near = pos.copy()
    near[7] = near[2] + [2e-4, 0.0, 0.0]  # above the threshold: evaluated, finite
    out = evaluate(model, as_data(z, near, charge=1.0))
    assert torch.isfinite(out["energy"]).all() and torch.isfinite(out["forces"]).all()


def test_periodic_model_list_refuses_coincident_images():
    pos = torch.tensor([[0.1, 0.1, 0.1], [5.1, 0.1, 0.1]], dtype=torch.float64)  # same point one cell apart
    cell = (torch.eye(3, dtype=torch.float64) * 5.0).unsqueeze(0)
    with pytest.raises(GeometryError, match="atoms 0 and 1 are closer than 1e-4 Å"):
        neighbor_list(pos, torch.zeros(2, dtype=torch.long), 2.0, 1, cell, torch.ones((1, 3), dtype=torch.bool))

