"""One assertion per physical property, shared by the model, ASE, OpenMM and ML/MM tests.

Every check compares numbers against a bound built by :class:`Tol`; each test passes the tolerance it
has always used (the copies these helpers replace used different ones, so the tolerance is a parameter,
never a default that could silently loosen a test).

=============================================  =====================================================
property                                       helper
=============================================  =====================================================
E invariant, F equivariant, q invariant        :func:`assert_invariant_energy_equivariant_forces`
under rotation, reflection, translation,
permutation
E, F unchanged by lattice translations         :func:`assert_periodic_image_invariance`
of atoms (periodic systems)
forces = −dE/dx (central differences)          :func:`assert_forces_match_finite_differences`
Σ F = 0 and Σ r × F = 0                        :func:`assert_zero_net_force_and_torque`
Σ q = Q (per structure)                        :func:`assert_charges_sum_to_total`
two routes give the same E and F (OpenMM vs    :func:`assert_energy_forces_match` (with
model, ASE vs a framework's calculator, ...)   :func:`openmm_energy_forces`, :func:`in_openmm_units`)
=============================================  =====================================================

Why not e3nn's ``assert_equivariant`` for whole models: it takes positional tensor arguments and a single
tolerance for every output, does not permute atoms, and rotates ``1o`` outputs with
``Irreps.D_from_matrix``, which goes through Euler angles: in e3nn 0.6.0 under torch's default float32 that
matrix is off by ~2e-7 (and by up to ~2e-10 under float64), above the 1e-10-relative tolerances of the
float64 model tests.  The model check below therefore rotates with plain matrices from ``o3.rand_matrix``;
``assert_equivariant`` is used where it fits, for blocks with e3nn irreps (tests/test_tensor_product.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence, Tuple

import numpy as np
import torch
from e3nn import o3

from .systems import evaluate

#: per-atom entries of a model input that move with the atoms under a permutation
PER_ATOM_KEYS = ("atomic_numbers", "formal_charges", "batch")


def tolerance(dtype):
    """Relative tolerance for equivariance-type comparisons in a given precision."""
    return 1e-10 if dtype == torch.float64 else 2e-5


def _np(x) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


@dataclass(frozen=True)
class Tol:
    """A bound ``|got - ref| <= atol + rtol * max(scale, floor) + rtol_largest * max|ref|``.

    ``scale`` is ``|ref|`` of each compared value (``of="component"``) or the largest ``|ref|`` of all
    compared values (``of="largest"``: errors relative to the biggest force, say).  These numbers express
    every form the tests use: numpy's ``atol + rtol*|ref|`` (``floor=0``), pytest.approx's
    ``max(rel*|ref|, abs)`` (``rtol=rel, floor=abs/rel``), ``rtol*(|ref| + 1)`` (``atol=rtol``), an error
    relative to the largest value ``rtol*max(max|ref|, floor)`` (``of="largest"``), and numpy's ``atol`` given
    as a fraction of the largest value (``rtol_largest``).
    """

    rtol: float = 0.0
    atol: float = 0.0
    floor: float = 0.0
    of: str = "component"
    rtol_largest: float = 0.0

    def __post_init__(self):
        if self.of not in ("component", "largest"):
            raise ValueError(f"Tol.of must be 'component' or 'largest', got {self.of!r}")

    def bound(self, ref) -> np.ndarray:
        """The allowed absolute error for each entry of ``ref`` (a scalar bound when ``of="largest"``)."""
        r = np.abs(_np(ref))
        largest = r.max() if r.size else 0.0
        scale = r if self.of == "component" else largest
        return self.atol + self.rtol * np.maximum(scale, self.floor) + self.rtol_largest * largest


def assert_close(got, ref, tol: Tol, what: str = "", bound=None) -> float:
    """``|got - ref| <= bound`` everywhere (``bound`` defaults to ``tol.bound(ref)``); returns the largest error."""
    __tracebackhide__ = True
    g, r = _np(got), _np(ref)
    assert g.shape == r.shape, f"{what}: shape {g.shape} vs reference {r.shape}"
    err = np.abs(g - r)
    b = np.broadcast_to(tol.bound(r) if bound is None else bound, err.shape)
    bad = ~(err <= b)  # NaN fails
    if bad.any():
        k = np.unravel_index(int(np.argmax(np.where(bad, err / np.maximum(b, 1e-300), -1.0))), err.shape) if err.ndim else ()
        raise AssertionError(f"{what}: {int(bad.sum())} of {err.size} values off; worst at {tuple(int(i) for i in k)}: "
                             f"{g[k]!r} vs {r[k]!r} (error {err[k]:.3g} > allowed {b[k]:.3g}; {tol})")
    return float(err.max()) if err.size else 0.0


# ---------------------------------------------------------------------------------------------- symmetry


def _random_rotation(gen: torch.Generator) -> torch.Tensor:
    """A uniformly random proper rotation (float64) from ``o3.rand_matrix``: from ``gen`` where e3nn accepts a
    generator, else from the global generator (e3nn 0.6.0)."""
    if "generator" in o3.rand_matrix.__code__.co_varnames:
        return o3.rand_matrix(generator=gen, dtype=torch.float64)
    return o3.rand_matrix(dtype=torch.float64)


def assert_invariant_energy_equivariant_forces(
    model,
    data: dict,
    *,
    energy: Tol,
    forces: Optional[Tol] = None,
    charges: Optional[Tol] = None,
    trials: int = 4,
    seed: int = 1234,
    improper: str = "alternate",
    permute: bool = True,
    translation: float = 3.0,
    evaluate_fn: Callable = evaluate,
):
    """Energy invariant, forces equivariant and charges invariant under random elements of E(3) x S_N.

    Each trial draws a rotation ``R`` (``o3.rand_matrix``), makes it improper (``R -> -R``: a reflection)
    on odd trials and with probability 1/2 on even ones (``improper="alternate"``; ``"always"``: every
    trial; ``"never"``), a translation ``t`` (``translation`` x N(0, 1) Å per component) and, with
    ``permute``, a permutation ``P`` of the atoms; it evaluates the model at ``P (x R^T + t)`` (per-atom
    inputs permuted alike) and asserts

    * ``|E' - E| <= energy.bound(E)``;
    * with ``forces``: ``|F' - P F R^T| <=`` the bound of ``forces`` — ``of="largest"`` scales with the
      largest untransformed force component ``max|F|``, ``of="component"`` with each expected component;
    * with ``charges``: ``|q' - P q| <= charges.bound(q)``.

    Deterministic (seeded; the global torch RNG is restored afterwards).  ``evaluate_fn(model, data,
    compute_forces)`` returns the output dict (default: :func:`helpers.systems.evaluate`).
    """
    __tracebackhide__ = True
    if improper not in ("alternate", "always", "never"):
        raise ValueError(f"improper must be 'alternate', 'always' or 'never', got {improper!r}")
    ref = evaluate_fn(model, data, forces is not None)
    e_ref = ref["energy"].detach().sum().item()
    n = data["pos"].shape[0]
    dtype = data["pos"].dtype
    with torch.random.fork_rng():
        gen = torch.Generator().manual_seed(seed)
        for trial in range(trials):
            torch.manual_seed(seed + 100 + trial)  # o3.rand_matrix draws from the global generator
            R = _random_rotation(gen)
            flip = torch.rand(1, generator=gen).item() < 0.5
            t = torch.randn(3, generator=gen, dtype=torch.float64) * translation
            perm = torch.randperm(n, generator=gen) if permute else torch.arange(n)
            if improper == "always" or (improper == "alternate" and (trial % 2 or flip)):
                R = -R
            R_d, t_d = R.to(dtype), t.to(dtype)
            moved = dict(data)
            moved["pos"] = (data["pos"].detach() @ R_d.T + t_d)[perm]
            for key in PER_ATOM_KEYS:
                if key in data:
                    moved[key] = data[key][perm]
            out = evaluate_fn(model, moved, forces is not None)
            what = f"trial {trial} (det R = {torch.det(R).item():+.0f}, permuted: {permute})"
            assert_close(out["energy"].detach().sum().item(), e_ref, energy, f"energy invariance, {what}")
            if forces is not None:
                expected = (ref["forces"].detach() @ R_d.T)[perm]
                bound = forces.bound(ref["forces"]) if forces.of == "largest" else None
                assert_close(out["forces"], expected, forces, f"force equivariance, {what}", bound=bound)
            if charges is not None:
                assert_close(out["charges"], ref["charges"].detach()[perm], charges, f"charge invariance, {what}")


def assert_periodic_image_invariance(energy_forces_fn: Callable, pos, cell, *, moves: dict, wrap: bool = False,
                                     energy: Tol, forces: Tol):
    """Energy and forces of a periodic system do not change when atoms move by lattice vectors.

    ``energy_forces_fn(positions) -> (E, F)``; ``pos`` [N, 3] and ``cell`` [3, 3] (lattice vectors as rows,
    the units of ``pos``) as numpy arrays.  ``moves`` maps atom -> integer lattice offsets ``(n_a, n_b, n_c)``:
    those atoms move by ``n @ cell``; with ``wrap``, every atom is also put into the primary cell (fractional
    coordinates in [0, 1)).  Each configuration must give ``E`` and ``F`` within ``energy.bound(E_0)`` and
    ``forces.bound(F_0)`` of the original's.
    """
    __tracebackhide__ = True
    pos, cell = _np(pos), _np(cell)
    e0, f0 = energy_forces_fn(pos.copy())
    moved = pos.copy()
    for atom, n in moves.items():
        moved[atom] += np.asarray(n, dtype=np.float64) @ cell
    configs = {"moved by lattice vectors": moved}
    if wrap:
        frac = np.linalg.solve(cell.T, pos.T).T
        configs["wrapped into the cell"] = (frac - np.floor(frac)) @ cell
    for name, p in configs.items():
        e, f = energy_forces_fn(p)
        assert_energy_forces_match((e, f), (e0, f0), energy=energy, forces=forces, what=name)


# ---------------------------------------------------------------------------------------------- forces = −∇E


def random_coordinates(n_atoms: int, count: int, seed: int = 0) -> list:
    """``count`` random (atom, Cartesian index) pairs from ``np.random.default_rng(seed)`` (repeats allowed)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        a, k = int(rng.integers(n_atoms)), int(rng.integers(3))
        out.append((a, k))
    return out


