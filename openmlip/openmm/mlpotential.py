"""openmm-ml integration: ``MLPotential('openmlip', modelPath=...)`` and one name per shipped plugin.

Registered through the ``openmmml.potentials`` entry-point group (see ``pyproject.toml``).  Shipped
potentials register their model file under the ``openmlip.models`` group (name -> callable returning
the path), so ``MLPotential('<plugin name>')`` works once the plugin is installed.

Arguments accepted by ``createSystem`` / ``createMixedSystem``, and by the ``MLPotential`` constructor as
defaults that the same name in a call overrides; any other name is a :class:`ConfigError` listing these.
They are checked and resolved into one :class:`~openmlip.openmm.settings.ForceSettings` per force by
:func:`openmlip.openmm.settings.resolve_settings`; its charge state comes from
:func:`openmlip.charges.resolve_charge_state`, as in the ASE calculator, the system specs and data generation.

``charge``
    total charge of the ML region (an integer, e; ``"1"`` is read as 1).  Default: the sum of
    ``formalCharges``, else of the formal charges the bond rules give the Topology's bonds (below) — the
    same total the ASE calculator infers from the geometry.  The MM partial charges of the ML atoms in the
    System's ``NonbondedForce`` (for the mechanical embedding, also when interpolating, the System passed to
    ``createMixedSystem``) are a cross-check: an inferred total that is not their nearest integer, or an
    explicit one more than 0.01 e from their sum, warns with both numbers.  An ML atom other than a monatomic
    ion that has no bond in the Topology (a PDB without CONECT records) is a ``ChargeError``: add the bonds, or
    give ``formalCharges``.
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
    openmlip's electrostatic embedding (:mod:`openmlip.openmm.embedding`): the predicted charges of the ML
    region meet the MM charges, long range included.  ``embeddingLongRange``: ``"split"`` (default; the ML
    atoms keep reference charges in the System's NonbondedForce, the TorchForce adds the predicted charges'
    difference from them within ``embeddingCutoff``) or ``"pme"`` (the predicted charges in a PME inside the
    graph; needs a PME NonbondedForce).  ``embeddingCutoff``: the kernel's cutoff (default: the MM nonbonded
    cutoff; for ``"split"`` at least 1 nm where 0.45 of the narrowest box width allows) and
    ``embeddingDampingLength`` (the erf damping length, default 0.05 nm): nm, or any ``openmm.unit`` length.
    ``embeddingLambda``: the
    global parameter that scales the embedding's electrostatics (default ``"lambda_electrostatics"``,
    openmmtools' name, so its alchemical factory decouples the Δq term with the reference charges; ``None``
    for none).  Forces come from openmm-torch's autograd there: ``outputForces=True`` is an error.
``embedding="mechanical"`` (createMixedSystem, the default)
    openmm-ml's mechanical embedding; ``linkAtomDistances`` is passed on to it.
"""
from __future__ import annotations

import dataclasses
import difflib
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
from openmmml.mlpotential import MLPotential, MLPotentialImpl

from ..charges import check_formal
from ..deploy import load_model
from ..errors import ConfigError, ModelFileError
from ..nn.embedding import SpeciesIndex
from ..models import rebuild_model
from .electrostatic_system import ElectrostaticEmbedding
from .forces import copy_model, create_force
from .links import check_links, copy_topology, pad_solvation_forces
from .module import OpenMMPotential
from .registry import model_path
from .settings import (ARGUMENTS, ELECTROSTATIC_ARGUMENTS, LINK_ARGUMENTS, MM_REFERENCE, ForceSettings,
                       check_atoms, check_names, check_values, mm_reference, resolve_settings)


def torchforce_clones_safely() -> bool:
    """Whether a TorchForce survives XML cloning with this openmm: openmmtorch 1.5 is built against openmm
    headers older than 8.6, and deserialising it under openmm >= 8.6 segfaults (docs/design.md)."""
    return tuple(int(v) for v in openmm.__version__.split(".")[:2]) < (8, 6)


class _Embeddings(list):
    """The embeddings openmlip builds itself, which openmm-ml asks about by ``name in`` before it looks the
    name up in its plugin registry (a bare ``KeyError`` for a typo): every name comes to openmlip, which
    builds its own, hands a registered plugin's to the plugin as openmm-ml would, and names the closest one
    for a typo."""

    def __contains__(self, name) -> bool:
        return True


