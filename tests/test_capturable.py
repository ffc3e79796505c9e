"""The CUDA-graph hot path: a static-shape neighbour list, checks that never synchronise, equal numbers.

openmm-torch captures a TorchForce in a CUDA graph only if its frozen TorchScript graph neither copies a
value to the host (``.item()``, ``bool(tensor)``, ``int(tensor)``) nor makes a tensor whose shape depends
on data (``nonzero``, boolean-mask indexing, ``unique``, ``repeat_interleave`` without ``output_size``).
These tests inspect the graph openmm-torch will run (scripted, inlined, frozen as openmm-torch does) and
record every operator it dispatches, and check that the capturable module computes the same energies and
forces as the raising one (and the cell list), with failed checks turned into NaN that
:func:`openmlip.openmm.forces.diagnose` names.  No GPU needed: a sync-free graph on the CPU is sync-free
on CUDA (the same operators run).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.physics import Tol, assert_energy_forces_match, openmm_energy_forces
from helpers.systems import make_model
from torch.utils._python_dispatch import TorchDispatchMode

import openmm

from openmlip.errors import BoxError, ConfigError, GeometryError
from openmlip.nn.neighbors import cell_list_pairs, padded_shift, static_pairs
from openmlip.openmm.embedding import EmbeddedPotential
from openmlip.openmm.forces import create_torch_force, diagnose, torch_force_module, uses_cuda_graphs
from openmlip.openmm.module import OpenMMPotential

#: operators that copy to the host or have data-dependent output shape
SYNC_OPS = ("aten::nonzero", "aten::item", "aten::masked_select", "aten::unique", "aten::_unique", "aten::_unique2",
            "aten::unique_consecutive", "aten::unique_dim", "prim::tolist", "aten::tolist")
#: tensor-to-Python conversions (a sync when their input is a Tensor)
CONVERSIONS = ("aten::Bool", "aten::Int", "aten::Float", "aten::ScalarImplicit", "aten::IntImplicit",
               "aten::FloatImplicit")
RUNTIME_SYNC = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten._unique", "aten.unique")


def _water_cluster(n_waters=8, seed=0, spread=0.9):
    """Waters (O, H, H) at random centres in a ``spread`` nm cube, positions in nm."""
    rng = np.random.default_rng(seed)
    pos, z = [], []
    for c in rng.uniform(0.0, spread, (n_waters, 3)):
        pos += [c, c + [0.0957, 0.0, 0.0], c + [-0.024, 0.0927, 0.0]]
        z += [8, 1, 1]
    return np.array(pos), z


def _water_topology(n_waters: int):
    """An OpenMM Topology of ``n_waters`` waters (O, H1, H2, bonded), in :func:`_water_cluster`'s order."""
    import openmm.app as app

    top = app.Topology()
    chain = top.addChain()
    for _ in range(n_waters):
        res = top.addResidue("HOH", chain)
        o = top.addAtom("O", app.element.oxygen, res)
        for name in ("H1", "H2"):
            top.addBond(o, top.addAtom(name, app.element.hydrogen, res))
    return top


def _triclinic_box():
    return np.array([[1.2, 0.0, 0.0], [0.3, 1.15, 0.0], [-0.25, 0.4, 1.1]])  # OpenMM's reduced form


def _freeze(module):
    """What openmm-torch does with the module it is given."""
    return torch.jit.freeze(module.eval())


def _offending_nodes(graph):
    """(kind, source line) of every synchronising or dynamic-shape node in ``graph``, all blocks included."""
    found = []

    def visit(block):
        for node in block.nodes():
            kind = node.kind()
            bad = kind in SYNC_OPS
            if kind in CONVERSIONS:
                bad = any(isinstance(i.type(), torch._C.TensorType) for i in node.inputs())
            if kind == "aten::repeat_interleave":
                bad = len(list(node.inputs())) < 4 or node.inputsAt(3).type().kind() == "NoneType"
            if kind == "aten::index":  # boolean-mask indexing has dynamic shape; integer indices are fine
                bad = "Bool" in str(node.inputsAt(1).type())
            if bad:
                lines = [line.strip() for line in node.sourceRange().splitlines() if line.strip()]
                found.append((kind, lines[1] if len(lines) > 1 else ""))
            for inner in node.blocks():
                visit(inner)

    visit(graph)
    return found


