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

from .module import EnergyForcesModule, EnergyModule, OpenMMPotential, ScaledOpenModule, ScaledPeriodicModule

BACKENDS = ("torchforce", "pythonforce")
#: openmm-torch's ``CUDAGraphWarmupSteps`` when CUDA graphs are on
CUDA_GRAPH_WARMUP_STEPS = 10


def create_torch_force(potential: OpenMMPotential, use_cuda_graphs: bool = False, scale_parameter: Optional[str] = None):
    """TorchScript ``potential`` into an openmm-torch ``TorchForce``.

    ``scale_parameter``: name of an OpenMM global parameter (default 1) that multiplies the energy
    (and forces) inside the graph, e.g. ``lambda_interpolate``.
    """
    from .._plugins import import_openmmtorch

    openmmtorch = import_openmmtorch()

    if scale_parameter is not None:
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
    force = openmmtorch.TorchForce(module)
    if scale_parameter is not None:
        force.addGlobalParameter(scale_parameter, 1.0)
    force.setUsesPeriodicBoundaryConditions(potential.periodic)
    force.setOutputsForces(potential.output_forces)
    if use_cuda_graphs:
        force.setProperty("useCUDAGraphs", "true")
        # openmm-torch runs the module this many times before capturing (lazy allocations, autotuning)
        force.setProperty("CUDAGraphWarmupSteps", str(CUDA_GRAPH_WARMUP_STEPS))
    return force


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
                 scale_parameter: Optional[str] = None):
    """The OpenMM Force for ``potential`` with the chosen backend (see :data:`BACKENDS`)."""
    if backend == "torchforce":
        return create_torch_force(potential, use_cuda_graphs, scale_parameter)
    if scale_parameter is not None:
        raise ValueError("scale_parameter needs backend='torchforce'")
    if backend == "pythonforce":
        return create_python_force(potential, device)
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")


def copy_model(model):
    """A deep copy of a scripted model, without torch's warning about reading ``.grad`` of its buffers."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor that is not a leaf")
        return copy.deepcopy(model)
