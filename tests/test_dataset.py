"""Streaming training data: the conformer set reads exactly what the SPICE/extxyz readers read, its index is
cached beside the file and rebuilt when the file or the label keys change, and its size depends on the
molecules, not on the conformers."""
from __future__ import annotations

import json

import numpy as np
import pytest

from openmlip.data import Structure, read_extxyz, read_spice, write_extxyz, write_spice
from openmlip.data import dataset as ds
from openmlip.data.dataset import INDEX_SUFFIX, ConformerSet, LabelKeys
from openmlip.train.trainer import _composition, fit_reference_energies, reference_energies

ELEMENTS = ["H", "C", "N", "O"]


def _structures(per_molecule: int, seed: int = 0, charges: bool = True):
    rng = np.random.default_rng(seed)
    molecules = {"water": [8, 1, 1], "ammonium": [7, 1, 1, 1, 1], "methanol": [6, 8, 1, 1, 1, 1]}
    out = []
    for name, z in molecules.items():
        q = 1.0 if name == "ammonium" else 0.0
        for _ in range(per_molecule):
            n = len(z)
            out.append(Structure(numbers=np.array(z), positions=rng.normal(size=(n, 3)), total_charge=q,
                                 energy=float(rng.normal(-100, 5)), forces=rng.normal(size=(n, 3)),
                                 charges=rng.normal(size=n) if charges else None, name=name, subset="test"))
    return out


def _same(a: Structure, b: Structure):
    assert a.name == b.name and a.subset == b.subset and a.total_charge == b.total_charge
    np.testing.assert_array_equal(a.numbers, b.numbers)
    for field in ("positions", "forces", "charges"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None) == (y is None), field
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=field)
    assert a.energy == b.energy


def test_conformer_set_reads_what_read_spice_reads_in_any_order(tmp_path):
    path = tmp_path / "d.h5"
    write_spice(path, _structures(4))
    data = ConformerSet([path])
    ref = list(read_spice(path))
    assert len(data) == len(ref) == 12
    for i in np.random.default_rng(1).permutation(len(ref)):
        _same(data[int(i)], ref[i])
        assert data[int(i)].info["source"] == f"d.h5[{i}]"
    assert [g.header.name for g in data.groups] == ["ammonium", "methanol", "water"]  # HDF5's (name) order
    assert data.num_atoms([0, 4, 11]).tolist() == [5, 6, 3] and data.has_charges([0, 11]).all()
    assert data.conformers_of([2, 0]).tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    with pytest.raises(IndexError):
        data[12]


def test_reopening_the_file_to_bound_memory_changes_nothing(tmp_path, monkeypatch):
    """HDF5 keeps memory per group ever opened until the file closes: the reader reopens it every
    REOPEN_EVERY group opens (here 2), in the index pass and in reads, with the same results."""
    path = tmp_path / "d.h5"
    write_spice(path, _structures(4))
    monkeypatch.setattr(ds, "REOPEN_EVERY", 2)
    data = ConformerSet([path])
    ref = list(read_spice(path))
    for i in np.random.default_rng(2).permutation(len(ref)).tolist() * 2:
        _same(data[i], ref[i])


def test_extxyz_files_look_the_same(tmp_path):
    path = tmp_path / "d.extxyz"
    write_extxyz(path, _structures(2))
    data = ConformerSet([path])
    ref = list(read_extxyz(path))
    assert len(data) == len(ref)
    for i, s in enumerate(ref):
        _same(data[i], s)


def test_index_is_cached_and_rebuilt_when_the_file_or_the_keys_change(tmp_path, monkeypatch):
    path = tmp_path / "d.h5"
    write_spice(path, _structures(3))
    ConformerSet([path])
    index = tmp_path / ("d.h5" + INDEX_SUFFIX)
    assert json.loads(index.read_text())["sha256"] == ConformerSet([path]).sha256[0]

    def no_scan(*a, **k):
        raise AssertionError("the file was scanned although its index is cached")

    with monkeypatch.context() as m:  # a second open reads the index, not the file
        m.setattr(ds, "_scan_hdf5", no_scan)
        assert len(ConformerSet([path])) == 9
    write_spice(path, _structures(5))  # new content: the hash changes, the index is rebuilt
    assert len(ConformerSet([path])) == 15
    keys = LabelKeys(energy="dft_total_energy", gradient="dft_total_gradient", charges="no_charges")
    assert not ConformerSet([path], keys).has_charges([0])  # other label keys: rebuilt for them
    index.write_text("{not json")  # a damaged index is rebuilt, not trusted
    assert len(ConformerSet([path])) == 15 and json.loads(index.read_text())["version"] == ds.INDEX_VERSION


def test_index_size_depends_on_molecules_not_conformers(tmp_path):
    """Bounded memory: what the trainer holds per file is per molecule (the conformers stay on disk)."""
    sizes = {}
    for n in (5, 400):
        path = tmp_path / f"d{n}.h5"
        write_spice(path, _structures(n))
        data = ConformerSet([path])
        assert len(data) == 3 * n
        sizes[n] = (tmp_path / (path.name + INDEX_SUFFIX)).stat().st_size
    assert sizes[400] < 1.05 * sizes[5], sizes  # 80x the conformers


def test_per_molecule_sums_give_the_per_conformer_least_squares(tmp_path):
    """Reference energies and the force scale from the index equal those from every conformer."""
    path = tmp_path / "d.h5"
    structures = _structures(7)
    write_spice(path, structures)
    data = ConformerSet([path])
    groups = data.groups
    fitted = fit_reference_energies(_composition([g.header.numbers for g in groups], ELEMENTS),
                                    np.array([g.energy_mean for g in groups]), np.array([g.count for g in groups]))
    np.testing.assert_allclose(fitted, reference_energies(list(read_spice(path)), ELEMENTS), rtol=1e-10, atol=1e-10)
    f_rms = np.sqrt(sum(g.force_sq_sum for g in groups) / sum(3 * len(g.header.numbers) * g.count for g in groups))
    assert f_rms == pytest.approx(np.sqrt(np.mean(np.concatenate([s.forces.ravel() for s in read_spice(path)]) ** 2)),
                                  rel=1e-12)


def test_background_loader_workers_train_the_same_parameters(tmp_path):
    import torch

    from openmlip.train import Trainer
    from test_train import _config, _dataset

    data = tmp_path / "d.h5"
    _dataset(data, per_molecule=2)
    states = []
    for workers in (0, 1):
        cfg = _config(tmp_path / f"w{workers}", data, max_epochs=2, loader_workers=workers)
        report = Trainer(cfg, progress=False).run()
        assert 0 <= report["throughput"]["data_loading_fraction"] < 1 and report["throughput"]["conformers_per_s"] > 0
        states.append(torch.load(tmp_path / f"w{workers}" / "run" / "checkpoint.pt", weights_only=True))
    for name, tensor in states[0]["model"].items():
        assert torch.equal(tensor, states[1]["model"][name]), name
