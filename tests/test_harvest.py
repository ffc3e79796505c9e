"""Harvesting training data from an MD run (openmlip.data.harvest): whole molecules across the periodic box, the
cluster's charge from the run's formal charges, real GFN2-xTB labels, exact resume, one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.physics import assert_charges_sum_to_total
from openmlip.data import XTB_LABELS, read_spice
from openmlip.data.harvest import cut_cluster, harvest, stretched_hydrogens
from openmlip.errors import ResumeError

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "systems" / "ammonium-water" / "system-full-ml.yaml"


def test_cut_cluster_takes_whole_molecules_at_their_image_nearest_the_centre():
    box = np.array([10.0, 10.0, 10.0])
    # water A wrapped across the x faces (O at 9.8, its H at 0.6 and 9.3), water B 5 Å away, centre: A's first H
    xyz = np.array([[9.8, 5.0, 5.0], [0.6, 5.0, 5.0], [9.3, 5.8, 5.0], [5.0, 5.0, 5.0], [5.9, 5.0, 5.0], [4.7, 5.9, 5.0],
                    [9.9, 5.0, 5.5]])  # and a lone ion 0.86 Å from the centre through the x faces
    mols = [[0, 1, 2], [3, 4, 5], [6]]
    idx, pos = cut_cluster(xyz, box, mols, centre=1, radius=3.0)
    assert idx == [0, 1, 2, 6]
    assert np.linalg.norm(pos[1] - pos[0]) == pytest.approx(0.8) and np.linalg.norm(pos[2] - pos[0]) < 1.0
    assert pos[3] == pytest.approx([-0.1, 5.0, 5.5]) and np.linalg.norm(pos[3] - xyz[1]) < 0.9
    # without a box nothing is wrapped: A's far H is 9.2 Å away and B is out of range
    idx, _ = cut_cluster(xyz, None, mols, centre=3, radius=3.0)
    assert idx == [3, 4, 5]
    # the most stretched X-H bonds (minimum image: A's H at 0.6 is 0.8 Å from its O, not 9.2), one per heavy atom
    bonds = [(0, 1), (0, 2), (3, 4), (3, 5)]
    assert stretched_hydrogens(xyz, box, bonds, 3) == [5, 2]  # 0.95 and 0.94 Å; H1 (0.8 Å) shares H2's O
    assert stretched_hydrogens(xyz, None, bonds, 1) == [1]  # without the box the wrapped H looks 9.2 Å away


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from openmlip.md.build import build_system
    from openmlip.md.spec import load_spec
    from openmlip.md.system import run_system

    out = tmp_path_factory.mktemp("run")
    spec = load_spec(SPEC)
    run_system(spec, out / "run", smoke=True, progress=False)
    return spec, build_system(spec), out / "run" / "md" / "trajectory.h5"


def test_harvest_labels_whole_molecules_at_their_formal_charge_and_resumes(smoke_run, tmp_path):
    spec, built, traj = smoke_run
    kw = dict(prefix="h", frames=2, centres=2, radius=3.5, progress=False)
    args = (traj, built["mdtraj_topology"], built["ml_atoms"], built["ml_formal_charges"])
    man = harvest(*args, tmp_path / "whole.h5", **kw)
    assert man["clusters"] + len(man["skipped"]) == 4 and man["clusters"] >= 3
    fc = dict(zip(built["ml_atoms"], built["ml_formal_charges"]))
    clusters = list(read_spice(tmp_path / "whole.h5", **XTB_LABELS.kwargs()))
    for c in clusters:
        assert c.subset == "harvested" and c.name.startswith("h-f")
        assert c.total_charge == pytest.approx(c.formal_charges.sum())
        assert set(np.unique(c.formal_charges)) <= {-1.0, 0.0, 1.0}
        assert_charges_sum_to_total(c.charges, c.total_charge, atol=1e-5, what=c.name)
        # whole waters: each O has two H within 1.3 Å in the cut (unwrapped) positions
        o = np.flatnonzero(c.numbers == 8)
        h = np.flatnonzero(c.numbers == 1)
        d = np.linalg.norm(c.positions[o][:, None] - c.positions[h][None], axis=-1)
        assert ((d < 1.3).sum(axis=1) == 2).all(), c.name
    assert sum(fc.values()) == 0.0  # NH4+ and Cl- in the run; a cluster holding one of them is charged
    # killed after one cluster, rerun: the same file, nothing recomputed that was saved
    first = harvest(*args, tmp_path / "cut.h5", stop_after=1, **kw)
    assert first == {"status": "interrupted", "labelled": 1} and (tmp_path / "cut.h5.partial.json").exists()
    harvest(*args, tmp_path / "cut.h5", **kw)
    again = {c.name: c.energy for c in read_spice(tmp_path / "cut.h5", **XTB_LABELS.kwargs())}
    assert again == pytest.approx({c.name: c.energy for c in clusters}, abs=1e-6)
    assert not (tmp_path / "cut.h5.partial.json").exists()
    # a rerun with other settings does not mix into a kept progress file
    harvest(*args, tmp_path / "mix.h5", stop_after=1, **kw)
    with pytest.raises(ResumeError, match=r"radius_A: 3\.5 -> 5\.0"):
        harvest(*args, tmp_path / "mix.h5", **{**kw, "radius": 5.0})
    # nor does another run's trajectory of the same name (case 9): its path and content are recorded
    other = tmp_path / "other" / "trajectory.h5"
    other.parent.mkdir()
    other.write_bytes(traj.read_bytes())
    with pytest.raises(ResumeError, match=r"trajectory_path: .* -> .*other/trajectory\.h5"):
        harvest(other, *args[1:], tmp_path / "mix.h5", **kw)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "openmlip.cli", *args], capture_output=True, text=True, timeout=300)


def test_harvest_cli_names_a_missing_run_and_bad_numbers(tmp_path):
    r = _cli("data", "harvest", str(SPEC), str(tmp_path / "nope"), "--out", str(tmp_path / "h.h5"))
    assert r.returncode == 2 and "no trajectory" in r.stderr and "Traceback" not in r.stderr
    r = _cli("data", "harvest", str(SPEC), str(tmp_path), "--out", str(tmp_path / "h.h5"), "--radius", "0")
    assert r.returncode == 2 and "--radius 0.0: must be > 0" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_harvest_of_a_truncated_trajectory_is_one_line(smoke_run, tmp_path):
    """Before: an HDF5 traceback."""
    import shutil

    cut = tmp_path / "trajectory.h5"
    shutil.copyfile(smoke_run[2], cut)
    os.truncate(cut, cut.stat().st_size // 2)
    r = _cli("data", "harvest", str(SPEC), str(cut), "--out", str(tmp_path / "h.h5"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "cannot be read (HDF5ExtError" in r.stderr and "empty, truncated or not a trajectory" in r.stderr


def test_a_hydrogen_that_flew_off_is_not_labelled_and_the_manifest_says_why(tmp_path):
    import mdtraj

    top = mdtraj.Topology()
    chain = top.add_chain()
    for _ in range(2):
        res = top.add_residue("HOH", chain)
        o = top.add_atom("O", mdtraj.element.oxygen, res)
        for name in ("H1", "H2"):
            top.add_bond(o, top.add_atom(name, mdtraj.element.hydrogen, res))
    xyz = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0],  # intact water
                    [5.0, 0.0, 0.0], [5.0, 6.0, 0.0], [4.7, -0.9, 0.0]])  # another that lost an H (6 Å)
    mdtraj.Trajectory(xyz[None] / 10.0, top).save_hdf5(str(tmp_path / "t.h5"))
    man = harvest(tmp_path / "t.h5", top, list(range(6)), None, tmp_path / "h.h5", prefix="w", frames=1, centres=2,
                  radius=2.5, progress=False)
    assert man["skipped"] == {"w-f00000-h4": "an atom 6.0 Å from all others: it flew off"}
    (c,) = read_spice(tmp_path / "h.h5", **XTB_LABELS.kwargs())
    assert c.name == "w-f00000-h2" and len(c.numbers) == 3 and c.total_charge == 0.0  # intact: its H2 0.9605 Å
    assert json.loads((tmp_path / "h.json").read_text())["clusters"] == 1


def test_close_contacts_are_the_closest_heavy_atoms_of_different_molecules_across_the_box():
    from openmlip.data.harvest import close_contacts

    box = np.array([10.0, 10.0, 10.0])
    # three waters' oxygens (H omitted, they are not heavy): A at 0.5 and C at 9.3 are 1.2 Å apart through the
    # x faces; B is 2.5 Å from A directly; the O and its own H never count
    xyz = np.array([[0.5, 5.0, 5.0], [1.4, 5.0, 5.0], [0.5, 7.5, 5.0], [9.3, 5.0, 5.0]])
    heavy = np.array([True, False, True, True])
    mols = [[0, 1], [2], [3]]
    assert close_contacts(xyz, box, mols, heavy, 1) == [0]  # A-C, 1.2 Å
    assert close_contacts(xyz, box, mols, heavy, 3) == [0]  # B-A and B-C reuse a used atom: one pair only
    assert close_contacts(xyz, None, mols, heavy, 1) == [0]  # A-B 2.5 Å without the box (C is 8.8 Å away)
    assert close_contacts(xyz, box, [[0, 1, 2, 3]], heavy, 2) == []  # one molecule: no contact between molecules