def _displaced(pos, step):
    """``pos + step`` in the type and precision of ``pos`` (a torch tensor stays a tensor of its dtype)."""
    if torch.is_tensor(pos):
        return pos.detach().clone() + torch.as_tensor(step, dtype=pos.dtype, device=pos.device)
    p = np.array(pos, copy=True)
    return p + step


def _coordinate_step(pos, a: int, k: int, h: float):
    if torch.is_tensor(pos):
        p = pos.detach().clone()
    else:
        p = np.array(pos, copy=True)
    p[a, k] += h
    return p


def assert_forces_match_finite_differences(
    energy_fn: Callable,
    pos,
    forces,
    *,
    h: float,
    tol: Tol,
    coords: Optional[Iterable[Tuple[int, int]]] = None,
    directions: Optional[Sequence] = None,
    what: str = "",
) -> Tuple[np.ndarray, np.ndarray]:
    """Forces equal −dE/dx by central differences: ``-(E(x + h e) - E(x - h e)) / 2h`` vs ``F·e``.

    ``energy_fn(positions) -> float`` evaluates the energy at displaced positions (a copy of ``pos``, a
    numpy array or a torch tensor, displaced in its own dtype); ``forces`` are the analytic forces at
    ``pos`` in the units of −dE/dx.  ``e`` runs over the unit vectors of ``coords`` (``(atom, index)``
    pairs; default every coordinate) or over the given ``directions`` (arrays shaped like ``pos``).
    Asserts ``|fd - F·e| <= tol.bound(F·e)`` for every ``e``; with ``tol.of="largest"`` the bound scales
    with the largest ``|F·e|`` checked.  Returns ``(fd, analytic)``.
    """
    __tracebackhide__ = True
    f = _np(forces)
    fd, an, labels = [], [], []
    if directions is not None:
        for n, d in enumerate(directions):
            step = torch.as_tensor(d) * h if torch.is_tensor(pos) else np.asarray(d) * h
            e_plus, e_minus = energy_fn(_displaced(pos, step)), energy_fn(_displaced(pos, -step))
            fd.append(-(e_plus - e_minus) / (2 * h))
            an.append(float((f * _np(d)).sum()))
            labels.append(f"direction {n}")
    else:
        if coords is None:
            coords = [(a, k) for a in range(f.shape[0]) for k in range(3)]
        for a, k in coords:
            e_plus, e_minus = energy_fn(_coordinate_step(pos, a, k, +h)), energy_fn(_coordinate_step(pos, a, k, -h))
            fd.append(-(e_plus - e_minus) / (2 * h))
            an.append(float(f[a, k]))
            labels.append(f"atom {a} axis {'xyz'[k]}")
    fd, an = np.array(fd), np.array(an)
    try:
        assert_close(fd, an, tol, f"finite differences vs forces{' (' + what + ')' if what else ''}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n  checked: {labels}\n  fd: {fd.tolist()}\n  analytic: {an.tolist()}") from None
    return fd, an


