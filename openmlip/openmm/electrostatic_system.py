"""openmlip's electrostatic embedding as an openmm-ml ``Embedding``: the ML/MM System around an
:class:`~openmlip.openmm.embedding.EmbeddedPotential`.

An ML region that cuts covalent bonds gets openmm-ml's hydrogen caps (virtual sites); the MM charges it
sees are those of :func:`openmlip.openmm.links.embedding_charges` (each boundary MM atom's charge moved to
its MM neighbours), and each cap's predicted charge sits on the ML atom it caps."""
from __future__ import annotations

import copy
from typing import Iterable

import numpy as np

import openmm
import openmm.unit as u
from openmmml.embeddings import utilities
from openmmml.mlpotential import Embedding

from ..charges import check_formal
from ..errors import ConfigError
from .embedding import LONG_RANGE, EmbeddedPotential
from .forces import create_force
from .links import check_links, copy_topology, embedding_charges, pad_solvation_forces
from .settings import ELECTROSTATICS_LAMBDA, LAMBDA, MM_REFERENCE, check_atoms, mm_reference

# erf damping length of the ML-MM Coulomb kernel (nm) when embeddingDampingLength is not given
DAMPING_LENGTH_NM = 0.05
# The split mode's default cutoff of the Δq kernel (nm), when the MM cutoff is shorter: Δq sums to zero, so what
# the cutoff leaves out is the field of a dipole.  On 20 MD frames of ammonium-water, against the exact mode, the
# error depends on this cutoff alone, not on the MM one: mean |error| 0.73, 0.47, 0.41, 0.34 kJ/mol at 0.7, 0.9,
# 1.0, 1.05 nm.  Every ML atom meets every charged MM atom anyway (dense pairs), so the longer cutoff is free; it
# stays below BOX_FRACTION of the narrowest box width so that a barostat's box can shrink (minimum image).
SPLIT_CUTOFF_NM = 1.0
BOX_FRACTION = 0.45


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
        long_range = args.get("embeddingLongRange") or "split"
        coulomb = _SplitCoulomb(system, topology, atoms, long_range)
        new_system, mm_charges = coulomb.system, coulomb.mm_charges
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
        if settings.backend != "torchforce":
            raise ConfigError("embedding='electrostatic' needs backend='torchforce' (its λ parameters and their "
                              "derivatives live in openmm-torch's TorchForce); omit backend")
        q_ref = coulomb.set_reference(settings.charge.total, len(caps))
        position = {a: k for k, a in enumerate(atoms)}
        sites = list(range(len(atoms))) + [position[ml] for ml, _ in links]  # a cap's charge sits on its ML atom
        mm_indices = sorted(set(i for i, q in mm_charges.items() if q != 0.0) | set(coulomb.nb_charges))
        cutoff_nm = coulomb.default_cutoff() if args.get("embeddingCutoff") is None else args["embeddingCutoff"]
        pot = EmbeddedPotential(potential.ml_model(settings), list(settings.atomic_numbers), mm_indices,
                                [mm_charges.get(i, 0.0) for i in mm_indices],
                                embedding_cutoff=cutoff_nm,
                                damping_length=args.get("embeddingDampingLength") or DAMPING_LENGTH_NM,
                                charge_sites=sites, long_range=long_range, reference_charges=q_ref,
                                reference_mm_charges=[coulomb.nb_charges.get(i, 0.0) for i in mm_indices],
                                reference_exceptions=coulomb.exceptions, **coulomb.ewald(cutoff_nm),
                                **settings.module_kwargs())
        potential.check_box(pot, system)  # the MM System's own box (the test of a too-small box relies on it)
        ml_force = create_force(pot, settings.backend, pot.capturable, settings.device,
                                scale_parameter=LAMBDA if interpolate else None,
                                electrostatics_parameter=args.get("embeddingLambda", ELECTROSTATICS_LAMBDA))
        ml_force.setForceGroup(forceGroup)
        if interpolate:
            result = _interpolated(mm_system, new_system, ml_force)
        else:
            new_system.addForce(ml_force)
            result = new_system
        if returnInfo:
            return dict(system=result, topology=new_topology, oldToNew=list(range(topology.getNumAtoms())))
        return result