class _Recorder(TorchDispatchMode):
    """Every aten operator dispatched (TorchScript included), with whether an index argument was boolean."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if name.startswith("aten.index.Tensor") and any(
                t is not None and t.dtype == torch.bool for t in (args[1] if len(args) > 1 else [])):
            name = "aten.index.Tensor(bool mask)"
        self.ops.append(name)
        return func(*args, **(kwargs or {}))


def _runtime_syncs(module, *args):
    rec = _Recorder()
    with rec:
        module(*args)
    return sorted({op for op in rec.ops if op.startswith(RUNTIME_SYNC) or "bool mask" in op
                   or (op.startswith("aten.repeat_interleave") and "output_size" not in op)})


def _potential(model, z, capturable, periodic, cls=OpenMMPotential, **kw):
    return cls(model, z, capturable=capturable, periodic=periodic, dtype=torch.float64, **kw)


# ------------------------------------------------------------------------------------- the list itself


@pytest.mark.parametrize("box", [None, np.diag([12.0, 11.0, 13.0]), _triclinic_box() * 10.0], ids=["open", "cubic", "triclinic"])
def test_static_list_is_the_cell_list_in_row_major_order_with_inert_padding(box):
    pos_nm, _ = _water_cluster(12, seed=3, spread=1.0)
    pos = torch.tensor(pos_nm * 10.0)
    b = None if box is None else torch.tensor(box)
    n = pos.shape[0]
    edge, shift, count = static_pairs(pos, 5.0, b, n * (n - 1))
    k = int(count)
    got = [tuple(e) for e in edge[:, :k].t().tolist()]
    ref_edge, ref_shift = cell_list_pairs(pos, 5.0, b)
    ref = dict(zip((tuple(e) for e in ref_edge.t().tolist()), ref_shift.tolist()))
    assert set(got) == set(ref) and len(got) == len(ref)
    assert got == sorted(got), "pairs come in the order of the brute-force list (row-major)"
    for pair, s in zip(got, shift[:k].tolist()):
        assert np.allclose(s, ref[pair], atol=1e-12)
    # padding: pair (0, 0) with an edge vector longer than the cutoff
    assert bool((edge[:, k:] == 0).all())
    assert torch.allclose(shift[k:], torch.tensor([padded_shift(5.0), 0.0, 0.0], dtype=shift.dtype).expand(n * (n - 1) - k, 3))
    # a shorter list keeps the first pairs and reports the true count (the caller refuses it)
    short, _, count2 = static_pairs(pos, 5.0, b, k // 2)
    assert int(count2) == k and short.t().tolist() == [list(p) for p in got[: k // 2]]


@pytest.mark.parametrize("arch,agg", [("allegro", "charge-gated"), ("nequip", "smoothmax"), ("allegro", "max")])
def test_padding_edges_contribute_exactly_nothing(arch, agg):
    """A model given extra (0, 0) edges of length 2·cutoff + 1 returns the same energy, forces and charges."""
    model = make_model(arch, agg, electrostatics=True)
    pos_nm, z = _water_cluster(4, seed=1, spread=0.5)
    pos = torch.tensor(pos_nm * 10.0)
    n = len(z)
    edge, shift, count = static_pairs(pos, model.cutoff, None, n * (n - 1))
    k = int(count)
    base = {"atomic_numbers": torch.tensor(z), "total_charge": torch.tensor([0.0], dtype=torch.float64),
            "formal_charges": torch.zeros(n, dtype=torch.float64)}
    exact = model({**base, "pos": pos.clone(), "edge_index": edge[:, :k], "edge_shift": shift[:k]})
    padded = model({**base, "pos": pos.clone(), "edge_index": edge, "edge_shift": shift})
    assert n * (n - 1) - k > 10, "the test needs padding slots"
    for key in ("energy", "forces", "charges"):
        assert torch.allclose(exact[key], padded[key], rtol=0, atol=1e-12), key


# ------------------------------------------------------------------------------------- the OpenMM module


@pytest.mark.parametrize("periodic", [False, True], ids=["open", "triclinic"])
def test_capturable_module_equals_raising_module_and_cell_list(periodic):
    model = make_model("allegro", "charge-gated")
    pos_nm, z = _water_cluster(10, seed=2)
    pos = torch.tensor(pos_nm)
    box = torch.tensor(_triclinic_box()) if periodic else None
    results = {}
    for name, kw in (("cell", dict(neighbor_method="cell")), ("static", dict(neighbor_method="brute")),
                     ("capturable", dict(neighbor_method="brute", capturable=True))):
        pot = _potential(model, z, kw.pop("capturable", False), periodic, output_forces=True, **kw)
        results[name] = torch.jit.script(pot)(pos, box)
    for name in ("static", "capturable"):
        assert torch.allclose(results[name][0], results["cell"][0], rtol=1e-12, atol=0)
        assert torch.allclose(results[name][1], results["cell"][1], rtol=0, atol=1e-9)


def test_capturable_mlmm_embedding_equals_raising_embedding():
    """An ML region (one water of four) with the electrostatic embedding of the other waters' charges."""
    model = make_model("nequip", "charge-gated")
    pos_nm, z = _water_cluster(4, seed=5, spread=0.6)
    mm = list(range(3, 12))
    charges = [-0.834, 0.417, 0.417] * 3
    box = torch.tensor(_triclinic_box() * 2.0)
    out = []
    for capturable in (False, True):
        pot = EmbeddedPotential(model, z[:3], mm, charges, embedding_cutoff=0.9, indices=[0, 1, 2], num_particles=12,
                                periodic=True, dtype=torch.float64, capturable=capturable)
        s = torch.jit.script(pot)
        out.append(s.embedding_energy_terms(torch.tensor(pos_nm), box))
    for a, b in zip(out[0], out[1]):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


