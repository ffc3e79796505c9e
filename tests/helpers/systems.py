"""Test systems and model plumbing shared by the test files.  Molecules in Å."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

import openmlip  # noqa: F401  -- torch before openmm, plugin repair
from openmlip.models import ARCHITECTURES, build_model
from openmlip.nn.aggregation import AGGREGATIONS

SYSTEMS = Path(__file__).resolve().parent.parent.parent / "systems"

#: every architecture x aggregation pair (the model physics tests run on all of them)
ARCH_AGG = [(a, g) for a in ARCHITECTURES for g in AGGREGATIONS]


def small_config(**kw):
    """A small but complete configuration (fast in tests); every feature switched on."""
    base = dict(num_channels=4, latent_dim=16, radial_mlp=[16], num_layers=2, l_max=2, num_basis=6,
                charges=True, electrostatics=False, zbl=True)
    base.update(kw)
    return base


def make_model(arch="allegro", agg="sum", dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    model = build_model(dtype=dtype, **small_config(architecture=arch, aggregation=agg, **kw))
    # random, non-trivial per-species scale/shift and smoothmax temperature
    with torch.no_grad():
        model.per_species_scale.uniform_(0.5, 1.5)
        model.per_species_shift.uniform_(-1.0, 1.0)
    return model.to(dtype).eval()


def model_file(path, arch="allegro", agg="sum", dtype=torch.float64, seed=0, **kw) -> Path:
    """:func:`make_model` deployed to ``path`` (an openmlip model file, as ``openmlip deploy`` writes): the tiny model
    of the tests that need a file (the CLI, openmm-ml, free energy), never a shipped potential unless the test is about
    trained physics."""
    from openmlip.deploy import save_model

    save_model(make_model(arch, agg, dtype, seed, **kw), path)
    return Path(path)


def ammonium(bond=1.03):
    """NH4+ (tetrahedral), atomic numbers and positions."""
    d = bond / math.sqrt(3.0)
    pos = np.array([[0, 0, 0], [d, d, d], [-d, -d, d], [-d, d, -d], [d, -d, -d]], dtype=float)
    return np.array([7, 1, 1, 1, 1]), pos


def water(center=(0.0, 0.0, 0.0)):
    pos = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.2400, 0.9266, 0.0]]) + np.asarray(center)
    return np.array([8, 1, 1]), pos


def ammonium_water_cluster(seed=0):
    """NH4+ with two waters nearby and a slight random distortion (generic geometry)."""
    rng = np.random.default_rng(seed)
    z1, p1 = ammonium()
    z2, p2 = water((2.6, 0.3, 0.2))
    z3, p3 = water((-1.5, 2.2, -0.8))
    z = np.concatenate([z1, z2, z3])
    pos = np.concatenate([p1, p2, p3]) + rng.normal(scale=0.05, size=(len(z), 3))
    return z, pos


def as_data(z, pos, dtype=torch.float64, charge=0.0, **extra):
    data = {
        "pos": torch.tensor(pos, dtype=dtype),
        "atomic_numbers": torch.tensor(z, dtype=torch.long),
        "total_charge": torch.tensor([charge], dtype=dtype),
    }
    for k, v in extra.items():
        data[k] = torch.as_tensor(v, dtype=dtype if torch.is_floating_point(torch.as_tensor(v)) else None)
    return data


def evaluate(model, data, compute_forces=True):
    """The model's outputs for a copy of ``data`` (the model may write into its input dict)."""
    d = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in data.items()}
    return model(d, compute_forces)


def ammonium_water_mm():
    """systems/ammonium-water (NH4+ = atoms 0-4, Cl-, 338 TIP3P waters; 2.2 nm box) with its MM System (PME)."""
    import openmm.app as app
    import openmm.unit as u

    folder = SYSTEMS / "ammonium-water"
    pdb = app.PDBFile(str(folder / "ammonium-water.pdb"))
    ff = app.ForceField("amber14/tip3p.xml", str(folder / "ammonium.xml"))
    system = ff.createSystem(pdb.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * u.nanometer, constraints=None,
                             rigidWater=True)
    return pdb, system


def water_like_mdtraj_topology(n: int):
    """An mdtraj Topology of ``n`` HOH residues (O bonded to H1, H2), for analysis tests on synthetic frames."""
    import mdtraj

    top = mdtraj.Topology()
    for _ in range(n):
        res = top.add_residue("HOH", top.add_chain())
        o = top.add_atom("O", mdtraj.element.oxygen, res)
        for h in ("H1", "H2"):
            top.add_bond(o, top.add_atom(h, mdtraj.element.hydrogen, res))
    return top


def hydrogen_molecules(k_bond=1000.0, mass=1.008, constrained=False, periodic=False):
    """Four H2 molecules (harmonic bonds, 0.5 nm apart; optionally constrained, or periodic in a 3 nm box): an OpenMM
    System, its Topology and positions (nm)."""
    import openmm
    import openmm.app as app
    import openmm.unit as u

    top, system, bonds, pos = app.Topology(), openmm.System(), openmm.HarmonicBondForce(), []
    chain = top.addChain()
    for m in range(4):
        res = top.addResidue("HH", chain)
        a, b = (top.addAtom(n, app.Element.getBySymbol("H"), res) for n in ("H1", "H2"))
        top.addBond(a, b)
        system.addParticle(mass)
        system.addParticle(mass)
        bonds.addBond(2 * m, 2 * m + 1, 0.074, k_bond)
        if constrained:
            system.addConstraint(2 * m, 2 * m + 1, 0.074)
        pos += [[0.5 * m, 0, 0], [0.5 * m + 0.074, 0, 0]]
    bonds.setUsesPeriodicBoundaryConditions(periodic)
    system.addForce(bonds)
    if periodic:
        system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) * 3.0 for row in np.eye(3)))
    return system, top, pos * u.nanometer
