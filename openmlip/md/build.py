"""The OpenMM System of a system spec: whole-system ML or ML/MM through openmm-ml's ``MLPotential`` (``openmlip md``,
``openmlip run``, the free-energy legs of :mod:`openmlip.fe`)."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch  # noqa: F401  (before openmm: openmm-torch's plugins need torch's libraries loaded)
import openmm.unit as u

from ..errors import SpecError
from .spec import SystemSpec
from .structure import load_structure, select_atoms


def build_system(spec: SystemSpec, potential: Optional[str] = None, backend: str = "torchforce",
                 interpolate: bool = False) -> Dict[str, Any]:
    """An OpenMM System for the spec: whole-system ML or ML/MM through openmm-ml's ``MLPotential``.

    ``potential`` overrides ``ml.potential`` (an installed potential name or a model file); ``interpolate``
    builds the ML/MM System with openmm-ml's ``lambda_interpolate`` (MM at 0, ML/MM at 1: :mod:`openmlip.fe`).
    """
    import mdtraj
    from openmmml import MLPotential
    from openmmml.embeddings.utilities import findLinkBonds

    from ..charges import total_charge
    from ..errors import ModelFileError
    from ..openmm.links import copy_topology, place_link_atoms
    from ..openmm.registry import resolve_potential

    top, pos, box, mm_system = load_structure(spec)
    md_top = mdtraj.Topology.from_openmm(top)
    ml = spec.ml
    atoms = select_atoms(spec, md_top, ml.selection, "ml.selection")
    name = potential or ml.potential
    try:
        mlp = MLPotential("openmlip", modelPath=str(resolve_potential(name, spec.root)))
    except ModelFileError as exc:
        raise SpecError(f"{spec.path}: ml.potential: {exc}") from None
    args: Dict[str, Any] = {"precision": ml.precision, "backend": backend}
    if ml.charge is not None:
        args["charge"] = total_charge(ml.charge, "ml.charge")
    if ml.spin_multiplicity != 1:
        args["spinMultiplicity"] = ml.spin_multiplicity
    if ml.formal_charges:
        pos_in_region = {a: k for k, a in enumerate(atoms)}
        fc = [0.0] * len(atoms)
        for k, item in enumerate(ml.formal_charges):
            for i in select_atoms(spec, md_top, item["selection"], f"ml.formal_charges[{k}].selection"):
                if i not in pos_in_region:
                    raise SpecError(f"{spec.path}: ml.formal_charges[{k}]: atom {i} is not in the ML region")
                fc[pos_in_region[i]] = float(item["charge"])
        args["formalCharges"] = fc
        if ml.charge is None:
            args["charge"] = int(round(sum(fc)))  # a non-integer sum fails in the resolver (formal vs total)
        elif abs(sum(fc) - float(ml.charge)) > 1e-9:
            raise SpecError(f"{spec.path}: ml.formal_charges sum to {sum(fc):g} but ml.charge is {ml['charge']}")
    if ml.embedding == "none":
        system = mlp.createSystem(top, **args)
        if box is not None:
            system.setDefaultPeriodicBoxVectors(*box)
    else:
        if mm_system is None:
            raise SpecError(f"{spec.path}: embedding {ml['embedding']!r} needs an MM force field for the rest "
                            "(forcefield: for a PDB, a prmtop otherwise)")
        if interpolate:
            # keep the MM System's constraints inside the ML region at both end states: the MM System has no bond
            # terms for constrained bonds, so removing the constraints (openmm-ml's default) would leave λ = 0
            # with unbound hydrogens (they fall onto their heavy atom during minimisation)
            args["removeConstraints"] = False
        info = mlp.createMixedSystem(top, mm_system, atoms, embedding=ml.embedding, interpolate=interpolate,
                                     returnInfo=True, **args)
        system = info["system"]
        caps = len(findLinkBonds(top, atoms))
        if caps:  # link-atom caps of cut bonds (virtual sites) join the topology and the trajectory
            top, pos = copy_topology(top, caps), place_link_atoms(system, pos)
            md_top = mdtraj.Topology.from_openmm(top)
    return {"topology": top, "positions": pos * u.nanometer, "box": box, "system": system, "ml_atoms": atoms,
            "mdtraj_topology": md_top, "potential": name, "ml_charge": args.get("charge"),
            "ml_formal_charges": args.get("formalCharges")}
