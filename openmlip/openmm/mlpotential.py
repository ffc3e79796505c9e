"""openmm-ml integration: ``MLPotential('openmlip', modelPath=...)`` and one name per shipped plugin.

Registered through the ``openmmml.potentials`` entry-point group (see ``pyproject.toml``).  Shipped
potentials register their model file under the ``openmlip.models`` group (name -> callable returning
the path), so ``MLPotential('<plugin name>')`` works once the plugin is installed.

Arguments accepted by ``createSystem`` / ``createMixedSystem``, and by the ``MLPotential`` constructor as
defaults that the same name in a call overrides; any other name is a :class:`ConfigError` listing these.
The charge state is resolved by :func:`openmlip.charges.resolve_charge_state`, as in the ASE calculator.

``charge``
    total charge of the ML region (an integer, e; ``"1"`` is read as 1).  Default: the sum of the MM
    partial charges of the ML atoms in the System's ``NonbondedForce`` (must be within 0.01 e of an
    integer; for the mechanical embedding, also when interpolating, the System passed to
    ``createMixedSystem``); for ``createSystem`` (no MM force field) the Amber14/TIP3P templates of the
    Topology's residues, else the sum of ``formalCharges``; otherwise an error.  An explicit charge that
    differs from the MM charges of the ML atoms warns with both numbers.
``multiplicity`` (or ``spinMultiplicity``)
    spin multiplicity 2S+1 (default 1).
``formalCharges``
    optional per-ML-atom formal charges (e), one per ML atom in the order of the ML atom indices, summing
    to the total charge.  Link-atom caps that openmm-ml's mechanical embedding adds for cut bonds get 0.
    When omitted they are inferred from the Topology's bonds (monatomic ions, 4-bonded N, carboxylates,
    amidinium cations such as Arg and HIP; see :func:`openmlip.charges.formal_charges_from_bonds`), or
    spread evenly with a warning when those rules do not add up to the total charge.
``precision``
    ``"single"`` or ``"double"`` (default: the model file's dtype).
``backend``
    ``"torchforce"`` (default) or ``"pythonforce"``.
``device``
    torch device for the ``pythonforce`` backend (TorchForce follows the OpenMM platform).
``outputForces``
    compute forces inside the TorchScript graph (``setOutputsForces``); default True for ``torchforce``.
``neighborMethod``
    ``"auto"`` (default), ``"brute"`` or ``"cell"`` (:class:`~openmlip.openmm.OpenMMPotential`): ``brute`` is
    the fixed-length list that CUDA graphs need; ``auto`` uses it up to 256 ML atoms.
``neighborCapacity``
    length of that list (default: every pair, or the 0.15 atoms/Å³ bound for large regions); more pairs in
    the cutoff is an error, never a truncation.
``useCUDAGraphs``
    openmm-torch's CUDA graphs for the TorchForce.  Default: on where OpenMM's CUDA platform exists, for an
    openmlip model with the fixed-length list; then the force's checks cannot raise inside the graph and
    make the energy NaN instead (:func:`openmlip.openmm.forces.diagnose` names the cause; ``openmlip md``
    does so).  ``False`` keeps raising checks (on every platform).
``embedding="electrostatic"`` (createMixedSystem)
    openmlip's electrostatic embedding (:mod:`openmlip.openmm.embedding`); ``embeddingCutoff`` (nm,
    default: the MM nonbonded cutoff) and ``embeddingDamping`` (Å, default 0.5).
``embedding="mechanical"`` (createMixedSystem, the default)
    openmm-ml's mechanical embedding; ``linkAtomDistances`` is passed on to it.
"""
from __future__ import annotations

import difflib
import operator
import warnings
from typing import Iterable, List, Optional, Tuple

import numpy as np
import torch

import openmm
import openmm.app as app
try:
    from openmmml.embeddings import utilities
    from openmmml.embeddings.mechanicalembedding import MechanicalEmbedding
except ImportError:  # openmm-ml < 1.8: what pip resolves beside openmm 8.5.2 (docs/design.md, "The stack")
    raise ImportError("openmlip's openmm-ml plugin needs openmm-ml 1.8 (embeddings): run `pip install --no-deps "
                      "openmmml==1.8` (it declares openmm>=8.6.1 but runs on the pinned openmm 8.5.2)") from None
from openmmml.mlpotential import MLPotentialImpl

from ..charges import (check_formal, formal_charges_from_bonds, integral_sum, resolve_charge_state, spin_multiplicity,
                       total_charge)
from ..deploy import load_model, torch_dtype
from ..errors import ChargeError, ConfigError, ModelFileError, SelectionError, UnsupportedElementError
from ..nn.embedding import SpeciesIndex
from ..models import rebuild_model
from .forces import BACKENDS, copy_model, create_force, cuda_platform_available
from .module import BRUTE_FORCE_MAX_ATOMS, OpenMMPotential
from .registry import ENTRY_POINT_GROUP, model_path, shipped_models  # noqa: F401


