"""The settings of one openmlip force in an OpenMM System: one typed object, resolved once per call.

:func:`resolve_settings` turns the openmm-ml arguments (listed in :mod:`openmlip.openmm.mlpotential`), the
Topology, the System and the ML atoms into a :class:`ForceSettings`.  Its charge state comes from
:func:`openmlip.charges.resolve_charge_state`, the resolver the ASE calculator, the system specs and the data
generator use, so every route gives the same total charge, formal charges and spin for the same molecule.
"""
from __future__ import annotations

import dataclasses
import difflib
import operator
from typing import Iterable, List, Optional, Tuple

import numpy as np
import torch

import openmm
import openmm.app as app
import openmm.unit as u

from ..charges import (MONATOMIC_IONS, ChargeState, formal_charges_from_bonds, resolve_charge_state, spin_multiplicity,
                       total_charge)
from ..deploy import torch_dtype
from ..errors import ChargeError, ConfigError, SelectionError, UnsupportedElementError
from .forces import BACKENDS, cuda_platform_available
from .module import BRUTE_FORCE_MAX_ATOMS

# Arguments of createSystem / createMixedSystem (and defaults for them in the MLPotential constructor).
ARGUMENTS = ("charge", "multiplicity", "spinMultiplicity", "formalCharges", "precision", "backend", "device",
             "outputForces", "neighborMethod", "neighborCapacity", "useCUDAGraphs")
ELECTROSTATIC_ARGUMENTS = ("embeddingCutoff", "embeddingDampingLength", "embeddingLongRange", "embeddingLambda")
ELECTROSTATIC_LENGTHS = ("embeddingCutoff", "embeddingDampingLength")
# read by openmm-ml's mechanical embedding, which passes every createMixedSystem argument on to addForces;
# mlLongRange: whether the ML potential's own interactions are long-ranged (openmm-ml's mechanical embedding);
# openmlip's models are local, so only False (or None) is true of them
LINK_ARGUMENTS = ("linkAtomDistances", "mlLongRange")
# private: openmlip's mechanical embedding hands addForces the MM charge of the ML atoms in the original
# System (openmm-ml's interpolation builds the ML terms in an empty System, which has none)
MM_REFERENCE = "_openmlipMMCharge"
# the global parameter of openmm-ml's interpolation, E(λ) = (1 − λ) E_MM + λ E_ML/MM
LAMBDA = "lambda_interpolate"
# the global parameter that scales the electrostatic embedding's ML-MM electrostatics in its TorchForce:
# openmmtools' name for the electrostatic λ of an alchemical region (its exact-PME treatment scales the
# region's NonbondedForce charges, here the reference charges, by the same λ)
ELECTROSTATICS_LAMBDA = "lambda_electrostatics"


def check_names(args: dict, known: Iterable[str], where: str) -> None:
    """:class:`ConfigError` for an argument name not in ``known`` (with the closest known name)."""
    unknown = sorted(set(args) - set(known) - {MM_REFERENCE})
    if unknown:
        hints = [f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)
                 for name in unknown for close in [difflib.get_close_matches(name, list(known), 1)]]
        raise ConfigError(f"unknown argument(s) {', '.join(hints)} for {where}; known: {', '.join(known)}")


def length_nm(value, name: str) -> float:
    """A length in nm: a number (nm) or an ``openmm.unit.Quantity`` of length; else :class:`ConfigError`."""
    if u.is_quantity(value):
        if not value.unit.is_compatible(u.nanometer):
            raise ConfigError(f"{name}={value} is not a length; give nm or a Quantity such as 1.0*unit.nanometer")
        value = value.value_in_unit(u.nanometer)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
        raise ConfigError(f"{name}={value!r} must be a finite length in nm")
    return float(value)