# ---------------------------------------------------------------------------------------------- conservation


def assert_zero_net_force_and_torque(pos, forces, *, atol: float, min_force: float = 0.0, torque: bool = True):
    """``|Σ_i F_i| <= atol`` per component (translation invariance) and, with ``torque``, ``|Σ_i (r_i - r̄)
    × F_i| <= atol`` (rotation invariance of an open system; r̄ the centroid).  ``min_force``: the largest
    force component must exceed it (a non-trivial force field is being checked)."""
    __tracebackhide__ = True
    p, f = _np(pos), _np(forces)
    assert np.abs(f).max() > min_force, f"forces are trivial: largest component {np.abs(f).max():.3g} <= {min_force:g}"
    net = f.sum(0)
    assert np.abs(net).max() <= atol, f"net force {net} exceeds {atol:g}"
    if torque:
        tau = np.cross(p - p.mean(0), f).sum(0)
        assert np.abs(tau).max() <= atol, f"net torque {tau} exceeds {atol:g}"


def assert_bonds_intact(frames, topology, atoms, start, *, lo: float = 0.85, hi: float = 1.2):
    """MD ``frames`` (positions in nm, energy) are finite and every bond of the ``topology`` between two of
    ``atoms`` stays within ``lo``-``hi`` times its length at the ``start`` positions (before minimisation; nm or
    an OpenMM Quantity): the molecule stays whole (a potential with holes or no repulsion pulls it apart or
    together)."""
    __tracebackhide__ = True
    import openmm.unit as u

    atoms = set(atoms)
    bonds = np.array([(a.index, b.index) for a, b in topology.bonds() if a.index in atoms and b.index in atoms])
    assert len(bonds), "no bond between the atoms given"
    length = lambda p: np.linalg.norm(p[bonds[:, 0]] - p[bonds[:, 1]], axis=1)  # noqa: E731
    start = length(np.asarray(start.value_in_unit(u.nanometer) if u.is_quantity(start) else start, dtype=float))
    for k, (pos, energy) in enumerate(frames):
        pos = _np(pos)
        assert np.isfinite(energy) and np.all(np.isfinite(pos)), f"frame {k}: not finite"
        now = length(pos)
        ratio = now / start
        worst = int(np.argmax(np.abs(np.log(ratio))))
        assert lo <= ratio[worst] <= hi, (f"frame {k}: bond {tuple(bonds[worst])} is {ratio[worst]:.2f} times its "
                                          f"starting length ({now[worst]:.3f} nm)")