# Arguments of createSystem / createMixedSystem (and defaults for them in the MLPotential constructor).
ARGUMENTS = ("charge", "multiplicity", "spinMultiplicity", "formalCharges", "precision", "backend", "device",
             "outputForces", "neighborMethod", "neighborCapacity", "useCUDAGraphs")
ELECTROSTATIC_ARGUMENTS = ("embeddingCutoff", "embeddingDamping")
# read by openmm-ml's mechanical embedding, which passes every createMixedSystem argument on to addForces
MECHANICAL_ARGUMENTS = ("linkAtomDistances",)
# private: openmlip's mechanical embedding hands addForces the MM charge of the ML atoms in the original
# System (openmm-ml's interpolation builds the ML terms in an empty System, which has none)
_MM_REFERENCE = "_openmlipMMCharge"


def _check_names(args: dict, known: Iterable[str], where: str) -> None:
    unknown = sorted(set(args) - set(known) - {_MM_REFERENCE})
    if unknown:
        hints = [f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)
                 for name in unknown for close in [difflib.get_close_matches(name, list(known), 1)]]
        raise ConfigError(f"unknown argument(s) {', '.join(hints)} for {where}; known: {', '.join(known)}")


def _check_values(args: dict) -> dict:
    """``args`` with ``spinMultiplicity`` renamed ``multiplicity``; wrong values raise typed errors."""
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
    return args


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
            return [force.getParticleParameters(i)[0].value_in_unit(openmm.unit.elementary_charge)
                    for i in range(force.getNumParticles())]
    return None


def mm_reference(system: openmm.System, atoms: List[int]) -> Optional[Tuple[float, str]]:
    """The sum of the MM partial charges (e) of ``atoms`` in the System's NonbondedForce, or None without one."""
    charges = _mm_charges(system)
    if charges is None:
        return None
    return sum(charges[i] for i in atoms if i < len(charges)), "MM partial charges of the ML atoms"


def _amber_reference(topology: app.Topology, atoms: List[int]) -> Tuple[float, str]:
    try:
        ff = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
        charges = _mm_charges(ff.createSystem(topology))
    except Exception as exc:  # noqa: BLE001
        raise ChargeError(
            f"cannot infer the total charge of the ML region: the System has no NonbondedForce and the Amber14 "
            f"templates do not match the Topology ({str(exc).splitlines()[0]}); pass charge=<integer>"
        ) from None
    return sum(charges[i] for i in atoms), "Amber14 template charges of the ML atoms"


def infer_charge(topology: app.Topology, system: openmm.System, atoms: List[int]) -> int:
    """Total charge of ``atoms`` from the System's MM charges, else from Amber14/TIP3P templates."""
    reference = mm_reference(system, atoms) or _amber_reference(topology, atoms)
    return integral_sum(*reference)


def topology_bonds(topology: app.Topology) -> Tuple[List[int], List[Tuple[int, int]]]:
    """Atomic numbers (0 without element) and bonds of a Topology, for :mod:`openmlip.charges`."""
    z = [a.element.atomic_number if a.element is not None else 0 for a in topology.atoms()]
    return z, [(b[0].index, b[1].index) for b in topology.bonds()]


def infer_formal_charges(topology: app.Topology, atoms: List[int], total_charge: float) -> Optional[List[float]]:
    """Per-atom formal charges of the ML atoms from the Topology's bonds, or ``None`` when the rules do
    not account for ``total_charge`` (see :func:`openmlip.charges.formal_charges_from_bonds`)."""
    z, bonds = topology_bonds(topology)
    return formal_charges_from_bonds(z, bonds, total_charge, atoms)


def torchforce_clones_safely() -> bool:
    """Whether a TorchForce survives XML cloning with this openmm: openmmtorch 1.5 is built against openmm
    headers older than 8.6, and deserialising it under openmm >= 8.6 segfaults (docs/design.md)."""
    return tuple(int(v) for v in openmm.__version__.split(".")[:2]) < (8, 6)