def check_values(args: dict) -> dict:
    """``args`` with ``spinMultiplicity`` renamed ``multiplicity`` and lengths in nm; wrong values raise typed errors."""
    args = dict(args)
    if "spinMultiplicity" in args:
        spin = args.pop("spinMultiplicity")
        if "multiplicity" in args and spin_multiplicity(spin) != spin_multiplicity(args["multiplicity"]):
            raise ConfigError(f"multiplicity={args['multiplicity']!r} and spinMultiplicity={spin!r} disagree; pass one")
        args.setdefault("multiplicity", spin)
    for name in ("useCUDAGraphs", "outputForces"):
        if args.get(name) is not None and not isinstance(args[name], (bool, np.bool_)):
            raise ConfigError(f"{name}={args[name]!r} must be True or False")
    capacity = args.get("neighborCapacity")
    if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1):
        raise ConfigError(f"neighborCapacity={capacity!r} must be a positive number of atom pairs")
    if args.get("charge") is not None:
        total_charge(args["charge"])
    if "multiplicity" in args:
        spin_multiplicity(args["multiplicity"])
    for name, allowed in (("precision", (None, "single", "double")), ("backend", (None,) + BACKENDS),
                          ("neighborMethod", (None, "auto", "brute", "cell"))):
        if args.get(name) not in allowed:
            raise ConfigError(f"{name}={args[name]!r} is not one of {', '.join(map(repr, allowed[1:]))}")
    for name in ELECTROSTATIC_LENGTHS:
        if args.get(name) is not None:
            args[name] = length_nm(args[name], name)
    if args.get("embeddingLongRange") not in (None, "split", "pme"):
        raise ConfigError(f"embeddingLongRange={args['embeddingLongRange']!r} is not one of 'split', 'pme'")
    if "embeddingLambda" in args and args["embeddingLambda"] is not None and (
            not isinstance(args["embeddingLambda"], str) or not args["embeddingLambda"].isidentifier()):
        raise ConfigError(f"embeddingLambda={args['embeddingLambda']!r} must be a global parameter name "
                          f"(default {ELECTROSTATICS_LAMBDA!r}) or None")
    if args.get("mlLongRange") not in (None, False):
        raise ConfigError(f"mlLongRange={args['mlLongRange']!r}: openmlip's models are local (every term within a "
                          "cutoff of a few Å), so their ML/MM System keeps the MM long range of the ML atoms; pass "
                          "mlLongRange=False or leave it out (the electrostatic embedding's long range: "
                          "embeddingLongRange)")
    args.pop("mlLongRange", None)
    if args.get("linkAtomDistances") is not None:
        args["linkAtomDistances"] = link_atom_distances(args["linkAtomDistances"])
    if args.get("embeddingDampingLength") is not None and args["embeddingDampingLength"] <= 0:
        raise ConfigError(f"embeddingDampingLength={args['embeddingDampingLength']!r} must be > 0 nm")
    return args


def link_atom_distances(value) -> list:
    """openmm-ml's ``linkAtomDistances``: a list of (ML atom, MM atom, distance) triples, the distance a positive
    length (nm or a Quantity), as a list of (int, int, Quantity); else :class:`ConfigError`."""
    usage = ("linkAtomDistances must be a list of (ML atom, MM atom, distance) triples, one per cut bond whose cap "
             "distance you set, e.g. [(4, 6, 0.109*unit.nanometer)]")
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, Iterable):
        raise ConfigError(f"{usage}; got {value!r}")
    out = []
    for item in value:
        try:
            i, j, d = item
            i, j = operator.index(i), operator.index(j)
        except (TypeError, ValueError):
            raise ConfigError(f"{usage}; got {item!r} in {value!r}") from None
        d = length_nm(d, f"linkAtomDistances ({i}, {j})")
        if d <= 0:
            raise ConfigError(f"linkAtomDistances ({i}, {j}): the cap distance {d!r} nm must be > 0")
        out.append((i, j, d * u.nanometer))
    return out


def check_sizes(topology: app.Topology, system: openmm.System) -> None:
    """:class:`SelectionError` when ``system`` is not a System of ``topology`` (an empty one is: openmm-ml's
    interpolation builds the ML terms in one)."""
    n, p = topology.getNumAtoms(), system.getNumParticles()
    if p not in (0, n):
        raise SelectionError(f"the Topology has {n} atoms but the System has {p} particles: pass the System created "
                             "from this Topology (e.g. forcefield.createSystem(topology))")


def check_atoms(topology: app.Topology, atoms: Optional[Iterable[int]]) -> List[int]:
    """The ML atom indices as a list of ints, or :class:`SelectionError` (type, range, duplicates, empty)."""
    n = topology.getNumAtoms()
    if atoms is None:
        return list(range(n))
    try:
        atom_list = [operator.index(i) for i in atoms]
    except TypeError:
        raise SelectionError(f"ML atoms must be integer atom indices, got {atoms!r}") from None
    bad = [i for i in atom_list if i < 0 or i >= n]
    if bad:
        raise SelectionError(f"ML atom indices {bad[:5]} out of range for a Topology of {n} atoms; use indices 0..{n - 1}")
    if len(set(atom_list)) != len(atom_list):
        raise SelectionError("ML atom indices contain duplicates; list each ML atom once")
    if not atom_list:
        raise SelectionError("the ML region is empty; select at least one atom")
    return atom_list