def test_failed_checks_raise_or_poison_and_diagnose_names_them():
    """The same bad inputs: a typed error from the raising module and from the capturable one on the CPU, NaN
    energy and forces from the capturable one on CUDA (inside a CUDA graph nothing can raise; here
    ``poison_on_cpu``), and :func:`diagnose` recovers the typed error from a System."""
    model = make_model("allegro", "sum")
    pos_nm, z = _water_cluster(6, seed=4, spread=0.8)
    good = torch.tensor(pos_nm)
    box = torch.tensor(np.diag([1.2, 1.2, 1.2]))
    nan_pos = good.clone()
    nan_pos[4, 1] = float("nan")
    same = good.clone()
    same[7] = same[6]
    cases = [  # (kwargs, positions, box, error, words in the message)
        ({}, good, torch.tensor(np.diag([0.8, 1.2, 1.2])), BoxError, "below twice"),
        ({}, nan_pos, box, GeometryError, "not finite"),
        ({}, same, box, GeometryError, "closer than 1e-4"),
        ({"neighbor_capacity": 20}, good, box, GeometryError, "neighborCapacity="),
    ]
    for kw, pos, b, error, words in cases:
        raising = torch.jit.script(_potential(model, z, False, True, output_forces=True, **kw))
        with pytest.raises(torch.jit.Error, match=words) as info:
            raising(pos, b)
        assert f"openmlip.errors.{error.__name__}" in str(info.value)
        on_cpu = torch.jit.script(_potential(model, z, True, True, output_forces=True, **kw))
        with pytest.raises(torch.jit.Error, match=words):  # graphs never run on the CPU: the checks raise there
            on_cpu(pos, b)
        as_on_cuda = _potential(model, z, True, True, output_forces=True, **kw)
        as_on_cuda.poison_on_cpu = True
        energy, forces = torch.jit.script(as_on_cuda)(pos, b)
        assert bool(torch.isnan(energy)) and bool(torch.isnan(forces).all())
        # the same module inside an OpenMM System: diagnose evaluates it with raising checks
        system = openmm.System()
        for _ in z:
            system.addParticle(1.0)
        system.addForce(create_torch_force(_potential(model, z, True, True, output_forces=True, **kw), use_cuda_graphs=True))
        assert uses_cuda_graphs(system)
        found = diagnose(system, pos.numpy(), b.numpy())
        assert isinstance(found, error) and words in str(found)
        if not kw:
            assert diagnose(system, good.numpy(), box.numpy()) is None


def test_cuda_graphs_need_a_capturable_potential():
    model = make_model("allegro", "sum")
    _, z = _water_cluster(2)
    with pytest.raises(ConfigError, match="capturable"):
        create_torch_force(_potential(model, z, False, False), use_cuda_graphs=True)
    with pytest.raises(ConfigError, match="static neighbour list"):
        _potential(model, z, True, False, neighbor_method="cell")
    with pytest.raises(ConfigError, match="eager form"):
        _potential(torch.jit.script(model), z, True, False)


