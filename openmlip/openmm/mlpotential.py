"""openmm-ml integration: ``MLPotential('openmlip', modelPath=...)`` and one name per shipped plugin.

Registered through the ``openmmml.potentials`` entry-point group (see ``pyproject.toml``).  Shipped
potentials register their model file under the ``openmlip.models`` group (name -> callable returning
the path), so ``MLPotential('<plugin name>')`` works once the plugin is installed.

Arguments accepted by ``createSystem`` / ``createMixedSystem``:

``charge``
    total charge of the ML region (e).  Default: the sum of the MM partial charges of the ML atoms in
    the System's ``NonbondedForce`` (must be within 0.01 e of an integer); for ``createSystem`` (no MM
    force field) the Amber14/TIP3P templates of the Topology's residues; otherwise an error.
``precision``
    ``"single"`` or ``"double"`` (default: the model file's dtype).
``backend``
    ``"torchforce"`` (default) or ``"pythonforce"``.
``device``
    torch device for the ``pythonforce`` backend (TorchForce follows the OpenMM platform).
``formalCharges``
    optional per-ML-atom formal charges; when omitted they are inferred from the Topology's bonds
    (monatomic ions, 4-bonded N, carboxylates, amidinium cations such as Arg and HIP; see
    :func:`infer_formal_charges`), or spread evenly
    with a warning when those rules do not add up to the total charge.
``outputForces``
    compute forces inside the TorchScript graph (``setOutputsForces``); default True for ``torchforce``.
``embedding="electrostatic"`` (createMixedSystem)
    openmlip's electrostatic embedding (:mod:`openmlip.openmm.embedding`); ``embeddingCutoff`` (nm,
    default: the MM nonbonded cutoff) and ``embeddingDamping`` (Å, default 0.5).
"""
from __future__ import annotations

import copy
import warnings
from typing import Dict, Iterable, List, Optional

import numpy as np
import torch

import openmm
import openmm.app as app
from openmmml.mlpotential import MLPotentialImpl

from ..deploy import load_model
from ..errors import ChargeError, ModelFileError, SelectionError, UnsupportedElementError
from ..nn.embedding import SpeciesIndex
from .forces import create_force
from ._factory import OpenMLIPPotentialImplFactory  # noqa: F401  (re-exported: the entry point's class)
from .module import OpenMMPotential
from .registry import ENTRY_POINT_GROUP, shipped_models  # noqa: F401


def _mm_charges(system: openmm.System) -> Optional[List[float]]:
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            return [force.getParticleParameters(i)[0].value_in_unit(openmm.unit.elementary_charge)
                    for i in range(system.getNumParticles())]
    return None


def integral_charge(total: float, what: str) -> int:
    q = round(total)
    if abs(total - q) > 0.01:
        raise ChargeError(
            f"the {what} sum to {total:.4f} e, not an integer (±0.01 e); the ML region probably cuts through a "
            "residue or bond — pass charge=<integer total charge of the ML region>"
        )
    return int(q)


def infer_charge(topology: app.Topology, system: openmm.System, atoms: List[int]) -> int:
    """Total charge of ``atoms`` from the System's MM charges, else from Amber14/TIP3P templates."""
    charges = _mm_charges(system)
    if charges is not None:
        return integral_charge(sum(charges[i] for i in atoms if i < len(charges)), "MM partial charges of the ML atoms")
    try:
        ff = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
        charges = _mm_charges(ff.createSystem(topology))
    except Exception as exc:  # noqa: BLE001
        raise ChargeError(
            f"cannot infer the total charge of the ML region: the System has no NonbondedForce and the Amber14 "
            f"templates do not match the Topology ({str(exc).splitlines()[0]}); pass charge=<integer>"
        ) from None
    return integral_charge(sum(charges[i] for i in atoms), "Amber14 template charges of the ML atoms")


_MONATOMIC_IONS = {3: 1, 11: 1, 19: 1, 9: -1, 17: -1, 35: -1, 53: -1, 12: 2, 20: 2}