def _mm_charges(system: openmm.System) -> Optional[List[float]]:
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            return [force.getParticleParameters(i)[0].value_in_unit(u.elementary_charge)
                    for i in range(force.getNumParticles())]
    return None


def mm_reference(system: openmm.System, atoms: List[int]) -> Optional[Tuple[float, str]]:
    """The sum of the MM partial charges (e) of ``atoms`` in the System's NonbondedForce, or None without one."""
    charges = _mm_charges(system)
    if charges is None:
        return None
    return sum(charges[i] for i in atoms if i < len(charges)), "MM partial charges of the ML atoms"


def topology_bonds(topology: app.Topology) -> Tuple[List[int], List[Tuple[int, int]]]:
    """Atomic numbers (0 without element) and bonds of a Topology, for :mod:`openmlip.charges`."""
    z = [a.element.atomic_number if a.element is not None else 0 for a in topology.atoms()]
    return z, [(b[0].index, b[1].index) for b in topology.bonds()]


def is_link_cap(atom: app.topology.Atom, system: openmm.System) -> bool:
    """Whether ``atom`` is a link-atom cap openmm-ml added for a cut bond: a virtual site of ``system``, or (in the
    empty System openmm-ml's interpolation builds) its hydrogen named ``V<k>`` alone in residue ``V<k>``."""
    if atom.index < system.getNumParticles() and system.isVirtualSite(atom.index):
        return True
    name = atom.residue.name
    return (atom.element is app.element.hydrogen and atom.name == name and name[:1] == "V" and name[1:].isdigit()
            and len(list(atom.residue.atoms())) == 1)


def check_bonded(topology: app.Topology, system: openmm.System, atoms: List[int], bonds: List[Tuple[int, int]]) -> None:
    """:class:`ChargeError` when an ML atom other than a monatomic ion or a link-atom cap has no bond in the
    Topology: the formal charges (and the total) cannot be known from it, and spreading them would give a
    different Hamiltonian from the ASE route's (which finds the bonds in the geometry)."""
    if len(atoms) < 2:
        return
    bonded = {i for b in bonds for i in b}
    all_atoms = list(topology.atoms())
    lone = [i for i in atoms if i not in bonded and all_atoms[i].element.atomic_number not in MONATOMIC_IONS
            and not is_link_cap(all_atoms[i], system)]
    if lone:
        a = all_atoms[lone[0]]
        raise ChargeError(
            f"{len(lone)} ML atom(s) have no bonds in the Topology (atom {a.index}, {a.name} of {a.residue.name}), so "
            "their formal charges are unknown; add the bonds (CONECT records in the PDB, Topology.addBond, or "
            "Modeller/PDBFile for standard residues) or pass formalCharges=[...], one per ML atom")


def infer_formal_charges(topology: app.Topology, atoms: List[int], total_charge: float) -> Optional[List[float]]:
    """Per-atom formal charges of the ML atoms from the Topology's bonds, or ``None`` when the rules do
    not account for ``total_charge`` (see :func:`openmlip.charges.formal_charges_from_bonds`)."""
    z, bonds = topology_bonds(topology)
    return formal_charges_from_bonds(z, bonds, total_charge, atoms)


@dataclasses.dataclass(frozen=True)
class ForceSettings:
    """Everything one openmlip force is built from (see :mod:`openmlip.openmm.mlpotential` for the arguments)."""

    atoms: Tuple[int, ...]  # ML atom indices in the System
    atomic_numbers: Tuple[int, ...]  # of the ML atoms
    num_particles: int  # of the System
    charge: ChargeState  # total, per-atom formal charges, spin multiplicity
    dtype: torch.dtype
    periodic: bool
    cutoff: float  # the model's, Å
    neighbor_method: str  # "auto", "brute" or "cell"
    neighbor_capacity: Optional[int]
    capturable: bool  # runs in CUDA graphs: no raising checks, no data-dependent shapes
    backend: str  # "torchforce" or "pythonforce"
    device: str  # torch device of the pythonforce backend
    output_forces: bool  # forces computed inside the graph (setOutputsForces)

    def module_kwargs(self) -> dict:
        """Keyword arguments of :class:`~openmlip.openmm.OpenMMPotential` (after the model and atomic numbers)."""
        return dict(indices=list(self.atoms), num_particles=self.num_particles, total_charge=float(self.charge.total),
                    spin_multiplicity=float(self.charge.multiplicity), formal_charges=list(self.charge.formal),
                    periodic=self.periodic, dtype=self.dtype, cutoff=self.cutoff, neighbor_method=self.neighbor_method,
                    neighbor_capacity=self.neighbor_capacity, capturable=self.capturable,
                    output_forces=self.output_forces)