# ------------------------------------------------------------------------------------- the frozen graph


def _graph_cases():
    model = make_model("allegro", "charge-gated")
    # Coulomb cutoff 5 Å: the 1.1 nm box must hold twice it (minimum image)
    nequip = make_model("nequip", "charge-gated", electrostatics=True, coulomb_cutoff=5.0)
    pos_nm, z = _water_cluster(5, seed=6, spread=0.6)
    pos = torch.tensor(pos_nm)
    box = torch.tensor(_triclinic_box())
    yield "forces in-graph, periodic", (model, z, dict(periodic=True, output_forces=True)), None, (pos, box)
    yield "energy only, open", (model, z, dict(periodic=False)), None, (pos,)
    yield "nequip + electrostatics, periodic", (nequip, z, dict(periodic=True, output_forces=True)), None, (pos, box)
    half = torch.tensor(0.5, dtype=torch.float64)
    yield "lambda-scaled (interpolation)", (model, z, dict(periodic=True)), "lambda_interpolate", (pos, box, half)
    embedding = dict(periodic=True, indices=[0, 1, 2], num_particles=len(z), mm_indices=list(range(3, len(z))),
                     mm_charges=[-0.8, 0.4, 0.4] * 4, embedding_cutoff=0.55)
    yield "ML/MM embedding", (model, z[:3], embedding), None, (pos, box)
    lam = torch.tensor(0.7, dtype=torch.float64)
    yield "ML/MM split, lambda_electrostatics", (model, z[:3], dict(embedding, reference_charges=[-0.8, 0.4, 0.4])), \
        (None, "lambda_electrostatics"), (pos, box, lam)
    yield "ML/MM split, both lambdas", (model, z[:3], dict(embedding, reference_charges=[-0.8, 0.4, 0.4])), \
        ("lambda_interpolate", "lambda_electrostatics"), (pos, box, lam, lam)
    yield "ML/MM exact PME, both lambdas", (model, z[:3], dict(embedding, long_range="pme", ewald_alpha=5.0,
                                                               ewald_mesh=[12, 12, 12])), \
        ("lambda_interpolate", "lambda_electrostatics"), (pos, box, lam, lam)


@pytest.mark.parametrize("case", list(_graph_cases()), ids=lambda c: c[0])
def test_frozen_torchforce_graph_has_no_host_synchronisation(case):
    name, (model, z, kw), parameters, args = case
    cls = EmbeddedPotential if "mm_indices" in kw else OpenMMPotential
    parameters = parameters if isinstance(parameters, tuple) else (parameters, None)  # (scale, electrostatics)
    # the graph that runs on CUDA: the capturable module's checks do not raise there (here: poison_on_cpu)
    as_on_cuda = _potential(model, z, True, cls=cls, **kw)
    as_on_cuda.poison_on_cpu = True
    frozen = _freeze(torch_force_module(as_on_cuda, *parameters))
    assert _offending_nodes(frozen.graph) == [], name
    assert _runtime_syncs(frozen, *args) == [], name
    # on the CPU, where graphs never run, it raises: its checks synchronise
    on_cpu = _freeze(torch_force_module(_potential(model, z, True, cls=cls, **kw), *parameters))
    assert "aten._local_scalar_dense.default" in _runtime_syncs(on_cpu, *args)
    # the raising module does synchronise (its checks), which the same inspection sees: the test can fail
    raising = _freeze(torch_force_module(_potential(model, z, False, cls=cls, **kw), *parameters))
    assert _offending_nodes(raising.graph)
    assert "aten._local_scalar_dense.default" in _runtime_syncs(raising, *args)


# ------------------------------------------------------------------------------------- through openmm-ml


