"""The xTB data templates (openmlip.data.templates): RDKit only, no xTB; fast."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from openmlip.charges import bonds_from_positions
from openmlip.data.geometry import _place_fragments, build_template, xh_bonds
from openmlip.data.templates import RELEASES, TEMPLATE_LIST, TEMPLATES, expand_templates, template_formal_charges, templates_argument

rdkit = pytest.importorskip("rdkit")
from rdkit import Chem  # noqa: E402

# the templates of the shipped openmlip-xtb-v3 data, in their order (never changed: the v4 ones follow them)
V3 = ["water", "water-dimer", "water-tetramer", "ammonium", "ammonium-water1", "ammonium-water2", "ammonium-water4",
      "ammonia", "methylammonium", "acetate", "sodium-water3", "sodium-water5", "chloride-water3", "chloride-water5",
      "methanol", "ethanol", "formamide", "n-methylacetamide", "alanine-dipeptide", "benzene", "toluene", "p-xylene",
      "water-octamer", "ammonium-water8", "ethane", "propanol", "dimethyl-ether", "acetic-acid", "methylamine",
      "ethyl-methyl-ether", "diethyl-ether", "ethylamine", "dimethylamine", "ethylammonium", "formic-acid",
      "propanoic-acid", "isopropanol", "water-16", "ammonium-water12", "chloride-water8", "ammonium-stretch",
      "ammonium-water1-stretch", "water-stretch", "methylammonium-stretch", "methanol-stretch"]
# templates whose SMILES formal charges the bond rules of openmlip.charges do not reproduce
RULES_MISS: set = set()


def _smiles_bonds(t):
    mol = Chem.AddHs(Chem.MolFromSmiles(t.smiles))
    return sorted(tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))) for b in mol.GetBonds())


def test_names_are_unique_and_v3_comes_first_unchanged():
    names = [t.name for t in TEMPLATE_LIST]
    assert len(names) == len(set(names)) == len(TEMPLATES), sorted({n for n in names if names.count(n) > 1})
    assert names[:len(V3)] == V3


def test_releases_name_the_template_lists_of_the_shipped_datasets():
    """``--templates v5`` is openmlip-xtb-v5.h5's list whatever was appended since: each release is a prefix of the
    list, equal to the shipped manifest's templates, and a dataset card names the shortest way to say its list."""
    import json
    from pathlib import Path

    from openmlip.errors import ConfigError

    datasets = Path(__file__).resolve().parents[1] / "datasets"
    for release in RELEASES:
        manifest = json.loads((datasets / f"openmlip-xtb-{release}.json").read_text())
        assert expand_templates([release]) == list(manifest["templates"]), release
        assert templates_argument(manifest["templates"]) == release
    assert expand_templates(["v3"]) == V3 and templates_argument(list(TEMPLATES)) == ""
    assert expand_templates(["v3", "water", "pyrimidine"]) == V3 + ["pyrimidine"]  # in order, each once
    assert templates_argument(["propanoate", "butanoate"]) == "propanoate butanoate"
    with pytest.raises(ConfigError) as err:
        expand_templates(["v3", "v9", "benzen"])
    msg = str(err.value)
    assert "unknown template(s) v9, benzen" in msg and "a release (v3, v4, v5)" in msg and "\n" not in msg


@pytest.mark.parametrize("t", TEMPLATE_LIST, ids=lambda t: t.name)
def test_template_builds_with_its_charge(t):
    mol = Chem.MolFromSmiles(t.smiles)
    assert mol is not None, t.smiles
    assert sum(a.GetFormalCharge() for a in mol.GetAtoms()) == t.charge
    z, pos = build_template(t)  # RDKit embedding, fragment placement, waters
    assert pos.shape == (len(z), 3) and np.isfinite(pos).all()
    assert len(z) == Chem.AddHs(mol).GetNumAtoms() + 3 * t.waters
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RULES_MISS templates warn (test_bond_rules_reproduce_the_smiles_formal_charges)
        fc = template_formal_charges(t, z)
    assert len(fc) == len(z) and fc.sum() == t.charge
    assert t.sampling in ("md", "stretch")
    if t.sampling == "stretch":
        from ase import Atoms

        assert xh_bonds(Atoms(numbers=z, positions=pos)), f"{t.name}: no X-H bond to stretch"


def test_bond_rules_reproduce_the_smiles_formal_charges():
    from openmlip.charges import formal_charges_from_bonds

    miss = set()
    for t in TEMPLATE_LIST:
        mol = Chem.AddHs(Chem.MolFromSmiles(t.smiles))
        z = [a.GetAtomicNum() for a in mol.GetAtoms()]
        fc = [float(a.GetFormalCharge()) for a in mol.GetAtoms()]
        if formal_charges_from_bonds(z, _smiles_bonds(t), t.charge) != fc:
            miss.add(t.name)
    assert miss == RULES_MISS


def test_v4_elements_are_covered():
    elements = set()
    for t in TEMPLATE_LIST:
        elements |= {a.GetSymbol() for a in Chem.AddHs(Chem.MolFromSmiles(t.smiles)).GetAtoms()}
    assert {"H", "C", "N", "O", "F", "P", "S", "Cl", "Br", "Na"} <= elements
    subsets = {t.subset for t in TEMPLATE_LIST}
    assert {"amino acids", "fragments", "dimers", "ions", "ion clusters", "bond stretch"} <= subsets


@pytest.mark.parametrize("t", [t for t in TEMPLATE_LIST if "." in t.smiles], ids=lambda t: t.name)
def test_dimers_are_placed_at_contact(t):
    mol = Chem.AddHs(Chem.MolFromSmiles(t.smiles))
    a, b = [list(f) for f in Chem.GetMolFrags(mol)]
    for seed in (0, 1):
        z, pos = build_template(t, seed)
        d = np.linalg.norm(pos[a][:, None] - pos[b][None], axis=-1)
        assert d.min() >= 2.0
        assert 2.8 <= d[np.ix_(z[a] > 1, z[b] > 1)].min() <= 3.2
        # each fragment intact, no bond between them
        assert bonds_from_positions(z, pos) == _smiles_bonds(t)
    again = build_template(t, 1)[1]
    np.testing.assert_array_equal(pos, again)  # deterministic


def test_place_fragments_leaves_one_fragment_and_refuses_three():
    z = np.array([8, 1, 1])
    pos = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    assert _place_fragments("O", z, pos) is pos
    with pytest.raises(ValueError, match="3 fragments"):
        _place_fragments("O.O.O", np.array([8, 8, 8, 1, 1, 1, 1, 1, 1]), np.zeros((9, 3)))
