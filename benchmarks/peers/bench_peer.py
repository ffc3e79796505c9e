"""Time a peer model in OpenMM: run with the peer's own venv (benchmarks/peers/setup.sh).

    benchmarks/peers/.venv-mace/bin/python benchmarks/peers/bench_peer.py --model mace-off23-small \
        --system ala2-vacuum --route openmm-ml --threads 1 --steps 100

Models are randomly initialised with the published architectures (speed does not depend on the weights):

- ``mace-off23-small``: ScaleShiftMACE, hidden 96x0e, max_ell 3, correlation 3, 2 interactions, r_max 4.5 Å,
  8 Bessel functions, radial MLP [64, 64, 64], 10 elements (MACE-OFF23's);
- ``mace-off23-medium``: the same with hidden 128x0e+128x1o and r_max 5.0 Å;
- ``tensornet``: TorchMD-Net TensorNet, 2 layers, 128 channels, 32 RBFs, cutoff 5 Å, O(3);
- ``nequip``: NequIP 0.19 ``NequIPGNNModel`` with the package defaults (4 layers, l_max 1, parity, 32 features,
  radial MLP 1 x 128), r_max 4.5 Å (openmlip's and MACE-OFF23-small's cutoff);
- ``allegro``: nequip-allegro 0.8 ``AllegroModel``, 2 layers, l_max 2, parity, package defaults otherwise
  (64 scalar / 16 tensor features, MLP width 64), Bessel two-body embedding, r_max 4.5 Å.

Routes: ``openmm-ml`` (``MLPotential('mace'|'torchmdnet'|'nequip', modelPath=...)``: openmm-ml 1.8 runs all three
through an ``openmm.PythonForce`` with a Python neighbour list each step; for NequIP/Allegro the benchmark hands
openmm-ml the freshly built model in place of a trained checkpoint, since ``load_saved_model`` needs a training run)
and ``torchforce`` (the model scripted inside a TorchForce with an all-pairs neighbour list in TorchScript, as
openmm-ml ≤ 1.2 did for MACE).
float32 throughout. Prints one ``BENCH {json}`` line.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402  (before openmm)
import openmm  # noqa: E402,F401

from harness import benchmark_system, emit, machine, time_md  # noqa: E402

MACE_Z = [1, 6, 7, 8, 9, 15, 16, 17, 35, 53]


def build_mace(size: str):
    from e3nn import o3
    from mace import modules

    hidden, r_max = ("96x0e", 4.5) if size == "small" else ("128x0e+128x1o", 5.0)
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    torch.manual_seed(0)
    model = modules.ScaleShiftMACE(
        r_max=r_max, num_bessel=8, num_polynomial_cutoff=5, max_ell=3, interaction_cls=block, interaction_cls_first=block,
        num_interactions=2, num_elements=len(MACE_Z), hidden_irreps=o3.Irreps(hidden), MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(MACE_Z)), avg_num_neighbors=10.0, atomic_numbers=MACE_Z, correlation=3,
        gate=torch.nn.functional.silu, radial_MLP=[64, 64, 64], atomic_inter_scale=1.0, atomic_inter_shift=0.0)
    return model.float().eval(), r_max


TENSORNET_ARGS = dict(
    model="tensornet", embedding_dimension=128, num_layers=2, num_rbf=32, rbf_type="expnorm", trainable_rbf=False,
    activation="silu", cutoff_lower=0.0, cutoff_upper=5.0, max_z=128, max_num_neighbors=64,
    equivariance_invariance_group="O(3)", box_vecs=None, static_shapes=True, check_errors=False, aggr="add", atom_filter=-1,
    derivative=False, output_model="Scalar", precision=32, prior_model=None, reduce_op="add", neighbor_embedding=True,
    attn_activation="silu", num_heads=8, distance_influence="both", vector_cutoff=False, remove_ref_energy=False,
    charge=False, spin=False)


NEQUIP_TYPES = ["H", "C", "N", "O"]  # the elements of every benchmark system
NEQUIP_R_MAX = 4.5


def build_nequip(kind: str):
    """A randomly initialised NequIP-framework model (eager ``GraphModel``; forces by autograd inside)."""
    from nequip.utils.global_state import set_global_state

    set_global_state()
    common = dict(seed=0, model_dtype="float32", type_names=NEQUIP_TYPES, r_max=NEQUIP_R_MAX, avg_num_neighbors=20.0)
    if kind == "nequip":
        from nequip.model import NequIPGNNModel

        model = NequIPGNNModel(**common)
    else:
        from allegro.model import AllegroModel

        model = AllegroModel(l_max=2, num_layers=2, radial_chemical_embed={
            "_target_": "allegro.nn.TwoBodyBesselScalarEmbed", "num_bessels": 8}, **common)
    return model, NEQUIP_R_MAX


def build_tensornet():
    from torchmdnet.models.model import create_model

    torch.manual_seed(0)
    model = create_model(dict(TENSORNET_ARGS))
    return model.eval(), TENSORNET_ARGS["cutoff_upper"]


# ------------------------------------------------------------------------------------------- TorchForce
class MACEForce(torch.nn.Module):
    """MACE in a TorchForce: OpenMM positions (nm) -> energy (kJ/mol); all-pairs minimum-image neighbours."""

    def __init__(self, model, z, indices, periodic: bool, cutoff: float):
        super().__init__()
        from e3nn.util import jit

        self.model = jit.compile(model)
        attrs = torch.zeros(len(z), len(MACE_Z))
        for i, zi in enumerate(z):
            attrs[i, MACE_Z.index(int(zi))] = 1.0
        self.register_buffer("node_attrs", attrs)
        self.register_buffer("indices", torch.tensor(indices, dtype=torch.long))
        self.register_buffer("batch", torch.zeros(len(z), dtype=torch.long))
        self.register_buffer("ptr", torch.tensor([0, len(z)], dtype=torch.long))
        self.register_buffer("head", torch.zeros(1, dtype=torch.long))
        self.periodic = periodic
        self.cutoff = cutoff

    def forward(self, positions, boxVectors: Optional[torch.Tensor] = None):
        pos = positions[self.indices].to(torch.float32) * 10.0
        d = pos[None, :, :] - pos[:, None, :]
        cell = torch.zeros(3, 3, dtype=pos.dtype, device=pos.device)
        shift_vec = torch.zeros_like(d)
        if self.periodic and boxVectors is not None:
            cell = boxVectors.to(torch.float32) * 10.0
            L = torch.diagonal(cell)
            shift_vec = -torch.round(d / L) * L
        dist = torch.linalg.norm(d + shift_vec, dim=-1)
        n = pos.shape[0]
        mask = (dist < self.cutoff) & ~torch.eye(n, dtype=torch.bool, device=pos.device)
        ij = mask.nonzero()
        edge_index = torch.stack([ij[:, 0], ij[:, 1]])
        shifts = shift_vec[ij[:, 0], ij[:, 1]]
        data = {"positions": pos, "node_attrs": self.node_attrs, "edge_index": edge_index, "shifts": shifts,
                "unit_shifts": torch.zeros_like(shifts), "cell": cell, "batch": self.batch, "ptr": self.ptr, "head": self.head}
        out = self.model(data, compute_force=False)
        e = out["interaction_energy"]
        assert e is not None
        return e.sum() * 96.48533212331002


class TensorNetForce(torch.nn.Module):
    def __init__(self, model, z, indices, periodic: bool, cutoff: float):
        super().__init__()
        self.model = model
        self.register_buffer("z", torch.tensor(z, dtype=torch.long))
        self.register_buffer("indices", torch.tensor(indices, dtype=torch.long))
        self.register_buffer("batch", torch.zeros(len(z), dtype=torch.long))
        self.periodic = periodic

    def forward(self, positions, boxVectors: Optional[torch.Tensor] = None):
        pos = positions[self.indices].to(torch.float32) * 10.0
        box: Optional[torch.Tensor] = None
        if self.periodic and boxVectors is not None:
            box = boxVectors.to(torch.float32) * 10.0
        y, _ = self.model(self.z, pos, self.batch, box=box)
        return y.sum() * 96.48533212331002


class NequIPForce(torch.nn.Module):
    """A NequIP-framework model in a TorchForce: all-pairs minimum-image neighbours in TorchScript, the model's
    own autograd forces returned (``setOutputsForces(True)``)."""

    def __init__(self, model, z, indices, periodic: bool, cutoff: float):
        super().__init__()
        from e3nn.util.jit import script
        from nequip.utils.compile import prepare_model_for_compile

        self.model = script(prepare_model_for_compile(model, "cpu"))
        symbols = {1: "H", 6: "C", 7: "N", 8: "O"}
        self.register_buffer("types", torch.tensor([NEQUIP_TYPES.index(symbols[int(v)]) for v in z], dtype=torch.long))
        self.register_buffer("indices", torch.tensor(indices, dtype=torch.long))
        self.periodic = periodic
        self.cutoff = cutoff

    def forward(self, positions, boxVectors: Optional[torch.Tensor] = None):
        pos = positions[self.indices].to(torch.float32) * 10.0
        d = pos[None, :, :] - pos[:, None, :]
        n = pos.shape[0]
        cell = torch.eye(3, dtype=pos.dtype, device=pos.device) * 1000.0
        images = torch.zeros_like(d)
        if self.periodic and boxVectors is not None:
            cell = boxVectors.to(torch.float32) * 10.0
            images = -torch.round(d / torch.diagonal(cell))
        dist = torch.linalg.norm(d + images * torch.diagonal(cell), dim=-1)
        mask = (dist < self.cutoff) & ~torch.eye(n, dtype=torch.bool, device=pos.device)
        ij = mask.nonzero()
        data = {"pos": pos, "atom_types": self.types, "edge_index": torch.stack([ij[:, 0], ij[:, 1]]),
                "edge_cell_shift": images[ij[:, 0], ij[:, 1]], "cell": cell,
                "pbc": torch.full((3,), self.periodic, dtype=torch.bool, device=pos.device)}
        out = self.model(data)
        forces = torch.zeros((positions.shape[0], 3), dtype=torch.float32, device=pos.device)
        forces = forces.index_copy(0, self.indices, out["forces"] * 964.8533212331002)
        return (out["total_energy"].sum() * 96.48533212331002).to(positions.dtype), forces.to(positions.dtype)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, choices=["mace-off23-small", "mace-off23-medium", "tensornet", "nequip", "allegro"])
    ap.add_argument("--system", required=True)
    ap.add_argument("--route", required=True, choices=["openmm-ml", "torchforce"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--openmm-threads", type=int, default=None, help="OpenMM CPU threads (default: --threads)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--budget", type=float, default=None, help="seconds: measure fewer steps (>= 3) for slow models")
    ap.add_argument("--export", help="write the model in its framework's deployment format to this file and exit "
                                     "(nequip/allegro: what nequip-compile --mode torchscript writes; MACE: scripted)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from openmmml import MLPotential

    if args.model.startswith("mace"):
        model, cutoff = build_mace(args.model.rsplit("-", 1)[1])
    elif args.model in ("nequip", "allegro"):
        model, cutoff = build_nequip(args.model)
    else:
        model, cutoff = build_tensornet()
    if args.export:
        export(model, args.model, args.export)
        return
    tmp = Path(tempfile.mkdtemp())

    def add_ml(top, mm, atoms):
        z = [a.element.atomic_number for a in top.atoms()]
        z = [z[i] for i in atoms]
        periodic = top.getPeriodicBoxVectors() is not None
        if args.route == "openmm-ml":
            if args.model.startswith("mace"):
                path = tmp / "mace.model"
                torch.save(model, path)
                pot = MLPotential("mace", modelPath=str(path))
            elif args.model in ("nequip", "allegro"):
                import nequip.model.saved_models.load_utils as load_utils

                load_utils.load_saved_model = lambda *a, **k: model  # untrained: no checkpoint to load
                pot = MLPotential("nequip", modelPath="random-init", lengthScale=0.1, energyScale=96.48533212331002)
            else:
                path = tmp / "tensornet.ckpt"
                torch.save({"hyper_parameters": dict(TENSORNET_ARGS),
                            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
                pot = MLPotential("torchmdnet", modelPath=str(path))
            if mm is None:
                return pot.createSystem(top)
            return pot.createMixedSystem(top, mm, atoms, mlLongRange=False)  # both peers are short-ranged
        import openmmtorch

        if args.model in ("nequip", "allegro"):
            module = torch.jit.script(NequIPForce(model, z, atoms, periodic, cutoff))
        else:
            cls = MACEForce if args.model.startswith("mace") else TensorNetForce
            module = torch.jit.script(cls(model, z, atoms, periodic, cutoff))
        force = openmmtorch.TorchForce(module)
        force.setUsesPeriodicBoundaryConditions(periodic)
        force.setOutputsForces(args.model in ("nequip", "allegro"))
        if mm is None:
            system = openmm.System()
            for a in top.atoms():
                system.addParticle(a.element.mass)
        else:
            system = _strip_ml(mm, atoms)  # mechanical embedding: drop MM terms within the ML region
        system.addForce(force)
        return system

    built = benchmark_system(args.system, add_ml)
    res = time_md(built, warmup=args.warmup, steps=args.steps, threads=args.threads, budget_s=args.budget,
                  openmm_threads=args.openmm_threads)
    emit({"model": args.model, "route": args.route, "system": args.system, "atoms": built["atoms"],
          "threads": {"torch": args.threads, "openmm": args.openmm_threads or args.threads}, **res, "machine": machine()})


def export(model, name: str, path: str) -> None:
    """The framework's own deployment file of ``model`` (for ``openmlip import``)."""
    if name in ("nequip", "allegro"):
        from nequip.model.inference_models.torchscript import save_torchscript_model
        from nequip.utils.global_state import get_latest_global_state

        metadata = dict(model.metadata)
        metadata.update(get_latest_global_state(only_metadata_related=True))
        metadata = {k: str(int(v)) if isinstance(v, bool) else v for k, v in metadata.items()}
        save_torchscript_model(model, metadata, path, "cpu")  # as nequip-compile --mode torchscript does
    elif name.startswith("mace"):
        from e3nn.util import jit

        torch.jit.save(jit.compile(model), path)  # as MACE's LAMMPS/OpenMM exports script it
    else:
        raise SystemExit(f"--export supports nequip, allegro and mace models, not {name}")