def infer_formal_charges(topology: app.Topology, atoms: List[int], total_charge: float) -> Optional[List[float]]:
    """Per-atom formal charges of the ML atoms from the Topology's bonds, or ``None`` when the rules do
    not account for ``total_charge``.

    Rules (the charged groups of the shipped data and of proteins): an unbonded Li/Na/K/Mg/Ca or
    F/Cl/Br/I is a monatomic ion; a nitrogen with four bonds carries +1 (NH4+, R-NH3+, Lys, N-terminus);
    a carboxylate (C bonded to two oxygens that have no other bond) carries -1 on its last oxygen, as
    its SMILES ``C(=O)[O-]`` in the training data does; an amidinium cation (a three-bonded carbon
    whose neighbours include two or more nitrogens, every one of them three-bonded, and no oxygen:
    Arg's guanidinium, doubly protonated His (HIP), protonated imidazoles and amidines) carries +1 on
    its last nitrogen, as ``C(N)=[NH2+]`` would.  Neutral look-alikes keep 0: an amide or urea carbon
    has an oxygen, and a neutral amidine, His (HID/HIE) or guanine has a two-bonded nitrogen.
    Anything else is 0.
    """
    index = {a: k for k, a in enumerate(atoms)}
    all_atoms = list(topology.atoms())
    neighbours: Dict[int, List[int]] = {a: [] for a in atoms}
    degree = [0] * len(all_atoms)
    for b in topology.bonds():
        i, j = b[0].index, b[1].index
        degree[i] += 1
        degree[j] += 1
        if i in neighbours:
            neighbours[i].append(j)
        if j in neighbours:
            neighbours[j].append(i)
    fc = [0.0] * len(atoms)
    for a in atoms:
        el = all_atoms[a].element
        z = el.atomic_number if el is not None else 0
        nb = neighbours[a]
        if not nb and z in _MONATOMIC_IONS:
            fc[index[a]] = float(_MONATOMIC_IONS[z])
        elif z == 7 and len(nb) == 4:
            fc[index[a]] = 1.0
        elif z == 6:
            terminal_o = [o for o in nb if all_atoms[o].element is not None and all_atoms[o].element.atomic_number == 8
                          and degree[o] == 1]
            if len(terminal_o) == 2 and max(terminal_o) in index:
                fc[index[max(terminal_o)]] = -1.0
            elements = [all_atoms[k].element.atomic_number if all_atoms[k].element is not None else 0 for k in nb]
            n_nb = [k for k, ze in zip(nb, elements) if ze == 7]
            if (len(nb) == 3 and len(n_nb) >= 2 and 8 not in elements and all(degree[k] == 3 for k in n_nb)
                    and max(n_nb) in index):
                fc[index[max(n_nb)]] += 1.0
    return fc if abs(sum(fc) - float(total_charge)) < 1e-6 else None


