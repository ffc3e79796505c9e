"""One ``nn.Module`` in OpenMM units around a deployed openmlip model.

``forward(positions [P,3] nm, boxvectors [3,3] nm?) -> energy kJ/mol`` (or ``(energy, forces)`` with
``output_forces``).  It selects the ML atoms with an index buffer, converts units with
:mod:`openmlip.units` only, builds the neighbour list in-graph (brute force for small regions, an O(N)
cell list for large ones; minimum image in OpenMM's reduced triclinic box) and calls the model.
The same module serves both backends: TorchScript in openmm-torch's ``TorchForce`` and
``openmm.PythonForce``.

Every evaluation first checks what OpenMM passes and raises (in-graph; an ``openmm.OpenMMException`` from
``getState``/``step`` in a ``TorchForce``) instead of computing a wrong number: the particle count, a
periodic box narrower than twice the cutoff (:class:`BoxError`, e.g. shrunk by a barostat), non-finite
ML coordinates and two ML atoms closer than :data:`~openmlip.nn.neighbors.COINCIDENT_DISTANCE`
(:class:`GeometryError`).  The element check is done once, at construction.
"""
from __future__ import annotations

import math
import numbers
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .. import keys as K
from .. import units
from ..deploy import cast_model
from ..errors import BoxError, ConfigError, GeometryError, SelectionError
from ..nn.electrostatics import check_coulomb_cell, coulomb_cutoff_of
from ..nn.embedding import check_elements
from ..nn.neighbors import cell_list_pairs, coincident, coincident_error, static_pairs

#: ML regions up to this many atoms use the static all-pairs list in ``neighbor_method="auto"`` (capturable).
BRUTE_FORCE_MAX_ATOMS = 256
#: Highest number density (atoms/Å³) the static list's default capacity allows for inside the cutoff sphere:
#: 1.5x liquid water's 0.100 (organic liquids and proteins 0.09-0.11 including hydrogens).
MAX_NEIGHBOR_DENSITY = 0.15


def neighbor_capacity_default(num_atoms: int, cutoff: float) -> int:
    """Default length of the static neighbour list: every ordered pair for a small region, else the
    ``MAX_NEIGHBOR_DENSITY`` bound on the neighbours of each atom (whichever is smaller)."""
    per_atom = int(math.ceil(MAX_NEIGHBOR_DENSITY * 4.0 / 3.0 * math.pi * cutoff**3))
    return max(1, min(num_atoms * (num_atoms - 1), num_atoms * per_atom))