def _strip_ml(mm, atoms):
    """Remove bonded MM terms among ML atoms and exclude ML–ML nonbonded pairs (mechanical embedding)."""
    import openmm as mmo

    ml = set(atoms)
    system = mmo.XmlSerializer.deserialize(mmo.XmlSerializer.serialize(mm))
    for f in system.getForces():
        if isinstance(f, mmo.HarmonicBondForce):
            for k in range(f.getNumBonds()):
                i, j, r, kk = f.getBondParameters(k)
                if i in ml and j in ml:
                    f.setBondParameters(k, i, j, r, 0.0)
        elif isinstance(f, mmo.HarmonicAngleForce):
            for k in range(f.getNumAngles()):
                i, j, l_, a, kk = f.getAngleParameters(k)
                if {i, j, l_} <= ml:
                    f.setAngleParameters(k, i, j, l_, a, 0.0)
        elif isinstance(f, mmo.PeriodicTorsionForce):
            for k in range(f.getNumTorsions()):
                i, j, l_, m, per, ph, kk = f.getTorsionParameters(k)
                if {i, j, l_, m} <= ml:
                    f.setTorsionParameters(k, i, j, l_, m, per, ph, 0.0)
        elif isinstance(f, mmo.NonbondedForce):
            lst = sorted(ml)
            existing = {tuple(sorted(f.getExceptionParameters(k)[:2])) for k in range(f.getNumExceptions())}
            for a_ in range(len(lst)):
                for b_ in range(a_ + 1, len(lst)):
                    if (lst[a_], lst[b_]) not in existing:
                        f.addException(lst[a_], lst[b_], 0.0, 1.0, 0.0)
            for k in range(f.getNumExceptions()):
                i, j, q, s, e = f.getExceptionParameters(k)
                if i in ml and j in ml:
                    f.setExceptionParameters(k, i, j, 0.0, s, 0.0)
    for k in reversed(range(system.getNumConstraints())):
        i, j, _ = system.getConstraintParameters(k)
        if i in ml and j in ml:
            system.removeConstraint(k)
    return system


if __name__ == "__main__":
    main()