def _copy_model(model):
    """A deep copy of a scripted model, without torch's warning about reading ``.grad`` of its buffers."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor that is not a leaf")
        return copy.deepcopy(model)


class OpenMLIPPotentialImpl(MLPotentialImpl):
    def __init__(self, name: str, modelPath: Optional[str] = None):
        self.name = name
        if modelPath is None:
            if name == "openmlip":
                raise ModelFileError("MLPotential('openmlip') needs modelPath='<model file written by openmlip deploy>'")
            models = shipped_models()
            if name not in models:
                raise ModelFileError(f"no installed openmlip potential named {name!r}; installed: {sorted(models) or 'none'}")
            modelPath = models[name]
        self.model_path = str(modelPath)
        self.model, self.metadata = load_model(self.model_path)
        self.species = SpeciesIndex(self.metadata["elements"])

    # -- openmm-ml interface --------------------------------------------------------------------
    def getMLLongRange(self) -> bool:
        # Honest answer: the model is local (cutoff ~5 Å); its optional Coulomb term is cut off too.
        # Nothing it computes reaches beyond a cutoff or across periodic images by Ewald/PME.
        return False

    def getSupportedEmbeddings(self) -> List[str]:
        return ["electrostatic"]

    def _potential_kwargs(self, topology, system, atoms, args, embedding=False):
        atom_list = list(range(topology.getNumAtoms())) if atoms is None else list(atoms)
        all_atoms = list(topology.atoms())
        bad = [i for i in atom_list if i < 0 or i >= len(all_atoms)]
        if bad:
            raise SelectionError(f"ML atom indices {bad[:5]} out of range for a Topology of {len(all_atoms)} atoms")
        z = []
        for i in atom_list:
            el = all_atoms[i].element
            if el is None:
                raise UnsupportedElementError(f"atom {i} ({all_atoms[i].name}) has no element; ML atoms need elements")
            z.append(el.atomic_number)
        self.species.check(z)
        charge = args.get("charge")
        if charge is None:
            charge = infer_charge(topology, system, atom_list)
        precision = args.get("precision")
        if precision is None:
            dtype = torch.float64 if self.metadata["dtype"] == "float64" else torch.float32
        elif precision in ("single", "double"):
            dtype = torch.float32 if precision == "single" else torch.float64
        else:
            raise ValueError(f"precision must be 'single' or 'double', got {precision!r}")
        periodic = topology.getPeriodicBoxVectors() is not None or system.usesPeriodicBoundaryConditions()
        formal = args.get("formalCharges")
        if formal is None:
            # models are trained with per-atom formal charges (+1 on the N of NH4+, ...): infer them from the
            # bonds rather than spreading the charge evenly, which the model never saw for an ion
            formal = infer_formal_charges(topology, atom_list, float(charge))
            if formal is None and abs(float(charge)) > 0:
                warnings.warn(f"could not place the ML region's charge {charge:g} on atoms from the Topology's bonds; "
                              "spreading it evenly (charge/N per atom). Pass formalCharges=[...] (one per ML atom) "
                              "for the charges the model was trained with", stacklevel=3)
        kwargs = dict(indices=atom_list, num_particles=topology.getNumAtoms(), total_charge=float(charge),
                      spin_multiplicity=float(args.get("spinMultiplicity", 1)), formal_charges=formal,
                      periodic=periodic, dtype=dtype, cutoff=float(self.metadata["cutoff"]),
                      neighbor_method=args.get("neighborMethod", "auto"))
        return z, kwargs

    def _check_box(self, pot: OpenMMPotential, system: openmm.System, topology: Optional[app.Topology] = None):
        if pot.periodic:
            # the System's box is what gets simulated; an empty System (openmm-ml's interpolation helper)
            # carries only OpenMM's default box, so then the Topology's box is the one that counts
            vectors = system.getDefaultPeriodicBoxVectors()
            if system.getNumParticles() == 0 and topology is not None and topology.getPeriodicBoxVectors() is not None:
                vectors = topology.getPeriodicBoxVectors()
            box = np.array([v.value_in_unit(openmm.unit.nanometer) for v in vectors])
            pot.check_box(torch.tensor(box))

    def addForces(self, topology: app.Topology, system: openmm.System, atoms: Optional[Iterable[int]], forceGroup: int, **args):
        z, kwargs = self._potential_kwargs(topology, system, atoms, args)
        backend = args.get("backend", "torchforce")
        # forces computed in-graph (setOutputsForces): measured 9.2 vs 10.3 ms/step for alanine dipeptide
        # on the CPU platform (docs/openmm.md); `outputForces=False` lets openmm-torch differentiate instead
        kwargs["output_forces"] = bool(args.get("outputForces", backend == "torchforce"))
        pot = OpenMMPotential(_copy_model(self.model), z, **kwargs)
        self._check_box(pot, system, topology)
        if backend == "torchforce" and system.getNumParticles() == 0:
            # openmm-ml's interpolation (InterpolationHelper) builds ML terms in an empty System and then
            # XML-clones them into a CustomCVForce.  Deserialising a TorchForce crashes openmm-torch 1.5
            # (segmentation fault), so these terms use the PythonForce backend instead.
            warnings.warn(
                "openmlip: interpolated ML terms run through openmm.PythonForce: openmm-torch 1.5 cannot "
                "deserialise a TorchForce (segfault), which openmm-ml's interpolation needs. Energies are "
                "identical; MD is slower. (openmlip's electrostatic embedding interpolates inside a TorchForce.)",
                RuntimeWarning, stacklevel=2,
            )
            backend = "pythonforce"
        force = create_force(pot, backend, bool(args.get("useCUDAGraphs", False)), str(args.get("device") or "cpu"))
        force.setForceGroup(forceGroup)
        system.addForce(force)

    def createMixedSystem(self, topology, system, atoms, forceGroup, interpolate, embedding, returnInfo=False, **args):
        if embedding != "electrostatic":
            raise ValueError(f"unknown openmlip embedding {embedding!r}")
        from .electrostatic_system import create_electrostatic_system

        return create_electrostatic_system(self, topology, system, atoms, forceGroup, interpolate, returnInfo, **args)
