"""GFN2-xTB reference generation (real tblite): labels at the right charge, resume without recomputation."""
from __future__ import annotations

import pytest

from openmlip import units
from openmlip.data import read_spice
from openmlip.data.generate import TEMPLATES, generate



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
    data = list(read_spice(out, energy_key="xtb_total_energy", gradient_key="xtb_total_gradient", charges_key="xtb_charges"))
    assert len(data) == 8
    by_name = {}
    for s in data:
        by_name.setdefault(s.name, s)  # the first conformer of each template
    assert by_name["ammonium"].total_charge == 1.0 and by_name["acetate"].total_charge == -1.0
    for s in data:
        assert abs(s.charges.sum() - s.total_charge) < 1e-6  # xTB charges at the requested total charge
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


def test_unknown_template_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"unknown template\(s\) \['ammonium-ice'\]; available: "):
        generate(tmp_path / "x.h5", ["ammonium-ice"], conformers=1, progress=False)
    assert "p-xylene" in TEMPLATES and TEMPLATES["acetate"].charge == -1