class OpenMLIPPotentialImpl(MLPotentialImpl):
    """``MLPotential('openmlip', modelPath=...)`` or ``MLPotential('<installed potential>')``.

    Constructor keyword arguments (any of :data:`ARGUMENTS`, :data:`ELECTROSTATIC_ARGUMENTS`,
    :data:`MECHANICAL_ARGUMENTS`) are defaults that the same names in a call override.
    """

    def __init__(self, name: str, modelPath: Optional[str] = None, **defaults):
        self.name = name
        _check_names(defaults, ("modelPath",) + ARGUMENTS + ELECTROSTATIC_ARGUMENTS + MECHANICAL_ARGUMENTS,
                     f"MLPotential({name!r})")
        self.defaults = _check_values(defaults)
        if modelPath is None:
            if name == "openmlip":
                raise ModelFileError("MLPotential('openmlip') needs modelPath='<model file written by openmlip deploy>'")
            modelPath = model_path(name)
        self.model_path = str(modelPath)
        self.model, self.metadata = load_model(self.model_path)
        self.species = SpeciesIndex(self.metadata["elements"])

    # -- openmm-ml interface --------------------------------------------------------------------
    def getMLLongRange(self) -> bool:
        # Honest answer: the model is local (cutoff ~5 Å); its optional Coulomb term is cut off too.
        # Nothing it computes reaches beyond a cutoff or across periodic images by Ewald/PME.
        return False

    def getSupportedEmbeddings(self) -> List[str]:
        # "mechanical" is openmm-ml's, run through openmlip so that the ML region's charge comes from the
        # original MM System (also when interpolating) and formalCharges cover the link-atom caps
        return ["electrostatic", "mechanical"]

    def _args(self, args: dict, known: Tuple[str, ...], where: str) -> dict:
        """The call's arguments checked and merged over the constructor's defaults (the call wins)."""
        _check_names(args, known, where)
        merged = {k: v for k, v in self.defaults.items() if k in known}
        merged.update(_check_values(args))
        return merged

    def potential_kwargs(self, topology, system, atoms, args, embedding=False):
        """(atomic numbers of the ML atoms, keyword arguments of :class:`OpenMMPotential`) for one force: the ML
        atoms and elements checked, the charge state resolved, precision, box, neighbour list and CUDA graphs
        chosen.  Shared by both embeddings."""
        atom_list = check_atoms(topology, atoms)
        all_atoms = list(topology.atoms())
        z = []
        for i in atom_list:
            el = all_atoms[i].element
            if el is None:
                raise UnsupportedElementError(f"atom {i} ({all_atoms[i].name}) has no element; ML atoms need elements")
            z.append(el.atomic_number)
        self.species.check(z)
        charge, formal = args.get("charge"), args.get("formalCharges")
        reference = args.get(_MM_REFERENCE) or mm_reference(system, atom_list)
        if reference is None and charge is None and formal is None:
            reference = _amber_reference(topology, atom_list)
        z_all, bonds = topology_bonds(topology)
        # models are trained with per-atom formal charges (+1 on the N of NH4+, ...): inferred from the bonds
        # unless given, spread evenly (with a warning) only when the bond rules cannot reach the total charge
        state = resolve_charge_state(z_all, total=charge, formal=formal, multiplicity=args.get("multiplicity", 1),
                                     bonds=bonds, atoms=atom_list, reference=reference)
        dtype = torch_dtype(args.get("precision") or self.metadata["dtype"])
        periodic = topology.getPeriodicBoxVectors() is not None or system.usesPeriodicBoundaryConditions()
        method = args.get("neighborMethod") or "auto"
        kwargs = dict(indices=atom_list, num_particles=topology.getNumAtoms(), total_charge=float(state.total),
                      spin_multiplicity=float(state.multiplicity), formal_charges=list(state.formal),
                      periodic=periodic, dtype=dtype, cutoff=float(self.metadata["cutoff"]),
                      neighbor_method=method, neighbor_capacity=args.get("neighborCapacity"),
                      capturable=self._cuda_graphs(args, method, len(atom_list)))
        return z, kwargs

    def _cuda_graphs(self, args: dict, method: str, num_ml_atoms: int) -> bool:
        """Whether the TorchForce runs in CUDA graphs (``useCUDAGraphs``; see the module docstring)."""
        wanted = args.get("useCUDAGraphs")
        reasons = []
        if (args.get("backend") or "torchforce") != "torchforce":
            reasons.append("backend='pythonforce' runs Python each step")
        if "imported" in self.metadata:
            reasons.append(f"a model imported from {self.metadata['imported'].get('framework')} is not known to be capturable")
        if method == "cell" or (method == "auto" and num_ml_atoms > BRUTE_FORCE_MAX_ATOMS):
            reasons.append(f"the cell list (neighborMethod={method!r} with {num_ml_atoms} ML atoms) has data-dependent "
                           "length; pass neighborMethod='brute'")
        if wanted is None:
            return not reasons and cuda_platform_available()
        if wanted and reasons:
            raise ConfigError("useCUDAGraphs=True is not possible: " + "; ".join(reasons))
        return bool(wanted)

    def ml_model(self, capturable: bool) -> torch.nn.Module:
        """A private copy of the model for one force: eager with this version's code when it runs in CUDA graphs
        (:func:`openmlip.models.rebuild_model`), else the file's TorchScript."""
        return rebuild_model(self.model, self.metadata["config"]) if capturable else copy_model(self.model)

    def check_box(self, pot: OpenMMPotential, system: openmm.System, topology: Optional[app.Topology] = None):
        """Raise :class:`~openmlip.errors.BoxError` when the System's (or Topology's) box is too small for ``pot``."""
        if pot.periodic:
            # the System's box is what gets simulated; an empty System (openmm-ml's interpolation helper)
            # carries only OpenMM's default box, so then the Topology's box is the one that counts
            vectors = system.getDefaultPeriodicBoxVectors()
            if system.getNumParticles() == 0 and topology is not None and topology.getPeriodicBoxVectors() is not None:
                vectors = topology.getPeriodicBoxVectors()
            box = np.array([v.value_in_unit(openmm.unit.nanometer) for v in vectors])
            pot.check_box(torch.tensor(box))

    def addForces(self, topology: app.Topology, system: openmm.System, atoms: Optional[Iterable[int]], forceGroup: int, **args):
        args = self._args(args, ARGUMENTS + MECHANICAL_ARGUMENTS, "createSystem/addForces")
        z, kwargs = self.potential_kwargs(topology, system, atoms, args)
        backend = args.get("backend") or "torchforce"
        # forces computed in-graph (setOutputsForces): measured 9.2 vs 10.3 ms/step for alanine dipeptide
        # on the CPU platform (docs/openmm.md); `outputForces=False` lets openmm-torch differentiate instead
        kwargs["output_forces"] = bool(args.get("outputForces", backend == "torchforce"))
        pot = OpenMMPotential(self.ml_model(kwargs["capturable"]), z, **kwargs)
        self.check_box(pot, system, topology)
        if backend == "torchforce" and system.getNumParticles() == 0 and not torchforce_clones_safely():
            # openmm-ml's interpolation (InterpolationHelper) builds ML terms in an empty System and then
            # XML-clones them into a CustomCVForce, which segfaults when openmm and openmm-torch's build do
            # not match (openmm >= 8.6 with openmmtorch 1.5): on such a stack only, use PythonForce
            warnings.warn(
                f"openmlip: interpolated ML terms run through openmm.PythonForce: openmm {openmm.__version__} cannot "
                "deserialise openmm-torch 1.5's TorchForce (segfault), which openmm-ml's interpolation needs. Energies "
                "are identical; MD is slower. Install openmm==8.5.2 (docs/design.md, 'The stack').",
                RuntimeWarning, stacklevel=2,
            )
            backend = "pythonforce"
        force = create_force(pot, backend, pot.capturable, str(args.get("device") or "cpu"))
        force.setForceGroup(forceGroup)
        system.addForce(force)

    def createMixedSystem(self, topology, system, atoms, forceGroup, interpolate, embedding, returnInfo=False, **args):
        if embedding == "mechanical":
            args = self._args(args, ARGUMENTS + MECHANICAL_ARGUMENTS, "createMixedSystem(embedding='mechanical')")
            return self._mechanical(topology, system, atoms, forceGroup, interpolate, returnInfo, args)
        if embedding != "electrostatic":
            raise ConfigError(f"unknown openmlip embedding {embedding!r}; choose 'mechanical' or 'electrostatic'")
        if "imported" in self.metadata:
            raise ConfigError(
                f"{self.model_path}: a model imported from {self.metadata['imported'].get('framework')} predicts no "
                "partial charges, so it has no electrostatic embedding; use embedding='mechanical' (the ML region "
                "keeps its MM charges for ML-MM interactions)")
        from .electrostatic_system import create_electrostatic_system

        args = self._args(args, ARGUMENTS + ELECTROSTATIC_ARGUMENTS, "createMixedSystem(embedding='electrostatic')")
        return create_electrostatic_system(self, topology, system, atoms, forceGroup, interpolate, returnInfo, **args)

    def _mechanical(self, topology, system, atoms, forceGroup, interpolate, returnInfo, args):
        """openmm-ml's mechanical embedding, given the ML region's MM charge from ``system`` (its interpolation
        builds the ML terms in an empty System) and ``formalCharges`` extended by 0 for each link-atom cap
        (openmm-ml appends one hydrogen cap per cut bond after the ML atoms)."""
        atoms = check_atoms(topology, atoms)
        reference = mm_reference(system, atoms)
        if reference is not None:
            args[_MM_REFERENCE] = reference
        if args.get("formalCharges") is not None:
            caps = len(utilities.findLinkBonds(topology, atoms))
            args["formalCharges"] = check_formal(args["formalCharges"], len(atoms)) + [0.0] * caps
        return MechanicalEmbedding().createMixedSystem(self, topology, system, atoms, forceGroup, interpolate,
                                                       returnInfo=returnInfo, **args)
