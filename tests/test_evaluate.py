"""openmlip evaluate: the model card's tables (by molecule, element, total charge) and X–H dissociation curves."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.systems import make_model
from openmlip.data import XTB_LABELS
from openmlip.deploy import load_model, save_model
from openmlip.errors import ConfigError
from openmlip.evaluate import dissociation_curve, dissociation_markdown, error_tables
from openmlip.plugin import create_plugin

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "plugins" / "openmlip-xtb-v7" / "openmlip_plugin_openmlip_xtb_v7" / "model.pt"  # the shipped default
DATA = ROOT / "datasets" / "openmlip-xtb-v3.h5"  # the smallest shipped dataset (4.9 MB)
#: molecules of DATA that the default potential never trained on (its held-out test molecules), 150 conformers each
HELD_OUT = ["propanol", "dimethyl-ether", "chloride-water3", "methylamine"]


def test_tables_partition_consistently():
    """(That the tables reproduce the training run's own test metrics: test_shipped_potential.py.)"""
    test = HELD_OUT
    assert set(test) <= set(load_model(MODEL)[1]["provenance"]["split"]["test_molecules"])
    t = error_tables(MODEL, [DATA], XTB_LABELS, test)
    assert set(t["molecules"]) == set(test) and t["all"]["conformers"] == 600
    # molecules and total charges partition the conformers; element force MAEs average (by atom) to the total
    for part in ("molecules", "total_charge"):
        rows = t[part].values()
        assert sum(r["conformers"] for r in rows) == 600
        assert sum(r["conformers"] * r["energy_mae_meV_per_atom"] for r in rows) / 600 == pytest.approx(
            t["all"]["energy_mae_meV_per_atom"], rel=1e-12)
    assert set(t["total_charge"]) == {"-1", "+0"} and set(t["elements"]) == {"H", "C", "N", "O", "Cl"}
    atoms = {"H": 0, "C": 0, "N": 0, "O": 0, "Cl": 0}
    for name, counts in {"propanol": {"C": 3, "O": 1, "H": 8}, "dimethyl-ether": {"C": 2, "O": 1, "H": 6},
                         "chloride-water3": {"Cl": 1, "O": 3, "H": 6}, "methylamine": {"C": 1, "N": 1, "H": 5}}.items():
        for el, n in counts.items():
            atoms[el] += 150 * n
    total = sum(atoms[el] * t["elements"][el]["forces_mae_meV_per_A"] for el in atoms) / sum(atoms.values())
    assert total == pytest.approx(t["all"]["forces_mae_meV_per_A"], rel=1e-10)
    with pytest.raises(ConfigError, match="molecule\\(s\\) ice are not in"):
        error_tables(MODEL, [DATA], XTB_LABELS, ["ice"])


def test_evaluate_leaves_an_installed_package_s_data_folder_alone(tmp_path):
    """Issue #34: the index of data inside an installed package (site-packages) goes to the user's cache
    ($XDG_CACHE_HOME/openmlip), never beside the data, nor into --out."""
    import os
    import shutil

    from openmlip.data.dataset import INDEX_SUFFIX
    from openmlip.evaluate import write_evaluation

    installed = tmp_path / "lib" / "site-packages" / "somepackage"
    installed.mkdir(parents=True)
    data = Path(shutil.copy(DATA, installed / DATA.name))
    os.environ["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    try:
        write_evaluation(MODEL, [data], XTB_LABELS, tmp_path / "ev", ["water"])
    finally:
        del os.environ["XDG_CACHE_HOME"]
    assert sorted(p.name for p in installed.iterdir()) == [DATA.name]
    assert (tmp_path / "cache" / "openmlip" / (DATA.name + INDEX_SUFFIX)).is_file()
    assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == ["errors.json", "errors.md"]


def test_dissociation_curve_follows_xtb_near_the_minimum_and_the_cli_writes_the_card_files(tmp_path):
    c = dissociation_curve(MODEL, "ammonium", "N", factors=np.array([0.9, 1.0, 1.2, 1.6, 2.2]))
    assert c["bond"] == "N–H" and 1.0 < c["r0_A"] < 1.06
    assert abs(c["r_model_opt_A"] - c["r0_A"]) < 0.001  # GFN2-xTB: 1.0296 Å
    assert c["model"][1] == pytest.approx(0.0, abs=1e-5) and c["xtb"][1] == pytest.approx(0.0, abs=1e-9)
    assert np.all(np.diff(c["xtb"][1:]) > 0) and np.all(np.diff(c["model"][1:]) > 0)  # bonds cost energy
    assert np.max(np.abs(np.subtract(c["model"], c["xtb"]))) < 0.1  # eV, inside the trained range
    with pytest.raises(ConfigError, match="ammonium has no S–H bond"):
        dissociation_curve(MODEL, "ammonium", "S")
    for element in ("", "Xx", "H"):  # `--scan methanol` (no element), a non-element, the H itself
        with pytest.raises(ConfigError, match="is not TEMPLATE:ELEMENT; give the heavy atom"):
            dissociation_curve(MODEL, "methanol", element)
    out = tmp_path / "ev"
    # the installed potential's name means its file (the CLI's one resolver), as for `openmlip run --potential`
    res = subprocess.run([sys.executable, "-m", "openmlip.cli", "evaluate", "openmlip-xtb-v7", str(DATA), "--molecules",
                          "methylamine", "--scan", "methanol:O", "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "150 conformers: energy MAE" in res.stdout
    assert {p.name for p in out.iterdir()} == {"errors.json", "errors.md", "dissociation.json", "dissociation.md",
                                                "dissociation.png"}
    assert json.loads((out / "errors.json").read_text())["molecules"]["methylamine"]["conformers"] == 150
    assert "| methylamine | 150 |" in (out / "errors.md").read_text()
    assert "| methanol O–H | 0.9" in (out / "dissociation.md").read_text()

    # the plugin's model card takes these tables and the plot, for this model file only
    dist = create_plugin("card-test", MODEL, tmp_path / "dist", "A card.", evaluation=out, notes="- fails at X\n")
    card = (dist / "README.md").read_text()
    assert "| methylamine | 150 |" in card and "| methanol O–H | 0.9" in card
    assert "![dissociation curves](dissociation.png)" in card and "## Known failures and limits\n\n- fails at X" in card
    assert (dist / "dissociation.png").read_bytes() == (out / "dissociation.png").read_bytes()
    other = tmp_path / "other.pt"
    save_model(make_model("allegro", "sum", torch.float32), other)
    with pytest.raises(ConfigError, match="errors.json was written for another model file .*run `openmlip evaluate` on"):
        create_plugin("card-test", other, tmp_path / "dist2", evaluation=out)
    with pytest.raises(ConfigError, match="no errors.json there"):
        create_plugin("card-test", MODEL, tmp_path / "dist3", evaluation=tmp_path)
    assert not (tmp_path / "dist2").exists() and not (tmp_path / "dist3").exists()


def test_dissociation_table_flags_a_spurious_well():
    r = np.linspace(0.8, 3.0, 12)
    xtb = list(4.0 * (1 - np.exp(-2.0 * (r - 1.0))) ** 2)
    good = {"template": "t", "bond": "O–H", "r0_A": 1.0, "r_A": list(r), "xtb": xtb, "model": [e + 0.01 for e in xtb]}
    well = {**good, "model": [e if x < 2.0 else e - 3.0 * (x - 2.0) for x, e in zip(r, xtb)]}
    rows = dissociation_markdown([good, well]).splitlines()[2:]
    assert rows[0].endswith("| 0.010 | 0.01 | no |") and rows[0].startswith("| t O–H | 1.0000 | – |")
    assert "yes, from 2.0" in rows[1]
