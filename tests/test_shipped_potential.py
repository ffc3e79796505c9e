"""The shipped potential (the default, NAME below) and the shipped datasets: the installed plugin, its metadata, its card's
test metrics reproduced from the data, and the datasets' cards."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.physics import assert_charges_sum_to_total
from openmlip.data import XTB_LABELS, read_spice
from openmlip.deploy import load_model
from openmlip.openmm.registry import shipped_models

ROOT = Path(__file__).resolve().parent.parent
NAME = "openmlip-xtb-v7"


def test_only_the_default_potential_ships_and_it_is_installed_and_valid():
    from openmlip import DEFAULT_POTENTIAL

    assert NAME == DEFAULT_POTENTIAL
    plugins = sorted(p.name for p in (ROOT / "plugins").iterdir() if p.is_dir())
    assert plugins == [NAME], "the repository ships the default potential only (older cards: docs/cards/)"
    models = shipped_models()
    assert NAME in models, f"install it: pip install -e plugins/{NAME} (make test does)"
    model, meta = load_model(models[NAME])
    assert meta["elements"] == ["H", "C", "N", "O", "F", "Na", "P", "S", "Cl", "Br"] and meta["charges"] is True
    assert (ROOT / "plugins" / NAME / "README.md").read_text().startswith(f"# Model card: `{NAME}`")
    assert meta["provenance"]["split"]["test_molecules"]


def test_shipped_dataset_covers_the_required_species_and_its_readme_is_current():
    from openmlip.data.card import dataset_readme

    h5 = ROOT / "datasets" / "openmlip-xtb-v3.h5"
    assert h5.stat().st_size <= 25e6
    data = list(read_spice(h5, **XTB_LABELS.kwargs()))
    assert len(data) >= 3000
    assert {int(z) for s in data for z in s.numbers} == {1, 6, 7, 8, 11, 17}
    names = {s.name for s in data}
    assert {"water-dimer", "ammonium", "ammonium-water4", "ammonia", "methylammonium", "acetate", "sodium-water5",
            "chloride-water5", "methanol", "ethanol", "n-methylacetamide", "alanine-dipeptide", "benzene", "toluene",
            "p-xylene"} <= names
    assert {s.total_charge for s in data} == {-1.0, 0.0, 1.0}
    for s in data:
        assert_charges_sum_to_total(s.charges, s.total_charge, atol=1e-5, what=f"labels of {s.name}")
    assert (ROOT / "datasets" / "README.md").read_text() == dataset_readme(h5)


def test_v4_dataset_covers_species_charges_and_residues_and_its_card_is_current():
    """openmlip-xtb-v4.h5 (issue #19): SPICE's organic elements, the amino acids' charged side chains, every
    conformer's charges summing to its total charge; its card is what dataset_readme writes from its manifest."""
    import json

    from openmlip.data.card import dataset_readme

    h5 = ROOT / "datasets" / "openmlip-xtb-v4.h5"
    manifest = json.loads(h5.with_suffix(".json").read_text())
    assert manifest["conformers"] == 20950 and sorted(manifest["reused"]) == ["openmlip-xtb-v3.h5"]
    data = list(read_spice(h5, **XTB_LABELS.kwargs()))
    assert len(data) == 20950
    assert {int(z) for s in data for z in s.numbers} == {1, 6, 7, 8, 9, 11, 15, 16, 17, 35}
    charge = {s.name: s.total_charge for s in data}
    assert (charge["lys-dipeptide"], charge["arg-dipeptide"], charge["asp-dipeptide"], charge["glu-dipeptide"],
            charge["hip-dipeptide"], charge["hid-dipeptide"]) == (1.0, 1.0, -1.0, -1.0, 1.0, 0.0)
    for s in data[::50]:
        assert_charges_sum_to_total(s.charges, s.total_charge, atol=1e-5, what=f"labels of {s.name}")
    assert (h5.parent / "openmlip-xtb-v4.md").read_text() == dataset_readme(h5, card="openmlip-xtb-v4.md")


def test_v5_dataset_extends_v4_unchanged_and_its_card_is_current():
    """openmlip-xtb-v5.h5 (issue #19): v4's conformers taken as they are (same positions and labels), plus relatives
    of v4's worst held-out molecules, small Cl- clusters and X-H stretches out to 3.2x; charges sum to the total."""
    import json

    from openmlip.data.card import dataset_readme

    h5 = ROOT / "datasets" / "openmlip-xtb-v5.h5"
    manifest = json.loads(h5.with_suffix(".json").read_text())
    assert manifest["conformers"] == 26150 and sorted(manifest["reused"]) == ["openmlip-xtb-v4.h5"]
    v4 = {(s.name, i): s for name, group in _by_name(ROOT / "datasets" / "openmlip-xtb-v4.h5").items()
          for i, s in enumerate(group)}
    v5 = _by_name(h5)
    assert set(manifest["reused"]["openmlip-xtb-v4.h5"]) == {name for name, _ in v4} <= set(v5)
    for (name, i), s in list(v4.items())[::97]:
        # reuse reads Å and writes bohr again: equal to the last bit or two
        np.testing.assert_allclose(v5[name][i].positions, s.positions, rtol=1e-14, atol=1e-14)
        assert v5[name][i].energy == pytest.approx(s.energy, rel=1e-14)
    for name, q in [("methyl-hydrogen-phosphate", -1.0), ("phosphoric-acid", 0.0), ("thiazole", 0.0),
                    ("pyrazine", 0.0), ("4-methylbenzoate", -1.0), ("chloride-water1", -1.0)]:
        assert len(v5[name]) == 200 and {c.total_charge for c in v5[name]} == {q}, name
        for c in v5[name][::40]:
            assert_charges_sum_to_total(c.charges, q, atol=1e-5, what=f"labels of {name}")
    # the long stretches reach past the 3 r0 where v4's dissociation curves turned down
    last = v5["ammonium-long-stretch"][-1]
    assert np.linalg.norm(last.positions[1:] - last.positions[0], axis=1).max() > 3.0 * 1.0296
    assert (h5.parent / "openmlip-xtb-v5.md").read_text() == dataset_readme(h5, card="openmlip-xtb-v5.md")


def test_v6_extra_dataset_is_the_templates_added_after_v5_and_its_card_is_current():
    """openmlip-xtb-v6-extra.h5 (issue #19): only the 12 templates appended after v5 (relatives of what v5 missed
    most), 200 conformers each at the template's charge (the labels' charges sum to it); v6 trains on it beside
    openmlip-xtb-v5.h5, so no conformer ships twice."""
    import json

    from openmlip.data.card import dataset_readme
    from openmlip.data.templates import RELEASES, TEMPLATE_LIST

    h5 = ROOT / "datasets" / "openmlip-xtb-v6-extra.h5"
    manifest = json.loads(h5.with_suffix(".json").read_text())
    added = [t.name for t in TEMPLATE_LIST[RELEASES["v5"]:]]
    assert list(manifest["templates"]) == added and len(added) == 12 and not manifest.get("reused")
    extra = _by_name(h5)
    assert sorted(extra) == sorted(added) and not set(extra) & set(_by_name(ROOT / "datasets" / "openmlip-xtb-v5.h5"))
    for name, group in extra.items():
        q = float(manifest["templates"][name]["charge"])
        assert len(group) == 200 and {c.total_charge for c in group} == {q}, name
        assert_charges_sum_to_total(group[-1].charges, q, atol=1e-5, what=f"labels of {name}")
    assert (h5.parent / "openmlip-xtb-v6-extra.md").read_text() == dataset_readme(h5, card="openmlip-xtb-v6-extra.md")


def test_training_configs_in_datasets_name_their_data_and_write_under_out():
    """The training configs beside the data (relative paths, resolved from the file's folder) read data that is there
    and write into the repository's out/ (a moved folder once sent them outside it)."""
    import yaml

    from openmlip.train.config import TrainConfig

    configs = sorted((ROOT / "datasets").glob("*.yaml"))
    assert len(configs) >= 10
    for path in configs:
        raw = yaml.safe_load(path.read_text())
        assert all((path.parent / d).is_file() for d in raw["data"]), path.name
        assert (path.parent / raw["output"]).resolve().parent == ROOT / "out", path.name
    # the default potential's own recipe resolves completely (its init_model is the shipped file)
    cfg = TrainConfig.from_yaml(ROOT / "datasets" / "train-openmlip-xtb-v7-second-cycle.yaml")
    assert Path(cfg.init_model) == Path(shipped_models()[NAME]).resolve()


def _by_name(h5):
    out = {}
    for s in read_spice(h5, **XTB_LABELS.kwargs()):
        out.setdefault(s.name, []).append(s)
    return out


def test_card_is_this_file_and_its_held_out_metrics_reproduce():
    """The card's numbers come from this very file — the training run's test
    metrics reproduce on the named held-out molecules, and the card's per-molecule rows are this file's evaluation."""
    from openmlip._io import file_sha256
    from openmlip.evaluate import error_tables, tables_markdown

    name, data = NAME, "openmlip-xtb-v5.h5"  # v7's test molecules are in v5's file
    path = shipped_models()[name]
    _, meta = load_model(path)
    assert meta["elements"] == ["H", "C", "N", "O", "F", "Na", "P", "S", "Cl", "Br"] and meta["charges"] is True
    test = meta["provenance"]["split"]["test_molecules"]
    assert {"thr-dipeptide", "glu-dipeptide", "hie-dipeptide", "thiophene", "methyl-phosphate"} <= set(test)
    t = error_tables(path, [ROOT / "datasets" / data], XTB_LABELS, test)
    for key in ("energy_mae_meV_per_atom", "forces_mae_meV_per_A", "forces_rmse_meV_per_A", "charges_mae_e"):
        assert t["all"][key] == pytest.approx(meta["metrics"]["test"][key], rel=1e-3), key
    card = (ROOT / "plugins" / name / "README.md").read_text()
    assert card.startswith(f"# Model card: `{name}`") and file_sha256(path) in card
    rows = [line for line in tables_markdown(t).splitlines() if line.startswith(tuple(f"| {m} |" for m in test))]
    assert len(rows) == len(test) and all(row in card for row in rows)
    assert "![dissociation curves](dissociation.png)" in card and (ROOT / "plugins" / name / "dissociation.png").is_file()


def test_ammonium_bond_is_xtbs_within_5_mA():
    """NH4+ N–H within 0.005 Å of the reference method (both optimised here)."""
    from openmlip.evaluate import dissociation_curve

    c = dissociation_curve(shipped_models()[NAME], "ammonium", "N", factors=np.array([1.0, 1.3]))
    assert abs(c["r_model_opt_A"] - c["r0_A"]) < 0.005, (c["r_model_opt_A"], c["r0_A"])
    assert c["model"][1] > 0.1 and c["xtb"][1] > 0.1  # stretching the bond by 30% costs energy in both


def test_bonds_pulled_to_3_r0_do_not_fall_into_a_false_well():
    """The stretch data reach 3.2x: the X–H curves rise monotonically to 3 r0 and end within 0.15 eV of xTB's."""
    from openmlip.evaluate import dissociation_curve

    for template, element in (("ammonium", "N"), ("ethane", "C")):
        c = dissociation_curve(shipped_models()[NAME], template, element, factors=np.linspace(1.0, 3.0, 9))
        assert np.all(np.diff(c["model"]) > 0), (template, np.round(c["model"], 3))
        assert abs(c["model"][-1] - c["xtb"][-1]) < 0.15, (template, c["model"][-1], c["xtb"][-1])


def test_shipped_file_rebuilds_into_an_eager_model_with_the_same_energy():
    """``rebuild_model`` (fine-tuning from a file, CUDA-graph capture) of a file whose TorchScript state dict also holds
    derived, non-persistent buffers (v6's compact tensor product) loads and computes what the file does."""

    from openmlip.models import rebuild_model
    from openmlip.train.batching import collate, model_inputs

    module, meta = load_model(shipped_models()[NAME])
    model = rebuild_model(module, meta["config"])
    s = next(iter(_by_name(ROOT / "datasets" / "openmlip-xtb-v5.h5")["propanol"]))
    batch = collate([s])
    e_file = module(model_inputs(batch), False)["energy"]
    e_eager = model(model_inputs(batch), False)["energy"]
    torch.testing.assert_close(e_eager, e_file, rtol=0, atol=1e-4)