def assert_charges_sum_to_total(charges, total, *, atol: float, batch=None, what: str = ""):
    """Predicted (or labelled) charges sum to the total charge: ``|Σ_{i in s} q_i - Q_s| <= atol`` for each
    structure ``s`` (``batch[i]`` = structure of atom ``i``; one structure when ``batch`` is None)."""
    __tracebackhide__ = True
    q = _np(charges).reshape(-1)
    totals = np.atleast_1d(_np(total)).reshape(-1)
    if batch is None:
        sums = np.array([q.sum()])
    else:
        sums = np.zeros(len(totals))
        np.add.at(sums, np.asarray(_np(batch), dtype=np.int64), q)
    assert_close(sums, totals, Tol(atol=atol), f"charge sums{' (' + what + ')' if what else ''}")


# ---------------------------------------------------------------------------------------------- two routes, one answer


def assert_energy_forces_match(got, reference, *, energy: Tol, forces: Optional[Tol] = None, what: str = ""):
    """Two routes to the same numbers agree: ``got = (E, F)`` (e.g. from an OpenMM Context, or ASE) and
    ``reference = (E_ref, F_ref)`` (e.g. the model called directly) in the same units.  Asserts
    ``|E - E_ref| <= energy.bound(E_ref)`` and, with ``forces``, ``|F - F_ref| <= forces.bound(F_ref)``
    (``of="largest"``: relative to the largest reference force component)."""
    __tracebackhide__ = True
    e, f = got
    e_ref, f_ref = reference
    assert_close(float(e), float(e_ref), energy, f"energy{' (' + what + ')' if what else ''}")
    if forces is not None:
        assert_close(f, f_ref, forces, f"forces{' (' + what + ')' if what else ''}")