class OpenMLIPPotentialImpl(MLPotentialImpl):
    """``MLPotential('openmlip', modelPath=...)`` or ``MLPotential('<installed potential>')``.

    Constructor keyword arguments (any of :data:`ARGUMENTS`, :data:`ELECTROSTATIC_ARGUMENTS`,
    :data:`LINK_ARGUMENTS`) are defaults that the same names in a call override.
    """

    def __init__(self, name: str, modelPath: Optional[str] = None, **defaults):
        self.name = name
        check_names(defaults, ("modelPath",) + ARGUMENTS + ELECTROSTATIC_ARGUMENTS + LINK_ARGUMENTS,
                    f"MLPotential({name!r})")
        self.defaults = check_values(defaults)
        if modelPath is None:
            if name == "openmlip":
                raise ModelFileError("MLPotential('openmlip') needs modelPath='<model file written by openmlip deploy>'")
            modelPath = model_path(name)
        self.model_path = str(modelPath)
        self.model, self.metadata = load_model(self.model_path)
        self.species = SpeciesIndex(self.metadata["elements"])
        self._eager: Optional[torch.nn.Module] = None  # built on the first force that runs in CUDA graphs

    # -- openmm-ml interface --------------------------------------------------------------------
    def getMLLongRange(self) -> bool:
        # Honest answer: the model is local (cutoff ~5 Å); its optional Coulomb term is cut off too.
        # Nothing it computes reaches beyond a cutoff or across periodic images by Ewald/PME.
        return False

    def getSupportedEmbeddings(self) -> List[str]:
        # "mechanical" is openmm-ml's, run through openmlip so that the ML region's charge comes from the
        # original MM System (also when interpolating) and formalCharges cover the link-atom caps
        return _Embeddings(["electrostatic", "mechanical"])

    def arguments(self, args: dict, known: Tuple[str, ...], where: str) -> dict:
        """The call's arguments checked and merged over the constructor's defaults (the call wins)."""
        check_names(args, known, where)
        merged = {k: v for k, v in self.defaults.items() if k in known}
        merged.update(check_values(args))
        return merged

    def settings(self, topology: app.Topology, system: openmm.System, atoms, args: dict) -> ForceSettings:
        """The :class:`~openmlip.openmm.settings.ForceSettings` of one force of this model (both embeddings)."""
        return resolve_settings(self.metadata, self.species, topology, system, atoms, args)

    def ml_model(self, settings: ForceSettings) -> torch.nn.Module:
        """The model for one force: a private copy of the file's TorchScript, or, when it runs in CUDA graphs, the
        model in eager form with this version's code (:func:`openmlip.models.rebuild_model`, once per potential;
        :class:`~openmlip.openmm.OpenMMPotential` makes its own capturable copy of it)."""
        if not settings.capturable:
            return copy_model(self.model)
        if self._eager is None:
            self._eager = rebuild_model(self.model, self.metadata["config"])
        return self._eager

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
        args = self.arguments(args, ARGUMENTS + LINK_ARGUMENTS, "createSystem/addForces")
        settings = self.settings(topology, system, atoms, args)
        pot = OpenMMPotential(self.ml_model(settings), list(settings.atomic_numbers), **settings.module_kwargs())
        self.check_box(pot, system, topology)
        if settings.backend == "torchforce" and system.getNumParticles() == 0 and not torchforce_clones_safely():
            # openmm-ml's interpolation (InterpolationHelper) builds ML terms in an empty System and then
            # XML-clones them into a CustomCVForce, which segfaults when openmm and openmm-torch's build do
            # not match (openmm >= 8.6 with openmmtorch 1.5): on such a stack only, use PythonForce
            warnings.warn(
                f"openmlip: interpolated ML terms run through openmm.PythonForce: openmm {openmm.__version__} cannot "
                "deserialise openmm-torch 1.5's TorchForce (segfault), which openmm-ml's interpolation needs. Energies "
                "are identical; MD is slower. Install openmm==8.5.2 (docs/design.md, 'The stack').",
                RuntimeWarning, stacklevel=2,
            )
            settings = dataclasses.replace(settings, backend="pythonforce")
        force = create_force(pot, settings.backend, pot.capturable, settings.device)
        force.setForceGroup(forceGroup)
        system.addForce(force)

    def createMixedSystem(self, topology, system, atoms, forceGroup, interpolate, embedding, returnInfo=False, **args):
        if embedding == "mechanical":
            args = self.arguments(args, ARGUMENTS + LINK_ARGUMENTS, "createMixedSystem(embedding='mechanical')")
            return self._mechanical(topology, system, atoms, forceGroup, interpolate, returnInfo, args)
        if embedding != "electrostatic":
            factories = MLPotential._embeddingFactories
            if embedding in factories:  # another registered embedding plugin: what openmm-ml itself does with it
                return factories[embedding].createEmbedding(embedding).createMixedSystem(
                    self, topology, system, atoms, forceGroup, interpolate, returnInfo=returnInfo, **args)
            known = ["electrostatic", "mechanical"] + sorted(set(factories) - {"electrostatic", "mechanical"})
            close = difflib.get_close_matches(str(embedding), known, 1)
            raise ConfigError(f"unknown embedding {embedding!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                              + f"; choose one of {', '.join(map(repr, known))}")
        if "imported" in self.metadata:
            raise ConfigError(
                f"{self.model_path}: a model imported from {self.metadata['imported'].get('framework')} predicts no "
                "partial charges, so it has no electrostatic embedding; use embedding='mechanical' (the ML region "
                "keeps its MM charges for ML-MM interactions)")
        args = self.arguments(args, ARGUMENTS + ELECTROSTATIC_ARGUMENTS + LINK_ARGUMENTS,
                              "createMixedSystem(embedding='electrostatic')")
        return ElectrostaticEmbedding().createMixedSystem(self, topology, system, atoms, forceGroup, interpolate,
                                                          returnInfo, **args)

    def _mechanical(self, topology, system, atoms, forceGroup, interpolate, returnInfo, args):
        """openmm-ml's mechanical embedding, given the ML region's MM charge from ``system`` (its interpolation
        builds the ML terms in an empty System) and ``formalCharges`` extended by 0 for each link-atom cap
        (openmm-ml appends one hydrogen cap per cut bond after the ML atoms)."""
        atoms = check_atoms(topology, atoms)
        caps = len(check_links(utilities.findLinkBonds(topology, atoms)))
        reference = mm_reference(system, atoms)
        if reference is not None:
            args[MM_REFERENCE] = reference
        if args.get("formalCharges") is not None:
            args["formalCharges"] = check_formal(args["formalCharges"], len(atoms)) + [0.0] * caps
        result = MechanicalEmbedding().createMixedSystem(self, topology, system, atoms, forceGroup, interpolate,
                                                         returnInfo=returnInfo, **args)
        pad_solvation_forces(result["system"] if returnInfo else result)  # link-atom caps in implicit solvent
        if returnInfo:  # openmm-ml's deep-copied Topology keeps its bonds on the original atoms: a real copy
            result["topology"] = copy_topology(topology, caps)
        return result
