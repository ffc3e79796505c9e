"""λ windows and non-equilibrium switches between the two end states of a System.

The engine is generic: it takes any OpenMM ``System`` with a global parameter ``lambda_interpolate``
whose energy is linear in λ, E(λ) = (1 − λ) E_0 + λ E_1 (openmm-ml's ``createMixedSystem(...,
interpolate=True)``: MM at λ = 0, ML/MM at λ = 1; openmlip's electrostatic embedding scales its ML
term by λ inside the TorchForce).  Only the forces that carry the parameter are re-evaluated when λ
changes (they are moved to a spare force group of the engine's own copy of the System): the other
terms are the same at every λ, so they drop out of every reduced-potential difference and of MBAR.

Units: energies in kJ/mol, reduced potentials u = E / kT (dimensionless), kT = R T with R from
``openmm.unit``.

One unit of work is one file, written atomically, so that units run as separate processes (or
cluster jobs) and a killed unit resumes:

``windows/window-KKK.npz``
    λ window K: Langevin MD at λ_K, a sample every ``sample_interval`` steps, and for each sample
    the reduced potential at every λ of the schedule (``u_kn`` [n_lambdas, n_samples]).  While it
    runs, ``window-KKK.partial.npz`` holds the samples so far and the state of the chain (positions,
    velocities, box); rerunning continues from it.
``switches/{forward,reverse}-BBB.npz``
    batch B of switches: equilibrium MD at λ = 0 (forward) or λ = 1 (reverse), then for each switch
    ``switch_decorrelation_steps`` more equilibrium steps and a switch of λ to the other end in
    ``switch_stages`` equal increments, each followed by ``switch_stage_steps`` MD steps; the
    protocol work W = Σ [u(λ_{s+1}, x_s) − u(λ_s, x_s)] (in kT) of each switch is stored.
    ``*.partial.npz`` holds the finished switches and the equilibrium chain's state.

Every file records the settings that shaped it (those of its kind of unit, and the System's fingerprint:
masses, constraints and every force, the TorchForce's model by its weights, ML atoms and charge); reading a
file made with other settings, or another potential or spec, is a :class:`~openmlip.errors.ResumeError`
naming each change (:mod:`openmlip.store`).  Each unit holds a lock while it runs, so two processes never
compute the same unit.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

import torch  # noqa: F401  (before openmm: openmm-torch's plugin needs torch's libraries)
import openmm
import openmm.unit as u

from ..errors import BlowUpError, ConfigError, from_graph
from ..openmm.fingerprint import system_fingerprint
from ..openmm.platform import choose_platform, openmm_seed
from ..openmm.settings import LAMBDA
from ..settings import NON_NEGATIVE_INT, POSITIVE_INT, POSITIVE_NUMBER, Rule, check_known, check_values, is_kind
from ..store import RunStore
from ..units import GAS_CONSTANT_KJ_PER_MOL_K

DIRECTIONS = ("forward", "reverse")


def kt_kJmol(temperature_K: float) -> float:
    """kT in kJ/mol."""
    return GAS_CONSTANT_KJ_PER_MOL_K * float(temperature_K)


@dataclass(frozen=True)
class FESettings:
    """Settings of a λ-window / switching calculation (what shapes each kind of unit: :meth:`unit_settings`;
    ``platform``, ``threads`` and ``bootstrap`` shape none)."""

    lambdas: List[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    temperature_K: float = 300.0
    timestep_fs: float = 1.0
    friction_per_ps: float = 1.0
    minimize_iterations: int = 100
    equilibrate_steps: int = 1000
    equilibrate_friction_per_ps: float = 10.0  # as the MD runner: reach the temperature before sampling
    samples: int = 200
    sample_interval: int = 50
    checkpoint_samples: int = 50
    switches: int = 20                 # per direction
    switches_per_batch: int = 5
    switch_stages: int = 50
    switch_stage_steps: int = 10
    switch_decorrelation_steps: int = 500
    bootstrap: int = 200
    seed: int = 0
    platform: Optional[str] = None
    threads: int = 1

    _RUNTIME = ("platform", "threads")

    def __post_init__(self):
        lam = self.lambdas
        if (not isinstance(lam, (list, tuple)) or len(lam) < 2 or not all(is_kind(x, "number") for x in lam)
                or lam[0] != 0.0 or lam[-1] != 1.0 or any(b <= a for a, b in zip(lam, lam[1:]))):
            raise ConfigError(f"lambdas must rise strictly from 0 to 1 with at least two values, got {self.lambdas!r}")
        object.__setattr__(self, "lambdas", [float(x) for x in lam])
        checked = check_values({k: getattr(self, k) for k in FE_RULES}, FE_RULES, optional=("platform",))
        for key, value in checked.items():
            object.__setattr__(self, key, value)

    @classmethod
    def from_dict(cls, d: Dict[str, Any], where: str = "free_energy") -> "FESettings":
        check_known(d, [f.name for f in fields(cls)], where)
        return cls(**d)

    @property
    def kT(self) -> float:
        return kt_kJmol(self.temperature_K)

    @property
    def n_batches(self) -> int:
        return -(-self.switches // self.switches_per_batch)

    def unit_settings(self, kind: str) -> Dict[str, Any]:
        """The settings that shape a unit of ``kind`` ('window' or 'switch'): the others (e.g. the number of switches
        for a window) may change without recomputing it."""
        keep = WINDOW_SETTINGS if kind == "window" else SWITCH_SETTINGS
        d = asdict(self)
        return {k: d[k] for k in keep}


#: the rule of each setting but ``lambdas`` (openmlip.settings)
FE_RULES: Dict[str, Rule] = {
    **{k: NON_NEGATIVE_INT for k in ("minimize_iterations", "equilibrate_steps", "switch_decorrelation_steps", "seed")},
    **{k: POSITIVE_INT for k in ("samples", "sample_interval", "checkpoint_samples", "switches", "switches_per_batch",
                                 "switch_stages", "switch_stage_steps", "bootstrap", "threads")},
    **{k: POSITIVE_NUMBER for k in ("temperature_K", "timestep_fs", "friction_per_ps", "equilibrate_friction_per_ps")},
    "platform": ("str", "CUDA, OpenCL, CPU or Reference (or null: the best one found)",
                 lambda v: v in ("CUDA", "OpenCL", "CPU", "Reference")),
}

WINDOW_SETTINGS = ("lambdas", "temperature_K", "timestep_fs", "friction_per_ps", "minimize_iterations", "equilibrate_steps",
                   "equilibrate_friction_per_ps", "samples", "sample_interval", "seed")
SWITCH_SETTINGS = ("temperature_K", "timestep_fs", "friction_per_ps", "minimize_iterations", "equilibrate_steps",
                   "equilibrate_friction_per_ps", "switches", "switches_per_batch", "switch_stages", "switch_stage_steps",
                   "switch_decorrelation_steps", "seed")


def window_file(out, k: int) -> Path:
    return Path(out) / "windows" / f"window-{k:03d}.npz"


def switch_file(out, direction: str, batch: int) -> Path:
    return Path(out) / "switches" / f"{direction}-{batch:03d}.npz"


def _partial(path: Path) -> Path:
    return path.with_name(path.stem + ".partial.npz")


def _has_lambda(force: openmm.Force) -> bool:
    n = getattr(force, "getNumGlobalParameters", None)
    if n is not None:
        return any(force.getGlobalParameterName(j) == LAMBDA for j in range(n()))
    # a plugin force (openmm-torch's TorchForce, with λ inside the graph for the electrostatic embedding) reaches
    # Python as a bare openmm.Force without the accessors: read its global parameters from its XML
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(openmm.XmlSerializer.serialize(force))
    except Exception:  # no serialisation proxy: it cannot carry a parameter we could set either
        return False
    return any(p.get("name") == LAMBDA for g in root.iter("GlobalParameters") for p in g)


def lambda_forces(system: openmm.System) -> List[int]:
    """Indices of the forces that have the global parameter ``lambda_interpolate`` (plugin forces included)."""
    return [i for i, f in enumerate(system.getForces()) if _has_lambda(f)]


class Engine:
    """Runs λ windows and switches of one System (see the module docstring).

    Parameters
    ----------
    system : openmm.System
        With a global parameter ``lambda_interpolate`` and E(λ) linear in λ.  Not modified (copied).
    positions : array [N, 3] float, nm (or an OpenMM Quantity)
    settings : FESettings
    box_vectors : three Vec3 (nm), optional
        Periodic box; default: the System's default box.
    meta : dict, optional
        Written into every unit file (e.g. which spec and leg).
    """

    def __init__(self, system: openmm.System, positions, settings: FESettings, box_vectors=None,
                 meta: Optional[Dict[str, Any]] = None, progress: bool = True):
        self.settings = settings
        self.system = copy.deepcopy(system)
        lam = lambda_forces(self.system)
        if not lam:
            raise ConfigError(f"the System has no force with the global parameter {LAMBDA!r}: build it with "
                              "createMixedSystem(..., interpolate=True)")
        used = {f.getForceGroup() for f in self.system.getForces()}
        free = [g for g in range(31, -1, -1) if g not in used]
        if not free:
            raise ConfigError("all 32 force groups are in use: the engine needs one for the λ-dependent forces")
        self.group = free[0]
        for i in lam:
            self.system.getForce(i).setForceGroup(self.group)
        if isinstance(positions, u.Quantity):
            positions = positions.value_in_unit(u.nanometer)
        self.positions = np.asarray(positions, dtype=float)
        if self.positions.shape != (self.system.getNumParticles(), 3):
            raise ConfigError(f"positions have shape {self.positions.shape}, the System has "
                              f"{self.system.getNumParticles()} particles")
        self.box = box_vectors
        self.meta = dict(meta or {})
        self.progress = progress
        self.lambdas = np.asarray(settings.lambdas)
        self.platform_name = None
        self._platform: Optional[Tuple[openmm.Platform, Dict[str, str]]] = None
        self.fingerprint = system_fingerprint(self.system)

    def store(self, out, kind: str) -> RunStore:
        """The store of the units of ``kind`` ('window' or 'switch') in the leg folder ``out``."""
        folder = Path(out) / ("windows" if kind == "window" else "switches")
        return RunStore(folder, f"free-energy {kind}", {**self.settings.unit_settings(kind), **self.fingerprint})

    # -- contexts -------------------------------------------------------------------------------
    def _context(self, lam: float, seed: int) -> openmm.Context:
        s = self.settings
        integ = openmm.LangevinMiddleIntegrator(s.temperature_K * u.kelvin, s.friction_per_ps / u.picosecond,
                                                s.timestep_fs * u.femtosecond)
        integ.setRandomNumberSeed(openmm_seed(seed))
        torch.set_num_threads(s.threads)
        if self._platform is None:
            self._platform = choose_platform(s.platform, s.threads)[:2]
        plat, props = self._platform
        ctx = openmm.Context(self.system, integ, plat, props)
        self.platform_name = plat.getName()
        if self.box is not None:
            ctx.setPeriodicBoxVectors(*self.box)
        ctx.setPositions(self.positions)
        ctx.setParameter(LAMBDA, float(lam))
        return ctx

    def _step(self, integ: openmm.Integrator, n: int, where: str) -> None:
        """``n`` steps; a NaN (OpenMM's check, or an openmlip check in the graph) is a :class:`BlowUpError` naming
        the unit and the usual fix."""
        try:
            integ.step(n)
        except openmm.OpenMMException as exc:
            typed = from_graph(exc)
            raise self._blow_up(where, f"{type(typed).__name__}: {typed}" if typed is not None
                                else "OpenMM: " + str(exc).splitlines()[0]) from None

    def _blow_up(self, where: str, why: str) -> BlowUpError:
        return BlowUpError(f"{where} blew up ({why}): timestep_fs {self.settings.timestep_fs:g} is likely too long "
                           "(openmlip's specs use 0.5-1 fs with flexible ML hydrogens) or the structure has a clash. "
                           "Finished units are kept; lower timestep_fs in the spec's free_energy settings and rerun "
                           "into a new --out (units made with other settings are refused)")

    def _finite(self, values, where: str):
        """``values`` when all are finite, else the :class:`BlowUpError` of :meth:`_step` (a NaN energy: a check of a
        capturable force failed inside a CUDA graph, or the dynamics diverged)."""
        if not np.all(np.isfinite(values)):
            raise self._blow_up(where, f"non-finite energy {values}")
        return values

    def _prepare(self, ctx: openmm.Context, seed: int) -> None:
        s = self.settings
        if s.minimize_iterations:
            openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, s.minimize_iterations)
        ctx.setVelocitiesToTemperature(s.temperature_K * u.kelvin, openmm_seed(seed))
        if s.equilibrate_steps:  # a strong coupling first (see MDRunner), then the sampling friction
            integ = ctx.getIntegrator()
            integ.setFriction(s.equilibrate_friction_per_ps / u.picosecond)
            self._step(integ, s.equilibrate_steps, "the equilibration")
            integ.setFriction(s.friction_per_ps / u.picosecond)

    def _lambda_energy(self, ctx: openmm.Context, lam: float) -> float:
        """Energy (kJ/mol) of the λ-dependent forces at ``lam``; leaves λ at ``lam``."""
        ctx.setParameter(LAMBDA, float(lam))
        return ctx.getState(getEnergy=True, groups={self.group}).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)

    def endpoint_energies(self, ctx: openmm.Context, lam_now: float) -> Tuple[float, float]:
        """(E_0, E_1) of the λ-dependent forces in kJ/mol at the current configuration; λ restored."""
        e0 = self._lambda_energy(ctx, 0.0)
        e1 = self._lambda_energy(ctx, 1.0)
        ctx.setParameter(LAMBDA, float(lam_now))
        return e0, e1

    def check_linear(self, ctx: openmm.Context, lam_now: float, rel: float = 1e-5) -> None:
        """Raise :class:`ConfigError` unless E(λ) is linear and the forces found to carry λ are all that
        change with it (the whole System's E(1) − E(0) equals theirs)."""
        e0, e1 = self.endpoint_energies(ctx, lam_now)
        full = []
        for lam in (0.0, 1.0):
            ctx.setParameter(LAMBDA, lam)
            full.append(ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole))
        ctx.setParameter(LAMBDA, float(lam_now))
        if abs((full[1] - full[0]) - (e1 - e0)) > rel * max(1.0, abs(full[0]), abs(full[1])):
            raise ConfigError(f"the System's energy changes with {LAMBDA} by {full[1] - full[0]:.6f} kJ/mol but the "
                              f"forces found to carry it change by {e1 - e0:.6f}: a force with the parameter was not "
                              "found (report this with the System's force list)")
        for lam in (0.5, 0.25):
            e = self._lambda_energy(ctx, lam)
            lin = (1 - lam) * e0 + lam * e1
            if abs(e - lin) > rel * max(1.0, abs(e0), abs(e1)):
                raise ConfigError(f"E(λ) is not linear in {LAMBDA}: E({lam}) = {e:.6f} kJ/mol but (1-λ)E0 + λE1 = "
                                  f"{lin:.6f}; the engine assumes linear interpolation")
        ctx.setParameter(LAMBDA, float(lam_now))

    @staticmethod
    def _state_arrays(ctx: openmm.Context) -> Dict[str, np.ndarray]:
        st = ctx.getState(getPositions=True, getVelocities=True)
        return {"positions": st.getPositions(asNumpy=True).value_in_unit(u.nanometer),
                "velocities": st.getVelocities(asNumpy=True).value_in_unit(u.nanometer / u.picosecond),
                "box": np.array(st.getPeriodicBoxVectors().value_in_unit(u.nanometer))}

    def _restore(self, ctx: openmm.Context, arrays: Dict[str, np.ndarray]) -> None:
        if self.system.usesPeriodicBoundaryConditions():
            ctx.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in arrays["box"]])
        ctx.setPositions(arrays["positions"])
        ctx.setVelocities(arrays["velocities"])

    def _meta(self, kind: str, **extra) -> Dict[str, Any]:
        return {**self.meta, "kind": kind, "platform": self.platform_name, "kT_kJmol": self.settings.kT, **extra}

    def _bar(self, total: int, desc: str):
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="sample" if "window" in desc else "switch", leave=False)

    # -- λ windows ------------------------------------------------------------------------------
    def run_window(self, k: int, out) -> Path:
        """Run (or finish, or skip when done) λ window ``k``; returns its file."""
        if not 0 <= k < len(self.lambdas):
            raise ConfigError(f"window {k} does not exist: the schedule has {len(self.lambdas)} λ values (0..{len(self.lambdas) - 1})")
        store = self.store(out, "window")
        name = window_file(out, k).name
        with store.lock(Path(name).stem):
            self._window(store, name, k)
        return store.path(name)

    def _window(self, store: RunStore, name: str, k: int) -> None:
        s = self.settings
        if store.load_npz(name) is not None:  # done (with these settings: else ResumeError)
            return
        lam = float(self.lambdas[k])
        part = _partial(Path(name)).name
        t0 = time.perf_counter()
        e_end = np.zeros((0, 2))
        wall_before = 0.0
        d = store.load_npz(part)
        if d is not None:
            e_end = d["e_end"]
            wall_before = float(d["meta"].get("wall_s", 0.0))
            ctx = self._context(lam, s.seed + 7919 * k + len(e_end) + 1)
            self._restore(ctx, d)
        else:
            ctx = self._context(lam, s.seed + 7919 * k)
            self._prepare(ctx, s.seed + 7919 * k)
            self.check_linear(ctx, lam)
        bar = self._bar(s.samples, f"window {k} (λ={lam:g})")
        if bar is not None:
            bar.update(len(e_end))
        integ = ctx.getIntegrator()
        rows = list(e_end)
        t_md = 0.0
        while len(rows) < s.samples:
            t1 = time.perf_counter()
            where = f"λ window {k} (λ={lam:g}), sample {len(rows) + 1}"
            self._step(integ, s.sample_interval, where)
            t_md += time.perf_counter() - t1
            rows.append(self._finite(self.endpoint_energies(ctx, lam), where))
            if bar is not None:
                bar.update(1)
            if len(rows) % s.checkpoint_samples == 0 and len(rows) < s.samples:
                store.save_npz(part, self._meta("window", wall_s=wall_before + time.perf_counter() - t0),
                               e_end=np.array(rows), **self._state_arrays(ctx))
        if bar is not None:
            bar.close()
        e = np.array(rows)  # [n, 2] kJ/mol
        u_kn = ((1 - self.lambdas)[:, None] * e[None, :, 0] + self.lambdas[:, None] * e[None, :, 1]) / s.kT
        n_new = s.samples - len(e_end)
        store.save_npz(name, self._meta("window", window=k, lambda_value=lam, wall_s=wall_before + time.perf_counter() - t0,
                                        ms_per_step=1000 * t_md / max(1, n_new * s.sample_interval)),
                       u_kn=u_kn, e_end=e, lambdas=self.lambdas, **self._state_arrays(ctx))
        store.path(part).unlink(missing_ok=True)

    # -- switches -------------------------------------------------------------------------------
    def run_switch_batch(self, direction: str, batch: int, out) -> Path:
        """Run (or finish, or skip when done) one batch of switches; returns its file."""
        s = self.settings
        if direction not in DIRECTIONS:
            raise ConfigError(f"switch direction must be one of {DIRECTIONS}, got {direction!r}")
        if not 0 <= batch < s.n_batches:
            raise ConfigError(f"switch batch {batch} does not exist: {s.switches} switches in batches of "
                              f"{s.switches_per_batch} make {s.n_batches} (0..{s.n_batches - 1})")
        store = self.store(out, "switch")
        name = switch_file(out, direction, batch).name
        with store.lock(Path(name).stem):
            self._switch_batch(store, name, direction, batch)
        return store.path(name)

    def _switch_batch(self, store: RunStore, name: str, direction: str, batch: int) -> None:
        s = self.settings
        if store.load_npz(name) is not None:  # done (with these settings: else ResumeError)
            return
        n = min(s.switches_per_batch, s.switches - batch * s.switches_per_batch)
        start, end = (0.0, 1.0) if direction == "forward" else (1.0, 0.0)
        base_seed = s.seed + 104729 * (batch + 1) + (0 if direction == "forward" else 52361)
        part = _partial(Path(name)).name
        t0 = time.perf_counter()
        works: List[float] = []
        wall_before = 0.0
        d = store.load_npz(part)
        if d is not None:
            works = list(d["works"])
            wall_before = float(d["meta"].get("wall_s", 0.0))
            ctx = self._context(start, base_seed + len(works) + 1)
            self._restore(ctx, d)
        else:
            ctx = self._context(start, base_seed)
            self._prepare(ctx, base_seed)
            self.check_linear(ctx, start)
        integ = ctx.getIntegrator()
        lams = np.linspace(start, end, s.switch_stages + 1)
        bar = self._bar(n, f"{direction} switches, batch {batch}")
        if bar is not None:
            bar.update(len(works))
        while len(works) < n:
            where = f"{direction} switch {len(works) + 1} of batch {batch}"
            self._step(integ, s.switch_decorrelation_steps, where)
            eq = self._state_arrays(ctx)
            w = 0.0
            e_prev = self._lambda_energy(ctx, lams[0])
            for i in range(1, len(lams)):
                e_new = self._lambda_energy(ctx, lams[i])
                w += e_new - e_prev
                if i < len(lams) - 1:
                    self._step(integ, s.switch_stage_steps, where)
                    e_prev = self._lambda_energy(ctx, lams[i])
            works.append(float(self._finite(w / s.kT, where)))
            self._restore(ctx, eq)  # back to the equilibrium chain at the start state
            ctx.setParameter(LAMBDA, start)
            if bar is not None:
                bar.update(1)
            if len(works) < n:
                store.save_npz(part, self._meta("switch", wall_s=wall_before + time.perf_counter() - t0),
                               works=np.array(works), **eq)
        if bar is not None:
            bar.close()
        store.save_npz(name, self._meta("switch", direction=direction, batch=batch,
                                        wall_s=wall_before + time.perf_counter() - t0,
                                        switch_steps=s.switch_stages * s.switch_stage_steps), works=np.array(works))
        store.path(part).unlink(missing_ok=True)

    # -- everything, one after another (tests, small systems) -----------------------------------
    def run_all(self, out, windows: bool = True, switches: bool = True) -> None:
        if windows:
            for k in range(len(self.lambdas)):
                self.run_window(k, out)
        if switches:
            for direction in DIRECTIONS:
                for b in range(self.settings.n_batches):
                    self.run_switch_batch(direction, b, out)


def units(out) -> Dict[str, List[Path]]:
    """The unit files present in ``out``."""
    out = Path(out)
    return {"windows": sorted((out / "windows").glob("window-[0-9][0-9][0-9].npz")),
            "forward": sorted((out / "switches").glob("forward-[0-9][0-9][0-9].npz")),
            "reverse": sorted((out / "switches").glob("reverse-[0-9][0-9][0-9].npz"))}


def steps_summary(settings: FESettings) -> Dict[str, int]:
    s = settings
    per_window = s.equilibrate_steps + s.samples * s.sample_interval
    per_batch = s.equilibrate_steps + s.switches_per_batch * (s.switch_decorrelation_steps
                                                              + s.switch_stages * s.switch_stage_steps)
    return {"per_window": per_window, "windows": per_window * len(s.lambdas),
            "per_switch_batch": per_batch, "switches": 2 * per_batch * s.n_batches}


__all__ = ["Engine", "FESettings", "LAMBDA", "DIRECTIONS", "kt_kJmol", "window_file", "switch_file",
           "lambda_forces", "units", "steps_summary"]
