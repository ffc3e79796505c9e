"""After ``import openmlip`` TorchForce works on Reference and CPU whatever was imported first.

Each order runs in a fresh interpreter: plugin loading happens once per process.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = """
{imports}
import torch, openmm, openmmtorch
class A(torch.nn.Module):
    def forward(self, positions):
        return (positions ** 2).sum()
for name in ("Reference", "CPU"):
    system = openmm.System()
    for _ in range(3):
        system.addParticle(1.0)
    system.addForce(openmmtorch.TorchForce(torch.jit.script(A())))
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(name))
    pos = [[0.1, 0.2, 0.3], [-0.4, 0.5, 0.6], [0.7, -0.8, 0.9]]
    ctx.setPositions(pos)
    st = ctx.getState(getEnergy=True, getForces=True)
    e = st.getPotentialEnergy()._value
    f = st.getForces(asNumpy=True)._value
    assert abs(e - sum(x * x for p in pos for x in p)) < 1e-5, e
    assert abs(f[1][2] + 2 * 0.6) < 1e-5, f
    print(name, "OK")
"""


@pytest.mark.parametrize(
    "imports",
    [
        "import openmm\nimport openmlip",  # the trap: openmm first
        "import torch\nimport openmm\nimport openmlip",
        "import openmlip\nimport openmm",
        "import openmm\nimport openmm.app\nimport openmlip\nimport openmmtorch",
    ],
    ids=["openmm-first", "torch-first", "openmlip-first", "openmm-app-first"],
)
def test_torchforce_works_in_every_import_order(imports, tmp_path):
    script = tmp_path / "order.py"  # a file, not -c: TorchScript needs the source
    script.write_text(SCRIPT.format(imports=imports))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Reference OK" in res.stdout and "CPU OK" in res.stdout


def test_openmm_first_without_openmlip_really_fails():
    """The trap exists (so the test above proves a repair, not a no-op)."""
    code = textwrap.dedent(
        """
        import openmm
        import torch
        fails = [f for f in openmm.Platform.getPluginLoadFailures() if "libOpenMMTorchReference" in f]
        print("FAILED" if fails else "LOADED")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.stdout.strip() == "FAILED", res.stdout + res.stderr


@pytest.mark.parametrize("first", ["import openmlip.openmm.mlpotential", "import openmmml", "import openmlip.demo"])
def test_openmm_ml_registration_in_any_order(first, tmp_path):
    """openmm-ml loads entry points while it is imported; no import order may hit a circular import."""
    script = tmp_path / "reg.py"
    script.write_text(f"{first}\nfrom openmmml import MLPotential\n"
                      "print(sorted(n for n in MLPotential._implFactories if n.startswith('openmlip')))\n")
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "'openmlip'" in res.stdout and "'openmlip-xtb-v7'" in res.stdout
