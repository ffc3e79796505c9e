"""openmlip's electrostatic embedding as an openmm-ml ``Embedding``: the ML/MM System around an
:class:`~openmlip.openmm.embedding.EmbeddedPotential`.

An ML region that cuts covalent bonds gets openmm-ml's hydrogen caps (virtual sites); the MM charges it
sees are those of :func:`openmlip.openmm.links.embedding_charges` (each boundary MM atom's charge moved to
its MM neighbours), and each cap's predicted charge sits on the ML atom it caps."""
from __future__ import annotations

import copy
from typing import Iterable

import openmm
import openmm.unit as u
from openmmml.embeddings import utilities
from openmmml.mlpotential import Embedding

from ..charges import check_formal
from ..errors import ConfigError
from .embedding import EmbeddedPotential
from .forces import create_force
from .links import check_links, copy_topology, embedding_charges, pad_solvation_forces
from .settings import LAMBDA, MM_REFERENCE, check_atoms, mm_reference

# erf damping length of the ML-MM Coulomb kernel (nm) when embeddingDampingLength is not given
DAMPING_LENGTH_NM = 0.05


class ElectrostaticEmbedding(Embedding):
    """openmlip's electrostatic embedding, with the interface of openmm-ml's ``Embedding`` classes.

    ``potential`` is an :class:`~openmlip.openmm.mlpotential.OpenMLIPPotentialImpl`; this class uses its public
    ``settings``, ``ml_model`` and ``check_box``.  ``args`` are the checked createMixedSystem arguments.
    """

    def createMixedSystem(self, potential, topology, system: openmm.System, atoms: Iterable[int], forceGroup: int,
                          interpolate: bool, returnInfo: bool = False, **args):
        atoms = check_atoms(topology, atoms)
        if args.get("outputForces"):
            raise ConfigError("outputForces=True is not available with embedding='electrostatic': its forces come "
                              "from openmm-torch's autograd; omit outputForces")
        links = check_links(utilities.findLinkBonds(topology, atoms))
        args = {**args, "outputForces": False}
        reference = mm_reference(system, atoms)  # the ML region's MM charge, before the caps come
        if reference is not None:
            args[MM_REFERENCE] = reference
        if args.get("formalCharges") is not None:
            args["formalCharges"] = check_formal(args["formalCharges"], len(atoms)) + [0.0] * len(links)
        new_system, mm_charges, cutoff_nm = _move_ml_mm_coulomb(system, topology, atoms)
        mm_system, new_topology, caps = system, topology, []
        if links:  # one hydrogen cap (a virtual site) per cut bond, as in openmm-ml's mechanical embedding
            new_topology = copy_topology(topology)
            mm_system = copy.deepcopy(system) if interpolate else system
            capped = [new_system] + ([mm_system] if interpolate else [])
            caps, _ = utilities.addLinkAtomSites(new_topology, capped, links, args.get("linkAtomDistances", []))
            for s in capped:
                pad_solvation_forces(s)
            mm_charges = embedding_charges(topology, atoms, mm_charges, links)
        ml_atoms = atoms + caps
        settings = potential.settings(new_topology, new_system if links else system, ml_atoms, args)
        if interpolate and settings.backend != "torchforce":
            raise ConfigError("interpolate=True with the electrostatic embedding needs backend='torchforce'")
        position = {a: k for k, a in enumerate(atoms)}
        sites = list(range(len(atoms))) + [position[ml] for ml, _ in links]  # a cap's charge sits on its ML atom
        mm_indices = sorted(i for i, q in mm_charges.items() if q != 0.0)
        pot = EmbeddedPotential(potential.ml_model(settings), list(settings.atomic_numbers), mm_indices,
                                [mm_charges[i] for i in mm_indices],
                                embedding_cutoff=cutoff_nm if args.get("embeddingCutoff") is None else args["embeddingCutoff"],
                                damping_length=args.get("embeddingDampingLength") or DAMPING_LENGTH_NM,
                                charge_sites=sites, **settings.module_kwargs())
        potential.check_box(pot, system)  # the MM System's own box (the test of a too-small box relies on it)
        ml_force = create_force(pot, settings.backend, pot.capturable, settings.device,
                                scale_parameter=LAMBDA if interpolate else None)
        ml_force.setForceGroup(forceGroup)
        if interpolate:
            result = _interpolated(mm_system, new_system, ml_force)
        else:
            new_system.addForce(ml_force)
            result = new_system
        if returnInfo:
            return dict(system=result, topology=new_topology, oldToNew=list(range(topology.getNumAtoms())))
        return result


