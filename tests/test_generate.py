"""GFN2-xTB reference generation (real tblite): labels at the right charge, resume without recomputation."""
from __future__ import annotations

import numpy as np
import pytest

from helpers.physics import Tol, assert_charges_sum_to_total, assert_forces_match_finite_differences
from openmlip import units
from openmlip.data import XTB_LABELS, read_spice
from openmlip.data.generate import generate
from openmlip.data.structure import Structure
from openmlip.errors import ResumeError
from openmlip.data.templates import TEMPLATES



def test_generate_resumes_and_labels_charged_species(tmp_path):
    out = tmp_path / "xtb.h5"
    names = ["ammonium", "acetate"]
    first = generate(out, names, conformers=4, stride=5, progress=False, stop_after_templates=1)
    assert first == {"status": "interrupted", "computed": 4}
    assert not out.exists()  # no partial output file
    shard = tmp_path / "xtb.h5.parts" / "ammonium.h5"
    stamp = shard.stat().st_mtime_ns
    man = generate(out, names, conformers=4, stride=5, progress=False)
    assert man["computed_this_run"] == 4  # only acetate was computed
    assert shard.stat().st_mtime_ns == stamp
    data = list(read_spice(out, **XTB_LABELS.kwargs()))
    assert len(data) == 8
    by_name = {}
    for s in data:
        by_name.setdefault(s.name, s)  # the first conformer of each template
    assert by_name["ammonium"].total_charge == 1.0 and by_name["acetate"].total_charge == -1.0
    for s in data:
        assert_charges_sum_to_total(s.charges, s.total_charge, atol=1e-6, what=s.name)  # xTB charges at the requested total charge
    # per-atom formal charges stored and read back, on the charged atom, as users give them at run time
    np.testing.assert_array_equal(by_name["ammonium"].formal_charges, [1, 0, 0, 0, 0])
    assert by_name["ammonium"].numbers[0] == 7
    fc = by_name["acetate"].formal_charges
    assert fc.sum() == -1 and by_name["acetate"].numbers[np.argmin(fc)] == 8
    # NH4+ computed as a cation: its energy differs from the neutral radical at the same geometry by the IP
    from ase import Atoms
    from tblite.ase import TBLite

    s = by_name["ammonium"]
    atoms = Atoms(numbers=s.numbers, positions=s.positions)
    atoms.calc = TBLite(method="GFN2-xTB", charge=1.0, multiplicity=1, verbosity=0)
    assert atoms.get_potential_energy() == pytest.approx(s.energy, abs=1e-6)
    atoms.calc = TBLite(method="GFN2-xTB", charge=0.0, multiplicity=2, verbosity=0)
    assert abs(atoms.get_potential_energy() - s.energy) > 1.0  # eV: the radical is a different state
    # units: the file stores hartree; read back in eV
    import h5py

    with h5py.File(out) as fh:
        e_h = fh["ammonium"]["xtb_total_energy"][0]
    assert by_name["ammonium"].energy == pytest.approx(e_h * units.HARTREE_TO_EV, rel=1e-14)


def test_template_formal_charges_follow_the_atom_order_and_waters():
    from openmlip.data.geometry import build_template
    from openmlip.data.templates import TEMPLATES, template_formal_charges

    for name in ("ammonium-water4", "chloride-water5", "methylammonium", "water-16", "alanine-dipeptide"):
        t = TEMPLATES[name]
        z, _ = build_template(t)
        fc = template_formal_charges(t, z)
        assert len(fc) == len(z) and fc.sum() == t.charge
        assert np.all(fc[len(z) - 3 * t.waters:] == 0)
    with pytest.raises(ValueError, match="do not follow the template's order"):
        template_formal_charges(TEMPLATES["ammonium"], [1, 7, 1, 1, 1])