def test_openmm_ml_cuda_graphs_default_and_equal_energies():
    """``useCUDAGraphs``: on by default exactly where OpenMM's CUDA platform exists; a System built with it
    gives the energy and forces of one built without (here on the CPU platform, which ignores the property:
    the capturable module itself runs) — the shipped model rebuilt with this version's code equals its file."""
    import openmm.unit as u
    from openmmml import MLPotential

    from openmlip.openmm.forces import cuda_platform_available

    pos_nm, z = _water_cluster(6, seed=7, spread=0.7)
    top = _water_topology(len(z) // 3)
    top.setPeriodicBoxVectors([openmm.Vec3(1.3, 0, 0), openmm.Vec3(0, 1.3, 0), openmm.Vec3(0, 0, 1.3)])
    potential = MLPotential("openmlip-xtb-v7")
    results = {}
    for graphs in (None, False, True):
        system = potential.createSystem(top, useCUDAGraphs=graphs, precision="double")
        assert uses_cuda_graphs(system) == (cuda_platform_available() if graphs is None else graphs)
        results[graphs] = openmm_energy_forces(system, pos_nm * u.nanometer, platform="CPU")
    # pytest.approx(rel=1e-12, abs=1e-9): max(1e-12 |E|, 1e-9)
    assert_energy_forces_match(results[True], results[False], energy=Tol(rtol=1e-12, floor=1e3), forces=Tol(atol=1e-7))
    with pytest.raises(ConfigError, match="useCUDAGraphs=True is not possible.*cell list"):
        potential.createSystem(top, useCUDAGraphs=True, neighborMethod="cell")
    with pytest.raises(ConfigError, match="useCUDAGraphs=1 must be True or False"):
        potential.createSystem(top, useCUDAGraphs=1)


@pytest.mark.parametrize("platform", ["CPU", "Reference"])
def test_cuda_graphs_asked_for_off_cuda_keep_the_typed_errors(platform):
    """``useCUDAGraphs=True`` on a platform where graphs never run (CPU, Reference): a NaN coordinate, two
    coincident atoms and a neighbour list too short are the typed errors of a System built without it (before:
    a NaN energy, nothing said)."""
    import openmm.unit as u
    from openmmml import MLPotential

    from openmlip.errors import from_graph

    pos_nm, z = _water_cluster(4, seed=7, spread=0.6)
    top = _water_topology(len(z) // 3)
    nan_pos, same = pos_nm.copy(), pos_nm.copy()
    nan_pos[4, 1] = np.nan
    same[7] = same[6]
    potential = MLPotential("openmlip-xtb-v7")
    # (the CPU platform finds a NaN coordinate itself, before any force runs)
    nan_words = "Particle coordinate is NaN" if platform == "CPU" else "coordinates of 1 ML particle.* not finite"
    for kw, pos, words in (({}, nan_pos, nan_words), ({}, same, "closer than 1e-4"),
                           ({"neighborCapacity": 1}, pos_nm, "neighbour list holds 1")):
        messages = []
        for graphs in (False, True):
            system = potential.createSystem(top, useCUDAGraphs=graphs, **kw)
            assert uses_cuda_graphs(system) == graphs
            with pytest.raises(openmm.OpenMMException, match=words) as info:
                openmm_energy_forces(system, pos * u.nanometer, platform=platform)
            typed = from_graph(info.value)
            assert "NaN" in words or isinstance(typed, GeometryError)
            messages.append(str(typed or info.value))
        assert messages[0] == messages[1]


def test_md_runner_names_the_check_behind_a_nan_energy(tmp_path):
    """A capturable force whose list is too short (on CUDA: a NaN energy, since a CUDA graph cannot raise; on the
    CPU: the check raises): the runner raises the typed cause before minimising."""
    from pathlib import Path

    from ase.io import read
    from openmmml import MLPotential

    from openmlip.md.runner import MDRunner
    from openmlip.md.structure import xyz_topology

    atoms = read(str(Path(__file__).resolve().parent.parent / "systems" / "ammonium-cluster" / "structure.xyz"))
    top = xyz_topology(atoms)
    system = MLPotential("openmlip-xtb-v7").createSystem(top, charge=1, useCUDAGraphs=True, neighborCapacity=12)
    runner = MDRunner(system, top, atoms.positions / 10.0, tmp_path, timestep_fs=0.5, report_interval=5,
                      checkpoint_interval=10, platform="CPU")
    assert runner.cuda_graphs is False  # the CPU platform ignores the property
    with pytest.raises(GeometryError, match="neighbour list holds 12"):
        runner.run(10, minimize=False, progress=False)


@pytest.mark.parametrize("capacity", [0, 2.5, True, "10"])
def test_neighbor_capacity_must_be_a_positive_integer(capacity):
    _, z = _water_cluster(2)
    with pytest.raises(ConfigError, match=r"neighbor_capacity=.*must be a positive number of pairs"):
        _potential(make_model("allegro", "sum"), z, False, False, neighbor_capacity=capacity)
