"""A generated plugin distribution installs with pip and registers MLPotential('<name>')."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from helpers.systems import make_model
from openmlip.deploy import save_model
from openmlip.errors import ConfigError
from openmlip.plugin import create_plugin


def test_plugin_installs_and_registers(tmp_path):
    model = tmp_path / "m.pt"
    save_model(make_model("allegro", "sum", torch.float64), model, provenance={"note": "test"})
    dist = create_plugin("test-pot", model, tmp_path / "dist", "A test plugin.")
    assert (dist / "README.md").read_text().startswith("# Model card: `test-pot`")
    with pytest.raises(FileExistsError, match="overwrite"):
        create_plugin("test-pot", model, tmp_path / "dist")
    with pytest.raises(ValueError, match="lower-case"):
        create_plugin("Bad Name", model, tmp_path / "x")
    # issue #34: the name of an installed potential (before: a plugin that silently replaced the shipped default)
    with pytest.raises(ConfigError, match=r"the potential name 'openmlip-xtb-v7' is taken by an installed plugin .*"
                                          r"choose another name \(e.g. openmlip-xtb-v7-custom\)"):
        create_plugin("openmlip-xtb-v7", model, tmp_path / "shadow")
    assert not (tmp_path / "shadow").exists()
    site = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--target", str(site), str(dist)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    script = tmp_path / "use.py"
    script.write_text(textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        import openmlip
        import openmm, openmm.app as app
        from openmmml import MLPotential
        from openmlip.openmm.registry import shipped_models
        assert "test-pot" in shipped_models(), shipped_models()
        top = app.Topology(); res = top.addResidue("W", top.addChain())
        o, h1, h2 = (top.addAtom(s, app.Element.getBySymbol(s), res) for s in "OHH")
        top.addBond(o, h1); top.addBond(o, h2)
        system = MLPotential("test-pot").createSystem(top, charge=0)
        ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        ctx.setPositions([[0, 0, 0], [0.0957, 0, 0], [-0.024, 0.0927, 0]])
        print("ENERGY", ctx.getState(getEnergy=True).getPotentialEnergy()._value)
        """))
    # entry points are discovered from sys.path: the target must be on it before openmmml is imported
    res = subprocess.run([sys.executable, str(script), str(site)], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "PYTHONPATH": str(site)})
    assert res.returncode == 0, res.stderr[-3000:]
    energy = float(res.stdout.split("ENERGY")[1])
    from openmlip import units

    out = make_model("allegro", "sum", torch.float64)({
        "pos": torch.tensor([[0, 0, 0], [0.957, 0, 0], [-0.24, 0.927, 0]], dtype=torch.float64),
        "atomic_numbers": torch.tensor([8, 1, 1]), "total_charge": torch.zeros(1, dtype=torch.float64)})
    assert abs(energy - out["energy"].item() * units.EV_TO_KJ_PER_MOL) <= 1e-6 * abs(energy)