def resolve_settings(metadata: dict, species, topology: app.Topology, system: openmm.System,
                     atoms: Optional[Iterable[int]], args: dict) -> ForceSettings:
    """The :class:`ForceSettings` of one force of a model (``metadata`` and ``species`` of its file) for
    ``atoms`` of ``topology``/``system`` and the checked call arguments ``args`` (:func:`check_values`): the ML
    atoms and elements checked, the charge state resolved, precision, neighbour list and CUDA graphs chosen."""
    check_sizes(topology, system)
    atom_list = check_atoms(topology, atoms)
    all_atoms = list(topology.atoms())
    z = []
    for i in atom_list:
        el = all_atoms[i].element
        if el is None:
            raise UnsupportedElementError(f"atom {i} ({all_atoms[i].name}) has no element; ML atoms need elements")
        z.append(el.atomic_number)
    species.check(z)
    charge, formal = args.get("charge"), args.get("formalCharges")
    reference = args.get(MM_REFERENCE) or mm_reference(system, atom_list)
    z_all, bonds = topology_bonds(topology)
    if formal is None:
        check_bonded(topology, system, atom_list, bonds)
    # models are trained with per-atom formal charges (+1 on the N of NH4+, ...): inferred from the bonds
    # unless given, spread evenly (with a warning) only when the bond rules cannot reach the total charge
    state = resolve_charge_state(z_all, total=charge, formal=formal, multiplicity=args.get("multiplicity", 1),
                                 bonds=bonds, atoms=atom_list, reference=reference)
    backend = args.get("backend") or "torchforce"
    method = args.get("neighborMethod") or "auto"
    # the torchforce backend returns its forces from the graph (setOutputsForces), faster than openmm-torch's own
    # autograd (docs/benchmarks.md, "Measurements behind the code"); `outputForces=False` lets openmm-torch differentiate
    output_forces = args.get("outputForces")
    return ForceSettings(
        atoms=tuple(atom_list), atomic_numbers=tuple(z), num_particles=topology.getNumAtoms(), charge=state,
        dtype=torch_dtype(args.get("precision") or metadata["dtype"]),
        periodic=topology.getPeriodicBoxVectors() is not None or system.usesPeriodicBoundaryConditions(),
        cutoff=float(metadata["cutoff"]), neighbor_method=method, neighbor_capacity=args.get("neighborCapacity"),
        capturable=cuda_graphs(metadata, args, backend, method, len(atom_list)), backend=backend,
        device=str(args.get("device") or "cpu"),
        output_forces=bool(backend == "torchforce" if output_forces is None else output_forces))


def cuda_graphs(metadata: dict, args: dict, backend: str, method: str, num_ml_atoms: int) -> bool:
    """Whether the TorchForce runs in CUDA graphs (``useCUDAGraphs``; see :mod:`openmlip.openmm.mlpotential`)."""
    wanted = args.get("useCUDAGraphs")
    reasons = []
    if backend != "torchforce":
        reasons.append("backend='pythonforce' runs Python each step")
    if "imported" in metadata:
        reasons.append(f"a model imported from {metadata['imported'].get('framework')} is not known to be capturable")
    if method == "cell" or (method == "auto" and num_ml_atoms > BRUTE_FORCE_MAX_ATOMS):
        reasons.append(f"the cell list (neighborMethod={method!r} with {num_ml_atoms} ML atoms) has data-dependent "
                       "length; pass neighborMethod='brute'")
    if wanted is None:
        return not reasons and cuda_platform_available()
    if wanted and reasons:
        raise ConfigError("useCUDAGraphs=True is not possible: " + "; ".join(reasons))
    return bool(wanted)
