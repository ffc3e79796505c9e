"""Backends that put an :class:`OpenMMPotential` into an OpenMM System.

* ``torchforce`` (default): the module is TorchScripted into openmm-torch's ``TorchForce``: no Python
  runs during MD.  ``setOutputsForces(True)`` when the module computes its own forces.
* ``pythonforce``: ``openmm.PythonForce`` calls the (eager) module from Python each step, for models
  that cannot be TorchScripted (torch.compile / AOTInductor).
"""
from __future__ import annotations

import copy
import warnings
from typing import Optional

import numpy as np
import torch

import openmm

from ..errors import ConfigError
from .module import EmbeddingModule, EnergyForcesModule, EnergyModule, OpenMMPotential, ScaledOpenModule, ScaledPeriodicModule

BACKENDS = ("torchforce", "pythonforce")
#: openmm-torch's ``CUDAGraphWarmupSteps`` when CUDA graphs are on
CUDA_GRAPH_WARMUP_STEPS = 10


def torch_force_module(potential: OpenMMPotential, scale_parameter: Optional[str] = None,
                       electrostatics_parameter: Optional[str] = None) -> torch.jit.ScriptModule:
    """The TorchScript module that :func:`create_torch_force` hands to openmm-torch (which freezes it).

    ``scale_parameter``: name of an OpenMM global parameter (default 1) that multiplies the energy
    (and forces) inside the graph, e.g. ``lambda_interpolate``.  ``electrostatics_parameter``: for an
    electrostatically embedded potential, the global parameter that scales its ML–MM electrostatics
    (:class:`~openmlip.openmm.module.EmbeddingModule`).
    """
    if electrostatics_parameter is not None:
        if not hasattr(potential, "embedding_energy_terms"):
            raise ValueError("electrostatics_parameter needs an electrostatically embedded potential")
        wrapper = EmbeddingModule(potential, scale_parameter is not None)
    elif scale_parameter is not None:
        if potential.output_forces:
            raise ValueError("scale_parameter works with output_forces=False")
        wrapper = ScaledPeriodicModule(potential) if potential.periodic else ScaledOpenModule(potential)
    else:
        wrapper = EnergyForcesModule(potential) if potential.output_forces else EnergyModule(potential)
    module = torch.jit.script(wrapper)
    # openmm-torch freezes the module, and torch's freeze deletes the methods it inlined into forward; an error
    # raised from inlined code (a typed check, or any op failing) then segfaults while TorchScript prints its
    # traceback.  Inlined here, before saving, forward calls nothing, so every error reaches Python as an
    # OpenMMException from getState/step.
    torch._C._jit_pass_inline(module.graph)
    return module


def create_torch_force(potential: OpenMMPotential, use_cuda_graphs: bool = False, scale_parameter: Optional[str] = None,
                       electrostatics_parameter: Optional[str] = None):
    """TorchScript ``potential`` into an openmm-torch ``TorchForce`` (see :func:`torch_force_module`).

    ``use_cuda_graphs`` needs a :attr:`~OpenMMPotential.capturable` potential (no host synchronisation);
    the CPU and OpenCL platforms ignore the property.  Every global parameter (default 1) gets its energy
    derivative (``getState(getParameterDerivatives=True)``), which openmm-torch computes by autograd.
    """
    from .._plugins import import_openmmtorch

    openmmtorch = import_openmmtorch()
    if use_cuda_graphs and not potential.capturable:
        raise ConfigError("CUDA graphs need a capturable openmlip potential (OpenMMPotential(..., capturable=True)): "
                          "its checks synchronise with the host otherwise; build it capturable or turn CUDA graphs off")
    force = openmmtorch.TorchForce(torch_force_module(potential, scale_parameter, electrostatics_parameter))
    for name in (scale_parameter, electrostatics_parameter):
        if name is not None:
            force.addGlobalParameter(name, 1.0)
            force.addEnergyParameterDerivative(name)
    force.setUsesPeriodicBoundaryConditions(potential.periodic)
    force.setOutputsForces(potential.output_forces)
    if use_cuda_graphs:
        force.setProperty("useCUDAGraphs", "true")
        # openmm-torch runs the module this many times before capturing (lazy allocations, autotuning)
        force.setProperty("CUDAGraphWarmupSteps", str(CUDA_GRAPH_WARMUP_STEPS))
    return force


def cuda_platform_available() -> bool:
    """Whether OpenMM's CUDA platform loaded here (it loads only where a CUDA driver is installed)."""
    names = {openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())}
    return "CUDA" in names