class _SplitCoulomb:
    """The ML/MM System's NonbondedForce side of the electrostatic embedding (:mod:`openmlip.openmm.embedding`).

    A copy of ``system`` without the ML atoms' bonded terms, ML–ML nonbonded pairs excluded, and:

    * ``long_range="split"``: each ML atom carries its reference charge (:meth:`set_reference`, once the total
      charge is known); the force field's ML–MM exceptions stay, their charge products rescaled to it;
    * ``long_range="pme"``: the ML atoms carry no charge and ML–MM exceptions no charge product (the graph
      computes all ML–MM electrostatics).

    ``mm_charges`` ({particle: e}) are the charged non-ML particles, ``nb_charges`` the same from the
    NonbondedForce (they differ once link atoms move a boundary atom's charge), ``exceptions`` the
    (ML position, MM particle) pairs of the force field's exceptions, ``cutoff_nm`` the MM cutoff (0: none).
    """

    def __init__(self, system: openmm.System, topology, atoms, long_range: str):
        if long_range not in LONG_RANGE:
            raise ConfigError(f"embeddingLongRange={long_range!r} is not one of {', '.join(map(repr, LONG_RANGE))}")
        self.atoms = list(atoms)
        self.long_range = long_range
        self.system = utilities.removeBonds(system, topology, atoms, True)
        forces = [f for f in self.system.getForces() if isinstance(f, openmm.NonbondedForce)]
        if len(forces) != 1:
            raise ConfigError(f"the electrostatic embedding needs the System's one NonbondedForce (the MM charges), and this "
                              f"System has {len(forces)}; build it with a force field's createSystem, or use "
                              "embedding='mechanical'")
        self.nb = nb = forces[0]
        atom_set = set(atoms)
        position = {a: k for k, a in enumerate(atoms)}
        self.mm_charges = {}
        self.ml_charges = []
        for i in range(nb.getNumParticles()):
            q = nb.getParticleParameters(i)[0].value_in_unit(u.elementary_charge)
            if i in atom_set:
                continue
            if q != 0.0:
                self.mm_charges[i] = q
        self.ml_charges = [nb.getParticleParameters(i)[0].value_in_unit(u.elementary_charge) for i in atoms]
        self.nb_charges = dict(self.mm_charges)
        self.exceptions = []
        self._ml_mm_exceptions = []
        for k in range(nb.getNumExceptions()):
            i, j, qq, sig, eps = nb.getExceptionParameters(k)
            if (i in atom_set) != (j in atom_set):
                ml, mm = (i, j) if i in atom_set else (j, i)
                self.exceptions.append((position[ml], mm))
                self._ml_mm_exceptions.append((k, position[ml]))
        for a in range(len(atoms)):
            for b in range(a):
                nb.addException(atoms[a], atoms[b], 0.0, 1.0, 0.0, True)  # ML-ML: the model
        nb.setExceptionsUsePeriodicBoundaryConditions(self.system.usesPeriodicBoundaryConditions())
        self.method = nb.getNonbondedMethod()
        self.cutoff_nm = 0.0 if self.method == openmm.NonbondedForce.NoCutoff else nb.getCutoffDistance().value_in_unit(u.nanometer)
        if long_range == "pme" and self.method not in (openmm.NonbondedForce.PME, openmm.NonbondedForce.Ewald):
            raise ConfigError("embeddingLongRange='pme' needs a System whose NonbondedForce uses PME (or Ewald); this "
                              "one does not: build it with nonbondedMethod=PME, or use the default embeddingLongRange='split'")

    def default_cutoff(self) -> float:
        """The embedding kernel's cutoff (nm) when embeddingCutoff is not given: the MM cutoff (0 without one); for
        ``"split"``, at least :data:`SPLIT_CUTOFF_NM` where the box allows it."""
        if self.long_range != "split" or self.cutoff_nm == 0.0:
            return self.cutoff_nm
        longer = SPLIT_CUTOFF_NM
        if self.system.usesPeriodicBoundaryConditions():
            a, b, c = (np.array(v.value_in_unit(u.nanometer)) for v in self.system.getDefaultPeriodicBoxVectors())
            volume = abs(np.dot(a, np.cross(b, c)))
            width = min(volume / np.linalg.norm(np.cross(b, c)), volume / np.linalg.norm(np.cross(c, a)),
                        volume / np.linalg.norm(np.cross(a, b)))
            longer = min(longer, BOX_FRACTION * width)
        return max(self.cutoff_nm, longer)

    def set_reference(self, total: int, caps: int):
        """Put the ML atoms' charges in the NonbondedForce: the reference charges (``"split"``: the MM charges shifted
        evenly to sum to ``total``) or 0 (``"pme"``); return them per ML atom, with 0 for each of ``caps`` caps."""
        n = len(self.atoms)
        if self.long_range == "pme":
            reference = [0.0] * n
        else:
            shift = (float(total) - sum(self.ml_charges)) / n
            reference = [q + shift for q in self.ml_charges]
        for a, q in zip(self.atoms, reference):
            _, sig, eps = self.nb.getParticleParameters(a)
            self.nb.setParticleParameters(a, q, sig, eps)
        for k, pos in self._ml_mm_exceptions:
            i, j, qq, sig, eps = self.nb.getExceptionParameters(k)
            q_mm = self.ml_charges[pos]
            scale = 0.0 if self.long_range == "pme" else (reference[pos] / q_mm if q_mm != 0.0 else 1.0)
            self.nb.setExceptionParameters(k, i, j, qq * scale, sig, eps)
        return reference + [0.0] * caps

    def ewald(self, cutoff_nm: float) -> dict:
        """``"pme"``: the NonbondedForce's Ewald α (1/nm) and a mesh of twice its points per box vector (torch-pme's
        Lagrange interpolation needs about twice OpenMM's mesh for the same error); nothing for ``"split"``."""
        if self.long_range != "pme":
            return {}
        from ..nn.mesh_ewald import ewald_alpha, mesh_points

        alpha, nx, ny, nz = self.nb.getPMEParameters()
        alpha = alpha.value_in_unit(u.nanometer**-1) if u.is_quantity(alpha) else float(alpha)
        tolerance = self.nb.getEwaldErrorTolerance()
        if alpha == 0.0:
            alpha = ewald_alpha(self.cutoff_nm, tolerance)
        widths = [v.value_in_unit(u.nanometer)[k] for k, v in enumerate(self.system.getDefaultPeriodicBoxVectors())]
        mesh = [2 * n for n in (nx, ny, nz)] if nx > 0 else mesh_points(alpha, widths, tolerance)
        return dict(ewald_alpha=alpha, ewald_mesh=mesh)


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
        cv.addEnergyParameterDerivative(LAMBDA)  # dE/dλ = E_mixed - E_MM, with the ML force's own derivative
        out.addForce(cv)
    out.addForce(ml_force)
    if any(isinstance(f, openmm.CMMotionRemover) for f in mixed.getForces()):
        out.addForce(openmm.CMMotionRemover())
    return out