def test_reuse_takes_conformers_of_the_same_templates_and_records_it(tmp_path):
    from openmlip.data.generate import reuse_templates

    first = generate(tmp_path / "a.h5", ["water", "ammonium"], conformers=2, progress=False)
    assert first["computed_this_run"] == 4
    again = generate(tmp_path / "b.h5", ["ammonium", "water"], conformers=2, progress=False, reuse=[tmp_path / "a.h5"])
    assert again["computed_this_run"] == 0 and again["reused"] == {"a.h5": ["ammonium", "water"]}
    # a rerun (a resumed run finds the parts already there) still reports what was reused; a part computed
    # after all no longer counts as reused
    (tmp_path / "b.h5.parts" / "water.h5").unlink()
    resumed = generate(tmp_path / "b.h5", ["ammonium", "water"], conformers=2, progress=False)
    assert resumed["computed_this_run"] == 2 and resumed["reused"] == {"a.h5": ["ammonium"]}
    a = {(s.name, s.energy) for s in read_spice(tmp_path / "a.h5", **XTB_LABELS.kwargs())}
    assert {(s.name, s.energy) for s in read_spice(tmp_path / "b.h5", **XTB_LABELS.kwargs())} == a
    # another stride, seed or number of conformers is another sampling: nothing is taken
    assert reuse_templates(tmp_path / "a.h5", ["water"], tmp_path, conformers=2, seed=0, stride=10) == []
    assert reuse_templates(tmp_path / "a.h5", ["water"], tmp_path, conformers=2, seed=1, stride=20) == []
    assert reuse_templates(tmp_path / "a.h5", ["water"], tmp_path, conformers=3, seed=0, stride=20) == []
    # nor a template whose definition changed since the dataset was made
    import json

    man = json.loads((tmp_path / "a.json").read_text())
    man["templates"]["water"]["stretch_to"] = 3.2
    (tmp_path / "a.json").write_text(json.dumps(man))
    assert reuse_templates(tmp_path / "a.h5", ["water"], tmp_path / "c.parts", conformers=2, seed=0, stride=20) == []


def test_unknown_template_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"unknown template\(s\) \['ammonium-ice'\]; available: "):
        generate(tmp_path / "x.h5", ["ammonium-ice"], conformers=1, progress=False)
    assert "p-xylene" in TEMPLATES and TEMPLATES["acetate"].charge == -1


def test_killed_template_resumes_mid_trajectory_identically(tmp_path):
    """A run stopped inside a template continues its MD from the checkpoint: same conformers as uninterrupted."""
    names = ["ammonium-water1"]
    kw = dict(conformers=6, stride=4, progress=False, checkpoint_every=2)
    whole = generate(tmp_path / "whole.h5", names, **kw)
    assert whole["computed_this_run"] == 6
    first = generate(tmp_path / "cut.h5", names, stop_after_conformers=3, **kw)
    assert first == {"status": "interrupted", "computed": 3}
    assert (tmp_path / "cut.h5.parts" / "ammonium-water1.partial.json").exists()
    assert not (tmp_path / "cut.h5").exists()
    second = generate(tmp_path / "cut.h5", names, **kw)
    assert second["computed_this_run"] == 3  # the 3 saved conformers were not recomputed
    assert not (tmp_path / "cut.h5.parts" / "ammonium-water1.partial.json").exists()
    keys = XTB_LABELS.kwargs()
    a = list(read_spice(tmp_path / "whole.h5", **keys))
    b = list(read_spice(tmp_path / "cut.h5", **keys))
    assert len(a) == len(b) == 6
    for x, y in zip(a, b):  # same trajectory; xTB's threaded SCC leaves ~1e-8 Å of noise between processes
        np.testing.assert_allclose(x.positions, y.positions, atol=1e-6)
        assert x.energy == pytest.approx(y.energy, abs=1e-6)


def test_stretch_template_spans_the_bond_breaking_curve(tmp_path):
    from openmlip.data.generate import sample_template

    confs = sample_template(TEMPLATES["ammonium-stretch"], 8, seed=0)
    r = np.array([np.linalg.norm(s.positions[1:] - s.positions[0], axis=1).max() for s in confs])
    assert r.min() < 1.1 and r.max() > 2.3  # 0.85x .. 2.6x of 1.03 Å
    e = np.array([s.energy for s in confs])
    assert e[-1] - e.min() > 2.0  # eV: pulling an H off NH4+ costs energy (xTB), which the model must learn
    for s in confs:
        assert_charges_sum_to_total(s.charges, 1.0, atol=1e-6)
    # a template's stretch_to sets the longest stretch: 3.2x reaches past the 3 r0 the dissociation scans end at
    assert TEMPLATES["ammonium-long-stretch"].stretch_to == 3.2 and TEMPLATES["ammonium-stretch"].stretch_to == 2.6
    long = sample_template(TEMPLATES["ammonium-long-stretch"], 8, seed=0)
    r_long = np.array([np.linalg.norm(s.positions[1:] - s.positions[0], axis=1).max() for s in long])
    assert r_long.max() > 3.0 > r.max()