def _format_number(x: float) -> str:
    """``x`` rounded to 3 decimals as short text (TorchScript prints floats with 17 digits)."""
    if not math.isfinite(x):
        return str(x)
    n = int(round(abs(x) * 1000.0))
    text = str(n // 1000)
    if n % 1000 != 0:
        text += "." + str(n % 1000).zfill(3).rstrip("0")
    return "-" + text if x < 0 and n != 0 else text


def _model_elements(model: torch.nn.Module) -> Optional[List[str]]:
    """Element symbols a model knows (``get_elements()`` or ``elements``), or None for a model without them."""
    if hasattr(model, "get_elements"):
        return list(model.get_elements())
    elements = getattr(model, "elements", None)
    return list(elements) if elements is not None else None


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
        ``brute``: the static list of :func:`~openmlip.nn.neighbors.static_pairs` (every pair tested, fixed
        length, no host synchronisation: CUDA-graph capturable); ``cell``: an O(N) cell list of
        data-dependent length (not capturable); ``auto``: ``brute`` up to ``BRUTE_FORCE_MAX_ATOMS`` ML atoms.
    neighbor_capacity : int, optional
        Length of the static list (default :func:`neighbor_capacity_default`).  More pairs than this within the
        cutoff is an error, never a silent truncation.
    capturable : bool
        Run without host synchronisation, for CUDA graphs: on a CUDA device a failed check (box too small,
        non-finite or coincident atoms, neighbour-list overflow) makes the energy and forces NaN instead of
        raising; :func:`openmlip.openmm.diagnose` names the problem afterwards.  On the CPU (OpenMM's CPU and
        Reference platforms, where graphs never run) the checks raise as in a module that is not capturable.
        Needs the static list and an openmlip :class:`~openmlip.models.Potential` in eager form
        (:func:`openmlip.models.rebuild_model`).
    dtype : torch.dtype
        Precision of the model evaluation (the model is cast to it).
    cutoff : float, optional
        Model cutoff in Å (read from the model when it has ``cutoff``).

    Raises
    ------
    UnsupportedElementError
        an atomic number is not one of the model's elements (or not an integer).
    SelectionError
        bad ``indices`` / ``num_particles``.
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
        neighbor_capacity: Optional[int] = None,
        capturable: bool = False,
    ):
        super().__init__()
        elements = _model_elements(model)
        if elements is not None:
            check_elements(elements, list(atomic_numbers))
        coulomb = coulomb_cutoff_of(model)
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
        self.use_cell_list = neighbor_method == "cell" or (neighbor_method == "auto" and len(idx) > BRUTE_FORCE_MAX_ATOMS)
        self.capturable = bool(capturable)
        #: a capturable module on the CPU reports a failed check as NaN too (as on CUDA) instead of raising: for
        #: tests of the CUDA path on a machine without one; never set in a System a user runs
        self.poison_on_cpu = False
        if self.capturable:
            model = _capturable_model(model, self.use_cell_list)
        self.model = cast_model(model, dtype)
        self.dtype = dtype
        self.cutoff = float(cutoff if cutoff is not None else getattr(model, "cutoff"))
        #: the periodic box must be at least twice this wide (Å); subclasses with a longer-ranged term raise it
        self.box_cutoff = self.cutoff
        self.box_cutoff_name = "model cutoff"
        self.periodic = bool(periodic)
        if coulomb is not None and self.periodic:
            check_coulomb_cell(coulomb, [math.inf], "periodic box")  # no cutoff: refused here; widths: check_box
            if coulomb > self.box_cutoff:  # minimum image: the box must hold the whole Coulomb sphere too
                self.box_cutoff = coulomb
                self.box_cutoff_name = "model's Coulomb cutoff"
        self.output_forces = bool(output_forces)
        if neighbor_capacity is not None and (isinstance(neighbor_capacity, bool) or not isinstance(neighbor_capacity, numbers.Integral)
                                              or neighbor_capacity < 1):
            raise ConfigError(f"neighbor_capacity={neighbor_capacity!r}: must be a positive number of pairs")
        self.edge_capacity = int(neighbor_capacity) if neighbor_capacity is not None else neighbor_capacity_default(len(idx), self.cutoff)
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
        if not bool((widths >= 2.0 * self.box_cutoff).all()):
            raise BoxError(
                f"periodic box widths {[round(float(w), 3) for w in widths]} Å are shorter than twice the "
                f"{self.box_cutoff_name} ({2 * self.box_cutoff:g} Å); use a larger box (more solvent) or a model with a "
                "shorter cutoff"
            )

    @torch.jit.export
    def check_inputs(self, positions: torch.Tensor, boxvectors: Optional[torch.Tensor]) -> torch.Tensor:
        """Check OpenMM's positions [P,3] nm and box [3,3] nm (reduced form); True (a bool tensor) when usable.

        :class:`SelectionError`: P differs from the System this force was built for (a shape: raised in every
        mode); :class:`BoxError`: no box, or a width (a_x, b_y, c_z) below twice the cutoff (the minimum image
        would miss pairs) — raised, or returned as False when :meth:`raises` is False.
        """
        n = positions.shape[0]
        if n < self.num_particles or (self.all_atoms and n != self.num_particles):
            raise SelectionError(
                "this openmlip force was built for a System of {} particles but OpenMM passed {}; build it with "
                "num_particles=system.getNumParticles() and indices= the ML atoms".format(self.num_particles, n)
            )
        if not self.periodic:
            return torch.ones((), dtype=torch.bool, device=positions.device)
        if boxvectors is None:
            raise BoxError("this openmlip force is periodic but OpenMM passed no box vectors; "
                           "call force.setUsesPeriodicBoundaryConditions(True) or build it with periodic=False")
        widths = torch.diagonal(boxvectors.detach().to(torch.float64))
        box_ok = (widths * self.length_scale >= 2.0 * self.box_cutoff).all()
        if self.raises(positions) and not bool(box_ok):
            cut = self.box_cutoff / self.length_scale
            raise BoxError(
                "periodic box width {} nm is below twice the {} (2 x {} nm): the box shrank (barostat) or was "
                "built too small; enlarge the box (more solvent padding) or use a shorter cutoff".format(
                    _format_number(float(widths.min())), self.box_cutoff_name, _format_number(cut))
            )
        return box_ok

    @torch.jit.export
    def origin(self, positions: torch.Tensor) -> torch.Tensor:
        """The point (nm, [3], OpenMM's precision) subtracted from every position before the cast to the model's
        dtype: the first ML atom's position rounded to whole nm, so the difference is exact and a float32 model
        far from the origin (1e4 nm) loses nothing to the cast; energies and forces do not depend on it.
        Rounding has zero derivative, so it needs no ``detach`` (which ``torch.jit.freeze`` drops)."""
        first = positions.index_select(0, self.indices[:1])[0]  # no index read on the host
        return torch.where(torch.isfinite(first), torch.round(first), torch.zeros_like(first))

    @torch.jit.export
    def ml_inputs(self, positions: torch.Tensor, boxvectors: Optional[torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        """The model's input dict (Å) with the in-graph neighbour list, and whether every check passed.

        Checks (:meth:`check_inputs`, then): an ML coordinate NaN or infinite (the neighbour list would drop
        the atom: a finite energy and zero force), two ML atoms closer than ``COINCIDENT_DISTANCE`` (their
        distance would give NaN), more pairs within the cutoff than the static list holds.  Each raises a
        :class:`BoxError` / :class:`GeometryError`, or, when :meth:`raises` is False, turns the returned flag
        False (no host synchronisation) and the caller makes the energy NaN.
        """
        raises = self.raises(positions)
        ok = self.check_inputs(positions, boxvectors)
        selected = positions if self.all_atoms else positions.index_select(0, self.indices)
        finite = torch.isfinite(selected).all(dim=-1)
        pos = (selected - self.origin(positions)).to(self.dtype) * self.length_scale
        if raises and not bool(finite.all()):
            bad: List[int] = self.indices[~finite].tolist()
            raise GeometryError(
                "coordinates of {} ML particle(s) are not finite (NaN or inf), particles {}: the simulation blew up "
                "(time step too long, bad starting structure) or the positions are corrupt; check the structure and "
                "the time step".format(len(bad), bad[:5])
            )
        ok = ok & finite.all()
        box: Optional[torch.Tensor] = None
        if self.periodic and boxvectors is not None:
            box = boxvectors.to(self.dtype) * self.length_scale
        if self.use_cell_list:
            edge_index, shift = cell_list_pairs(pos, self.cutoff, box)
        else:
            edge_index, shift, count = static_pairs(pos, self.cutoff, box, self.edge_capacity)
            fits = count <= self.edge_capacity
            if raises and not bool(fits):
                raise GeometryError(
                    "{} atom pairs of the ML region lie within the cutoff but the neighbour list holds {}: the region is "
                    "denser than its capacity assumes; pass neighborCapacity={} or more (neighbor_capacity= in Python), "
                    "or neighborMethod='cell'"
                    .format(int(count), self.edge_capacity, int(count) * 3 // 2)
                )
            ok = ok & fits
            if raises:  # the host knows the count already: drop the padding (less work on a CPU)
                k = int(count)
                edge_index, shift = edge_index[:, :k].contiguous(), shift[:k]
        p = pos.detach()
        close = coincident((p.index_select(0, edge_index[1]) - p.index_select(0, edge_index[0]) + shift).pow(2).sum(-1))
        if raises and bool(close.any()):
            k = int(close.nonzero()[0, 0])
            i, j = int(self.indices[edge_index[0, k]]), int(self.indices[edge_index[1, k]])
            raise GeometryError(coincident_error("ML particles", i, j))
        ok = ok & ~close.any()
        data: Dict[str, torch.Tensor] = {
            K.POSITIONS: pos,
            K.ATOMIC_NUMBERS: self.atomic_numbers,
            K.TOTAL_CHARGE: self.total_charge,
            K.SPIN_MULTIPLICITY: self.spin_multiplicity,
            K.EDGE_INDEX: edge_index,
            K.EDGE_SHIFT: shift,
        }
        if self.has_formal_charges:
            data[K.FORMAL_CHARGES] = self.formal_charges
        if box is not None:
            data[K.CELL] = box.unsqueeze(0)
            data[K.PBC] = torch.ones((1, 3), dtype=torch.bool, device=pos.device)
        return data, ok

    @torch.jit.export
    def raises(self, positions: torch.Tensor) -> bool:
        """Whether a failed check raises (a typed error) rather than making the energy NaN: always, except in a
        :attr:`capturable` module on a CUDA device (inside a CUDA graph nothing can raise).  openmm-torch honours
        ``useCUDAGraphs`` on OpenMM's CUDA platform only, which passes CUDA tensors."""
        return not self.capturable or (not self.poison_on_cpu and not positions.is_cuda)

    @torch.jit.export
    def poison(self, value: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        """``value`` where ``ok`` (a bool tensor), else NaN: how a capturable module reports a failed check.  A raising
        module has raised already, so it returns ``value`` untouched (no extra operators on the CPU step)."""
        if not self.capturable:
            return value
        return torch.where(ok, value, torch.full_like(value, float("nan")))

    def forward(self, positions: torch.Tensor, boxvectors: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Energy (kJ/mol, scalar) and, with ``output_forces``, forces [P,3] kJ/mol/nm (else empty).

        Both are NaN when a check failed in a :attr:`capturable` module."""
        data, ok = self.ml_inputs(positions, boxvectors)
        out = self.model(data, self.output_forces)
        energy = self.poison(out[K.ENERGY].sum() * self.energy_scale, ok)
        if self.output_forces:
            f_ml = out[K.FORCES] * self.force_scale
            forces = torch.zeros((positions.shape[0], 3), dtype=f_ml.dtype, device=f_ml.device)
            forces = self.poison(forces.index_copy(0, self.indices, f_ml), ok)
            return energy.to(positions.dtype), forces.to(positions.dtype)
        return energy.to(positions.dtype), torch.zeros(0, dtype=positions.dtype, device=positions.device)


def _capturable_model(model: torch.nn.Module, use_cell_list: bool) -> torch.nn.Module:
    """A copy of an eager openmlip ``Potential`` without its in-graph element check (a host synchronisation;
    :class:`OpenMMPotential` checks the elements once, at construction) and without filling in missing inputs
    (the dynamic neighbour list; :class:`OpenMMPotential` passes its static list and the total charge)."""
    from ..models import Potential, rebuild_model

    if use_cell_list:
        raise ConfigError("capturable=True (CUDA graphs) needs the static neighbour list: neighbor_method='brute', "
                          "or 'auto' with at most {} ML atoms".format(BRUTE_FORCE_MAX_ATOMS))
    if not isinstance(model, Potential):
        raise ConfigError("capturable=True (CUDA graphs) needs an openmlip Potential in eager form, not a "
                          f"{type(model).__name__}: rebuild it with openmlip.models.rebuild_model(module, metadata['config']), or "
                          "pass capturable=False")
    model = rebuild_model(model, model.config_dict)  # private: the flags below must not change the caller's model
    model.species.validate = False
    model.capturable = True
    model.aggregation.capturable = True
    return model


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


class EmbeddingModule(torch.nn.Module):
    """TorchForce entry point of an electrostatically embedded potential
    (:class:`~openmlip.openmm.embedding.EmbeddedPotential`) with its global parameters, in the order they are
    added to the force: ``(positions[, box], [lambda_interpolate,] lambda_electrostatics)`` ->
    ``s * (E_ML + λ_e * E_emb)``, with ``s`` the interpolation λ (1 without interpolation) and ``λ_e`` the
    electrostatic λ, which scales the ML–MM electrostatics of the graph as openmmtools' exact-PME alchemy scales
    those of the reference charges in the NonbondedForce (linearly).  openmm-torch differentiates the energy with
    respect to both (``addEnergyParameterDerivative``)."""

    def __init__(self, potential: OpenMMPotential, interpolate: bool):
        super().__init__()
        self.potential = potential
        self.periodic = bool(potential.periodic)
        self.interpolate = bool(interpolate)

    def forward(self, positions: torch.Tensor, a: Optional[torch.Tensor] = None, b: Optional[torch.Tensor] = None,
                c: Optional[torch.Tensor] = None) -> torch.Tensor:
        box = a if self.periodic else None
        first = b if self.periodic else a
        second = c if self.periodic else b
        e_ml, e_emb, _ = self.potential.embedding_energy_terms(positions, box)
        if self.interpolate:
            assert first is not None and second is not None
            energy = first.to(e_ml.dtype) * (e_ml + second.to(e_ml.dtype) * e_emb)
        else:
            assert first is not None
            energy = e_ml + first.to(e_ml.dtype) * e_emb
        return energy.to(positions.dtype)