class _PythonForceComputation:
    """Picklable callable for ``openmm.PythonForce``: State -> (energy kJ/mol, forces kJ/mol/nm).

    OpenMM serialises a PythonForce by pickling its function (``copy.deepcopy``, CustomCVForce and
    checkpoints do); the potential travels as TorchScript bytes.
    """

    def __init__(self, potential, device: str = "cpu"):
        self.potential = potential
        self.device = device

    def __getstate__(self):
        import io

        buf = io.BytesIO()
        module = self.potential if isinstance(self.potential, torch.jit.ScriptModule) else torch.jit.script(self.potential)
        torch.jit.save(module, buf)
        return {"script": buf.getvalue(), "device": self.device}

    def __setstate__(self, state):
        import io

        self.device = state["device"]
        self.potential = torch.jit.load(io.BytesIO(state["script"]), map_location=self.device)

    def __call__(self, state):
        pos = torch.from_numpy(np.asarray(state.getPositions(asNumpy=True)._value)).to(self.device, torch.float64)
        box: Optional[torch.Tensor] = None
        if self.potential.periodic:
            box = torch.from_numpy(np.asarray(state.getPeriodicBoxVectors(asNumpy=True)._value)).to(self.device, torch.float64)
        if self.potential.output_forces:
            energy, forces = self.potential(pos, box)
        else:
            pos.requires_grad_(True)
            energy, _ = self.potential(pos, box)
            (grad,) = torch.autograd.grad(energy, pos)
            forces = -grad
        return float(energy.detach()), forces.detach().cpu().numpy().astype(np.float64)


def create_python_force(potential: OpenMMPotential, device: str = "cpu"):
    """Wrap ``potential`` (eager) into an ``openmm.PythonForce``."""
    force = openmm.PythonForce(_PythonForceComputation(potential, device))
    force.setUsesPeriodicBoundaryConditions(potential.periodic)
    return force


def create_force(potential: OpenMMPotential, backend: str = "torchforce", use_cuda_graphs: bool = False, device: str = "cpu",
                 scale_parameter: Optional[str] = None, electrostatics_parameter: Optional[str] = None):
    """The OpenMM Force for ``potential`` with the chosen backend (see :data:`BACKENDS`)."""
    if backend == "torchforce":
        return create_torch_force(potential, use_cuda_graphs, scale_parameter, electrostatics_parameter)
    if scale_parameter is not None or electrostatics_parameter is not None:
        raise ValueError("global parameters (scale_parameter, electrostatics_parameter) need backend='torchforce'")
    if backend == "pythonforce":
        return create_python_force(potential, device)
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")


def copy_model(model):
    """A deep copy of a scripted model, without torch's warning about reading ``.grad`` of its buffers."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor that is not a leaf")
        return copy.deepcopy(model)


def _openmlip_torch_forces(system: openmm.System):
    """(TorchForce, its module) for every openmlip TorchForce in ``system``, also inside CustomCVForces."""
    from .._plugins import import_openmmtorch

    openmmtorch = import_openmmtorch()
    found = []

    def visit(force):
        if isinstance(force, openmm.CustomCVForce):
            for k in range(force.getNumCollectiveVariables()):
                visit(force.getCollectiveVariable(k))
            return
        if force.getName() != "TorchForce":  # openmm hands plugin forces back as bare Forces named by class
            return
        torch_force = openmmtorch.TorchForce.cast(force)
        module = torch_force.getModule()
        if hasattr(module, "potential") and hasattr(module.potential, "capturable"):
            found.append((torch_force, module))

    for force in system.getForces():
        visit(force)
    return found


def uses_cuda_graphs(system: openmm.System) -> bool:
    """Whether an openmlip TorchForce of ``system`` asks openmm-torch for CUDA graphs."""
    return any(dict(f.getProperties()).get("useCUDAGraphs") == "true" for f, _ in _openmlip_torch_forces(system))


def diagnose(system: openmm.System, positions_nm, box_nm=None):
    """The typed error behind a NaN energy of a capturable openmlip TorchForce (which cannot raise inside a
    CUDA graph), found by evaluating its module once more with raising checks; None when every check passes.

    ``positions_nm`` [P,3] and ``box_nm`` [3,3] (or None) as numbers in nm (e.g. from the failing State).
    """
    from ..errors import from_graph

    pos = torch.as_tensor(np.asarray(positions_nm, dtype=np.float64))
    box = torch.as_tensor(np.asarray(box_nm, dtype=np.float64)) if box_nm is not None else None
    for force, module in _openmlip_torch_forces(system):
        if not module.potential.capturable:
            continue
        module.potential.capturable = False
        args = [pos] + ([box] if force.usesPeriodicBoundaryConditions() else [])
        args += [torch.ones((), dtype=torch.float64)] * force.getNumGlobalParameters()
        try:
            module(*args)
        except Exception as exc:  # a TorchScript error: the typed openmlip error it carries, else the error itself
            return from_graph(exc) or exc
    return None
