"""``openmlip doctor``: is this environment able to run openmlip potentials in OpenMM?"""
from __future__ import annotations

import functools

import importlib.metadata as md
import json
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import torch

import openmm

from . import __version__
from ._plugins import torch_plugin_status

REQUIRED_PLATFORMS = ("Reference", "CPU")
PACKAGES = ("torch", "openmm", "openmmtorch", "openmmml", "e3nn")


@dataclass
class Report:
    versions: Dict[str, Optional[str]] = field(default_factory=dict)
    platforms: Dict[str, Dict[str, object]] = field(default_factory=dict)
    torch_plugins: List[Dict[str, str]] = field(default_factory=list)
    cuda: Dict[str, object] = field(default_factory=dict)
    serialization: Optional[bool] = None  # a TorchForce survives XmlSerializer (copy, pickle, CustomCVForce)
    #: openmm-ml's other potentials (MACE, ANI, ..., ASE) can build ML/MM Systems here (PythonForce.setParticles)
    openmm_ml_mixed_systems: Optional[bool] = None
    problems: List[str] = field(default_factory=list)  # required things that are broken
    notes: List[str] = field(default_factory=list)  # optional things that are missing

    @property
    def ok(self) -> bool:
        return not self.problems


class _Square(torch.nn.Module):
    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return (positions**2).sum()