def in_openmm_units(out: dict) -> Tuple[float, np.ndarray]:
    """(energy kJ/mol, forces kJ/mol/nm) of a model output dict (eV, eV/Å), summed over structures."""
    from openmlip import units

    return (out["energy"].detach().sum().item() * units.EV_TO_KJ_PER_MOL,
            _np(out["forces"]) * units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM)


def openmm_energy_forces(system_or_context, positions=None, *, platform: str = "Reference", properties=None,
                         groups=None, params=None, box=None, virtual_sites: bool = False, forces: bool = True):
    """(energy kJ/mol, forces kJ/mol/nm as an array, or None without ``forces``) from OpenMM.

    Given a System, a fresh Context on ``platform`` (with ``properties``, e.g. ``{"Threads": "1"}``); given
    a Context, that one.  Then: ``box`` (3 vectors, nm) if given, ``positions`` (nm) if given, virtual
    sites computed with ``virtual_sites``, global ``params`` set, and the state of the force ``groups``.
    """
    import openmm
    import openmm.unit as u

    if isinstance(system_or_context, openmm.Context):
        ctx = system_or_context
    else:
        plat = openmm.Platform.getPlatformByName(platform)
        args = (system_or_context, openmm.VerletIntegrator(0.0005), plat)
        ctx = openmm.Context(*args, properties) if properties else openmm.Context(*args)
    if box is not None:
        plain = not hasattr(box, "unit") and not isinstance(box[0], openmm.Vec3)
        ctx.setPeriodicBoxVectors(*([openmm.Vec3(*(float(x) for x in row)) for row in np.asarray(box)] if plain else box))
    if positions is not None:
        ctx.setPositions(positions)
    if virtual_sites:
        ctx.computeVirtualSites()
    for k, v in (params or {}).items():
        ctx.setParameter(k, v)
    st = ctx.getState(getEnergy=True, getForces=forces, **({"groups": groups} if groups is not None else {}))
    e = st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    f = np.asarray(st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)) if forces else None
    return e, f


def openmm_energy(system_or_context, positions=None, **kw) -> float:
    """The energy (kJ/mol) of :func:`openmm_energy_forces` without computing forces."""
    return openmm_energy_forces(system_or_context, positions, forces=False, **kw)[0]


def langevin_frames(system, positions, *, frames: int, interval: int, seed: int, minimize_iterations: int = 100,
                    friction_per_ps: float = 5.0, timestep_fs: float = 0.5, temperature_K: float = 300.0):
    """``frames`` (positions in nm [N, 3], potential energy kJ/mol) every ``interval`` steps of seeded Langevin MD
    on the CPU platform (1 thread) after a local minimisation, from ``positions``."""
    import openmm
    import openmm.unit as u

    integ = openmm.LangevinMiddleIntegrator(temperature_K * u.kelvin, friction_per_ps / u.picosecond,
                                            timestep_fs * u.femtosecond)
    integ.setRandomNumberSeed(seed)
    ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    ctx.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, minimize_iterations)
    ctx.setVelocitiesToTemperature(temperature_K * u.kelvin, seed)
    out = []
    for _ in range(frames):
        integ.step(interval)
        st = ctx.getState(getEnergy=True, getPositions=True)
        out.append((st.getPositions(asNumpy=True).value_in_unit(u.nanometer),
                    st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)))
    return out