def test_isolated_atom_energies_are_ground_state_atoms():
    from openmlip.data.xtb import isolated_atom_energies

    e = isolated_atom_energies(["H", "O"])
    assert e["H"] == pytest.approx(-10.707, abs=0.01)  # GFN2-xTB H atom, doublet
    with pytest.raises(ValueError, match="no ground-state multiplicity known for 'Xe'"):
        isolated_atom_energies(["Xe"])


def test_dft_relabel_charged_species_resumes_and_is_consistent(tmp_path):
    """PySCF relabelling: charge +1 is used (not the radical), forces = -dE/dx, charges sum to Q, resume."""
    from openmlip.data import DFT_LABELS
    from openmlip.data.dft import dft_label, relabel

    src = tmp_path / "xtb.h5"
    generate(src, ["ammonium"], conformers=3, stride=5, progress=False)
    out = tmp_path / "dft.h5"
    first = relabel(src, out, 2, xc="b3lyp", basis="sto-3g", progress=False, stop_after=1)
    assert first == {"status": "interrupted", "computed": 1} and not out.exists()
    # a rerun at another level would mix two levels of theory in one file: refused, the progress kept
    with pytest.raises(ResumeError, match="relabel run with other settings.*: density_fit: true -> false\\. Use a new"):
        relabel(src, out, 2, xc="b3lyp", basis="sto-3g", progress=False, density_fit=False)
    with pytest.raises(ResumeError, match="xc: b3lyp -> pbe; basis: sto-3g -> 3-21g"):
        relabel(src, out, 2, xc="pbe", basis="3-21g", progress=False)
    man = relabel(src, out, 2, xc="b3lyp", basis="sto-3g", progress=False)
    assert man["computed_this_run"] == 1 and man["conformers"] == 2
    data = list(read_spice(out, **DFT_LABELS.kwargs()))
    s = data[0]
    assert s.total_charge == 1.0
    assert_charges_sum_to_total(s.charges, 1.0, atol=1e-6)
    # forces equal -dE/dx (central finite difference on one coordinate)
    from dataclasses import replace

    assert_forces_match_finite_differences(lambda p: dft_label(replace(s, positions=p), "b3lyp", "sto-3g").energy, s.positions,
                                           s.forces, h=1e-3, coords=[(1, 0)], tol=Tol(atol=2e-3))


def test_dft_dispersion_correction_enters_energy_and_forces(monkeypatch):
    """b3lyp-d3bj = b3lyp + the D3(BJ) term (pyscf-dispersion), in the energy and in its gradient; without the
    package the level is refused before any SCF."""
    import sys
    from dataclasses import replace

    from openmlip.data.dft import dft_label
    from openmlip.data.geometry import build_template
    from openmlip.errors import ConfigError

    z, pos = build_template(TEMPLATES["methylammonium"], 0)
    s = Structure(numbers=np.asarray(z), positions=np.asarray(pos), total_charge=1.0, spin_multiplicity=1.0, name="m")
    plain, d3 = dft_label(s, "b3lyp", "sto-3g"), dft_label(s, "b3lyp-d3bj", "sto-3g")
    assert -0.5 < d3.energy - plain.energy < -1e-3  # eV: D3(BJ) is attractive, a few tens of meV here
    assert not np.allclose(d3.forces, plain.forces, atol=1e-6)
    assert_forces_match_finite_differences(lambda p: dft_label(replace(s, positions=p), "b3lyp-d3bj", "sto-3g").energy,
                                           s.positions, d3.forces, h=1e-3, coords=[(0, 0), (1, 2)], tol=Tol(atol=2e-3))
    monkeypatch.setitem(sys.modules, "pyscf.dispersion", None)
    with pytest.raises(ConfigError, match="needs the pyscf-dispersion package: pip install pyscf-dispersion"):
        dft_label(s, "wb97m-d3bj", "sto-3g")