@functools.lru_cache(maxsize=None)
def torchforce_works(platform_name: str) -> Optional[str]:
    """None if a TorchForce evaluates E = Σx² correctly on the platform, else the error.  Probed once per
    platform and process (cached): the MD runner asks for every run."""
    from ._plugins import import_openmmtorch

    openmmtorch = import_openmmtorch()

    try:
        system = openmm.System()
        for _ in range(2):
            system.addParticle(1.0)
        system.addForce(openmmtorch.TorchForce(torch.jit.script(_Square())))
        ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform_name))
        ctx.setPositions([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
        e = ctx.getState(getEnergy=True).getPotentialEnergy()._value
        if abs(e - 0.91) > 1e-5:
            return f"TorchForce gave E = {e}, expected 0.91"
        return None
    except Exception as exc:  # noqa: BLE001 -- report any failure verbatim
        return str(exc).strip().splitlines()[0]


_ROUND_TRIP = """
import openmlip, openmm, torch
from openmlip._plugins import import_openmmtorch
from openmlip.doctor import _Square
s = openmm.System(); s.addParticle(1.0)
s.addForce(import_openmmtorch().TorchForce(torch.jit.script(_Square())))
s = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(s))
print(openmm.XmlSerializer.serialize(s).count('type="TorchForce"'))
"""


def torchforce_round_trip_works() -> Optional[str]:
    """None if a System holding a TorchForce survives an XmlSerializer round trip, else why not.

    Run in a child process: with an openmm whose ABI does not match openmm-torch's build (openmm >= 8.6 with
    openmmtorch 1.5) deserialising segfaults, which would kill the caller."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", _ROUND_TRIP], capture_output=True, text=True, timeout=300)
    if res.returncode == 0 and res.stdout.strip().endswith("1"):
        return None
    why = "a segmentation fault" if res.returncode == -11 else f"exit code {res.returncode}"
    return f"XmlSerializer round trip of a TorchForce failed with {why}"


#: what the pinned stack costs a user of openmm-ml's other potentials (README, "openmm-ml's other potentials")
OPENMM_ML_MIXED_NOTE = (
    "openmm {openmm} has no PythonForce.setParticles (new in openmm 8.6), which openmm-ml builds every other "
    "potential's ML/MM System with (MACE, NequIP, ANI, AIMNet2, TorchMD-Net, Orb, FeNNix, ASE): their "
    "createMixedSystem fails here with an AttributeError; their createSystem (all atoms ML) works. openmlip pins "
    "openmm 8.5.2 because openmm-torch's PyPI builds crash deserialising a TorchForce on 8.6. Use those potentials "
    "in a second environment (README), or import a nequip/MACE model into openmlip (`openmlip import`).")


def openmm_ml_mixed_systems_work() -> bool:
    """Whether openmm-ml's PythonForce-based potentials can build an ML/MM System with this openmm: they restrict
    their force to the ML atoms with ``PythonForce.setParticles`` (openmm >= 8.6)."""
    return hasattr(getattr(openmm, "PythonForce", None), "setParticles")


def run_checks() -> Report:
    rep = Report()
    rep.versions["openmlip"] = __version__
    for pkg in PACKAGES:
        try:
            rep.versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            rep.versions[pkg] = None
            rep.problems.append(f"{pkg} is not installed: run `pip install -e .` in the openmlip checkout (or `make venv`).")
    tv = torch.__version__.split("+")[0]
    if not tv.startswith("2.9."):
        rep.problems.append(
            f"torch {tv} is installed but openmmtorch 1.5 is compiled against torch 2.9: run `pip install torch==2.9.1`."
        )
    rep.torch_plugins = [asdict(s) for s in torch_plugin_status()]
    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    for name in names:
        err = torchforce_works(name)
        rep.platforms[name] = {"available": True, "torch_plugin": err is None, "error": err}
        if err is not None:
            msg = f"TorchForce does not run on the {name} platform ({err})."
            if name in REQUIRED_PLATFORMS:
                rep.problems.append(msg + " Import torch (or openmlip) before openmm, and check `pip show openmmtorch`.")
            else:
                rep.notes.append(msg)
    for name in REQUIRED_PLATFORMS:
        if name not in rep.platforms:
            rep.problems.append(f"OpenMM's {name} platform is missing: reinstall openmm==8.5.2.")
    err = torchforce_round_trip_works()
    rep.serialization = err is None
    if err is not None:
        rep.problems.append(f"{err}: Systems with openmlip forces cannot be copied, pickled or used in a CustomCVForce. "
                            f"openmm {openmm.__version__} does not match openmmtorch's build: run `pip install openmm==8.5.2`.")
    try:
        import openmmml.embeddings  # noqa: F401  -- openmm-ml >= 1.8: createMixedSystem(embedding=...)
    except ImportError:
        rep.problems.append("openmm-ml < 1.8 (no embeddings module): MLPotential('openmlip') needs 1.8; run "
                            "`pip install --no-deps openmmml==1.8` (it runs on openmm 8.5.2; docs/design.md).")
    rep.openmm_ml_mixed_systems = openmm_ml_mixed_systems_work()
    if not rep.openmm_ml_mixed_systems:
        rep.notes.append(OPENMM_ML_MIXED_NOTE.format(openmm=openmm.__version__))
    rep.cuda = {
        "torch_cuda_available": torch.cuda.is_available(),
        "torch_cuda_version": torch.version.cuda,
        "openmm_cuda_platform": "CUDA" in names,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else [],
    }
    if not torch.cuda.is_available():
        rep.notes.append("No CUDA device visible to torch: MD runs on the CPU platform (install the `cuda` extra on a GPU machine).")
    elif "CUDA" not in names:
        rep.notes.append("torch sees a GPU but OpenMM has no CUDA platform: `pip install -e '.[cuda]'`.")
    for st in rep.torch_plugins:
        if st["state"] == "unavailable":
            rep.notes.append(f"{st['library']} is unavailable ({st['detail'].split(': ')[-1]}); fine unless you need that platform.")
    return rep


def format_report(rep: Report) -> str:
    lines = ["openmlip doctor", "", "versions:"]
    for k, v in rep.versions.items():
        lines.append(f"  {k:<12} {v or 'NOT INSTALLED'}")
    lines += ["", "OpenMM platforms (TorchForce check: E = sum x^2 on 2 particles):"]
    for name, info in rep.platforms.items():
        state = "Torch plugin loaded" if info["torch_plugin"] else f"Torch plugin NOT working: {info['error']}"
        lines.append(f"  {name:<10} {state}")
    lines += ["", "openmm-torch plugin libraries:"]
    for st in rep.torch_plugins:
        lines.append(f"  {st['library']:<30} {st['state']}")
    lines += ["", f"System serialisation with a TorchForce (XML, deepcopy, pickle, CustomCVForce): "
              f"{'works' if rep.serialization else 'BROKEN'}"]
    lines += [f"openmm-ml's other potentials (MACE, ANI, ASE, ...) in ML/MM Systems: "
              f"{'work' if rep.openmm_ml_mixed_systems else 'NOT with this openmm (see notes)'}"]
    c = rep.cuda
    lines += ["", f"CUDA: torch {'sees ' + ', '.join(c['devices']) if c['torch_cuda_available'] else 'sees no GPU'}"
              f" (built for CUDA {c['torch_cuda_version']}); OpenMM CUDA platform: {'yes' if c['openmm_cuda_platform'] else 'no'}"]
    if rep.notes:
        lines += ["", "notes:"] + [f"  - {n}" for n in rep.notes]
    if rep.problems:
        lines += ["", "PROBLEMS (required):"] + [f"  - {p}" for p in rep.problems]
    lines += ["", "status: OK" if rep.ok else "status: BROKEN"]
    return "\n".join(lines)


def main(as_json: bool = False) -> int:
    rep = run_checks()
    if as_json:
        print(json.dumps({**asdict(rep), "ok": rep.ok}, indent=1))
    else:
        print(format_report(rep))
    return 0 if rep.ok else 1
