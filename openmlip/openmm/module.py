"""One ``nn.Module`` in OpenMM units around a deployed openmlip model.

``forward(positions [P,3] nm, boxvectors [3,3] nm?) -> energy kJ/mol`` (or ``(energy, forces)`` with
``output_forces``).  It selects the ML atoms with an index buffer, converts units with
:mod:`openmlip.units` only, builds the neighbour list in-graph (brute force for small regions, an O(N)
cell list for large ones; minimum image in OpenMM's reduced triclinic box) and calls the model.
The same module serves both backends: TorchScript in openmm-torch's ``TorchForce`` and
``openmm.PythonForce``.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch

from .. import units
from ..errors import BoxError, SelectionError
from ..nn.neighbors import brute_force_pairs, cell_list_pairs

#: ML regions up to this many atoms use the brute-force list in ``neighbor_method="auto"``.
BRUTE_FORCE_MAX_ATOMS = 256


class OpenMMPotential(torch.nn.Module):
    """Wrap a (scripted) openmlip model for OpenMM.

    Parameters
    ----------
    model : torch.nn.Module
        An openmlip model (``Potential`` or the ScriptModule from :func:`openmlip.deploy.load_model`).
    atomic_numbers : sequence of int
        Atomic numbers of the ML atoms, in the order of ``indices``.
    indices : sequence of int, optional
        Indices of the ML atoms among OpenMM's particles (default: all, in order).
    num_particles : int, optional
        Number of particles in the OpenMM System (for range checks; default ``len(atomic_numbers)``).
    total_charge : float
        Total charge of the ML region (e).
    spin_multiplicity : float
        2S+1 of the ML region.
    formal_charges : sequence of float, optional
        Per-atom formal charges of the ML atoms (e); their sum must equal ``total_charge``.
    periodic : bool
        Use OpenMM's periodic box (minimum image).
    output_forces : bool
        Return ``(energy, forces)``; forces computed in-graph by autograd (for ``setOutputsForces``).
    neighbor_method : {"auto", "brute", "cell"}
    dtype : torch.dtype
        Precision of the model evaluation (the model is cast to it).
    cutoff : float, optional
        Model cutoff in Å (read from the model when it has ``cutoff``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        atomic_numbers: Sequence[int],
        indices: Optional[Sequence[int]] = None,
        num_particles: Optional[int] = None,
        total_charge: float = 0.0,
        spin_multiplicity: float = 1.0,
        formal_charges: Optional[Sequence[float]] = None,
        periodic: bool = False,
        output_forces: bool = False,
        neighbor_method: str = "auto",
        dtype: torch.dtype = torch.float32,
        cutoff: Optional[float] = None,
    ):
        super().__init__()
        z = [int(v) for v in atomic_numbers]
        if indices is None:
            indices = list(range(len(z)))
        idx = [int(i) for i in indices]
        if len(idx) != len(z):
            raise SelectionError(f"{len(idx)} ML atom indices but {len(z)} atomic numbers; give one atomic number per ML atom")
        n_total = len(z) if num_particles is None else int(num_particles)
        bad = [i for i in idx if i < 0 or i >= n_total]
        if bad:
            raise SelectionError(
                f"ML atom indices {bad[:5]} out of range for a system of {n_total} particles; use indices 0..{n_total - 1}"
            )
        if len(set(idx)) != len(idx):
            raise SelectionError("ML atom indices contain duplicates; list each ML atom once")
        if len(idx) == 0:
            raise SelectionError("the ML region is empty; select at least one atom")
        if neighbor_method not in ("auto", "brute", "cell"):
            raise ValueError(f"neighbor_method must be 'auto', 'brute' or 'cell', got {neighbor_method!r}")
        self.model = model.to(dtype)
        self.dtype = dtype
        self.cutoff = float(cutoff if cutoff is not None else getattr(model, "cutoff"))
        self.periodic = bool(periodic)
        self.output_forces = bool(output_forces)
        self.use_cell_list = neighbor_method == "cell" or (neighbor_method == "auto" and len(idx) > BRUTE_FORCE_MAX_ATOMS)
        self.all_atoms = idx == list(range(n_total))
        self.num_particles = n_total
        self.register_buffer("indices", torch.tensor(idx, dtype=torch.long))
        self.register_buffer("atomic_numbers", torch.tensor(z, dtype=torch.long))
        self.register_buffer("total_charge", torch.tensor([float(total_charge)], dtype=dtype))
        self.register_buffer("spin_multiplicity", torch.tensor([float(spin_multiplicity)], dtype=dtype))
        self.has_formal_charges = formal_charges is not None
        fc = [float(v) for v in formal_charges] if formal_charges is not None else [0.0] * len(z)
        if formal_charges is not None and abs(sum(fc) - float(total_charge)) > 1e-6:
            raise ValueError(f"formal charges sum to {sum(fc):g} but the ML region's total charge is {total_charge:g}")
        self.register_buffer("formal_charges", torch.tensor(fc, dtype=dtype))
        self.length_scale = units.NM_TO_ANGSTROM
        self.energy_scale = units.EV_TO_KJ_PER_MOL
        self.force_scale = units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM

    def check_box(self, box_nm: torch.Tensor) -> None:
        """Raise :class:`BoxError` if a box width is below twice the cutoff (Python-side check)."""
        widths = torch.diagonal(box_nm.to(torch.float64)) * self.length_scale
        if bool((widths < 2.0 * self.cutoff).any()):
            raise BoxError(
                f"periodic box widths {[round(float(w), 3) for w in widths]} Å are shorter than twice the model cutoff "
                f"({2 * self.cutoff:g} Å); use a larger box (more solvent) or a model with a shorter cutoff"
            )

    @torch.jit.export
    def ml_inputs(self, positions: torch.Tensor, boxvectors: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
        if self.all_atoms:
            pos = positions.to(self.dtype) * self.length_scale
        else:
            pos = positions.index_select(0, self.indices).to(self.dtype) * self.length_scale
        box: Optional[torch.Tensor] = None
        if self.periodic:
            if boxvectors is None:
                raise RuntimeError("this openmlip force is periodic but OpenMM passed no box vectors")
            box = boxvectors.to(self.dtype) * self.length_scale
            if bool((torch.diagonal(box) < 2.0 * self.cutoff).any()):
                raise RuntimeError("openmlip: periodic box shorter than twice the model cutoff")
        if self.use_cell_list:
            edge_index, shift = cell_list_pairs(pos, self.cutoff, box)
        else:
            edge_index, shift = brute_force_pairs(pos, self.cutoff, box)
        data: Dict[str, torch.Tensor] = {
            "pos": pos,
            "atomic_numbers": self.atomic_numbers,
            "total_charge": self.total_charge,
            "spin_multiplicity": self.spin_multiplicity,
            "edge_index": edge_index,
            "edge_shift": shift,
        }
        if self.has_formal_charges:
            data["formal_charges"] = self.formal_charges
        if box is not None:
            data["cell"] = box.unsqueeze(0)
            data["pbc"] = torch.ones((1, 3), dtype=torch.bool, device=pos.device)
        return data

    def forward(self, positions: torch.Tensor, boxvectors: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Energy (kJ/mol, scalar) and, with ``output_forces``, forces [P,3] kJ/mol/nm (else empty)."""
        data = self.ml_inputs(positions, boxvectors)
        out = self.model(data, self.output_forces)
        energy = out["energy"].sum() * self.energy_scale
        if self.output_forces:
            f_ml = out["forces"] * self.force_scale
            forces = torch.zeros((positions.shape[0], 3), dtype=f_ml.dtype, device=f_ml.device)
            forces = forces.index_copy(0, self.indices, f_ml)
            return energy.to(positions.dtype), forces.to(positions.dtype)
        return energy.to(positions.dtype), torch.zeros(0, dtype=positions.dtype, device=positions.device)


class EnergyModule(torch.nn.Module):
    """TorchForce entry point returning the energy only (openmm-torch differentiates it)."""

    def __init__(self, potential: OpenMMPotential):
        super().__init__()
        self.potential = potential

    def forward(self, positions: torch.Tensor, boxvectors: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.potential(positions, boxvectors)[0]


class EnergyForcesModule(torch.nn.Module):
    """TorchForce entry point returning ``(energy, forces)`` (for ``setOutputsForces(True)``)."""

    def __init__(self, potential: OpenMMPotential):
        super().__init__()
        self.potential = potential

    def forward(self, positions: torch.Tensor, boxvectors: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.potential(positions, boxvectors)


class ScaledPeriodicModule(torch.nn.Module):
    """TorchForce entry point with one global parameter scaling the energy (periodic systems)."""

    def __init__(self, potential: OpenMMPotential):
        super().__init__()
        self.potential = potential

    def forward(self, positions: torch.Tensor, boxvectors: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return scale * self.potential(positions, boxvectors)[0]


class ScaledOpenModule(torch.nn.Module):
    """TorchForce entry point with one global parameter scaling the energy (open boundaries)."""

    def __init__(self, potential: OpenMMPotential):
        super().__init__()
        self.potential = potential

    def forward(self, positions: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return scale * self.potential(positions, None)[0]