def _move_ml_mm_coulomb(system: openmm.System, topology, atoms):
    """A copy of ``system`` without the ML atoms' bonded terms and MM charges, ML-MM Coulomb exceptions and
    ML-ML nonbonded pairs; and the charged MM particles ({index: charge e}) and the MM cutoff (nm, 0: none)."""
    atom_set = set(atoms)
    new_system = utilities.removeBonds(system, topology, atoms, True)
    mm_charges = {}
    cutoff_nm = 0.0
    for force in new_system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            for i in range(force.getNumParticles()):
                q, sig, eps = force.getParticleParameters(i)
                if i in atom_set:
                    force.setParticleParameters(i, 0.0, sig, eps)  # ML charges come from the model
                elif q.value_in_unit(u.elementary_charge) != 0.0:
                    mm_charges[i] = q.value_in_unit(u.elementary_charge)
            for k in range(force.getNumExceptions()):
                i, j, qq, sig, eps = force.getExceptionParameters(k)
                if (i in atom_set) != (j in atom_set):
                    force.setExceptionParameters(k, i, j, 0.0, sig, eps)  # ML-MM Coulomb moves to the embedding
            for a in range(len(atoms)):
                for b in range(a):
                    force.addException(atoms[a], atoms[b], 0.0, 1.0, 0.0, True)  # ML-ML: the model
            force.setExceptionsUsePeriodicBoundaryConditions(new_system.usesPeriodicBoundaryConditions())
            if force.getNonbondedMethod() != openmm.NonbondedForce.NoCutoff:
                cutoff_nm = force.getCutoffDistance().value_in_unit(u.nanometer)
        elif isinstance(force, openmm.CustomNonbondedForce):
            utilities.addCustomNonbondedExclusions(force, atoms)
    return new_system, mm_charges, cutoff_nm


def _interpolated(mm_system: openmm.System, mixed: openmm.System, ml_force) -> openmm.System:
    """E(λ) = (1 − λ) E_MM + λ E_mixed, with λ = ``lambda_interpolate`` (default 1).

    Forces that are the same in both Systems (XML-equal) stay outside unscaled; the others go into two
    CustomCVForces, one per Hamiltonian: each evaluates its forces in its own inner Context, where
    OpenMM's CPU platform requires every nonbonded force to carry the same exclusions, which the MM
    and the mixed NonbondedForce do not.  The ML force scales itself by λ inside its TorchScript graph
    (a TorchForce global parameter).
    """
    out = copy.deepcopy(mixed)
    while out.getNumForces():
        out.removeForce(0)
    serialize = openmm.XmlSerializer.serialize
    mm_forces = [f for f in mm_system.getForces() if not isinstance(f, openmm.CMMotionRemover)]
    mixed_forces = [f for f in mixed.getForces() if not isinstance(f, openmm.CMMotionRemover)]
    mm_xml = [serialize(f) for f in mm_forces]
    shared = [f for f in mixed_forces if serialize(f) in mm_xml]
    shared_xml = {serialize(f) for f in shared}
    for f in shared:
        out.addForce(copy.deepcopy(f))
    for weight, forces in ((f"(1-{LAMBDA})", mm_forces), (LAMBDA, mixed_forces)):
        terms = [f for f in forces if serialize(f) not in shared_xml]
        if not terms:
            continue
        cv = openmm.CustomCVForce(f"{weight}*({'+'.join(f'e{k}' for k in range(len(terms)))})")
        for k, f in enumerate(terms):
            cv.addCollectiveVariable(f"e{k}", copy.deepcopy(f))
        cv.addGlobalParameter(LAMBDA, 1.0)
        out.addForce(cv)
    out.addForce(ml_force)
    if any(isinstance(f, openmm.CMMotionRemover) for f in mixed.getForces()):
        out.addForce(openmm.CMMotionRemover())
    return out
