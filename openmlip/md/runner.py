"""Run MD of an OpenMM System with resumable, never-corrupt outputs.

Outputs in ``out_dir``: ``trajectory.h5`` (mdtraj HDF5; one frame every ``report_interval`` steps),
``state.csv`` (step, time, energies, temperature), ``checkpoint.chk`` + ``checkpoint.json`` (OpenMM
checkpoint and the step it belongs to; written atomically every ``checkpoint_interval`` steps).

No HDF5 file is ever modified in place, so no kill (even SIGKILL mid-write) can corrupt a trajectory:
frames are kept in memory between checkpoints (at most ``FRAME_BUFFER_BYTES``) and written, just before each checkpoint, as one
segment file (``trajectory.segments/<last step>.h5``, written to a temporary name and renamed).  When
the run ends, stops with an error, Ctrl-C or SIGTERM, the segments are appended to a copy of
``trajectory.h5`` that then replaces it.  After a SIGKILL the segments stay on disk and the next run
of the same command adds them.

Rerunning after a kill loads the checkpoint, drops trajectory frames and CSV rows written after it, and
continues: frames stay continuous and unique.  ``checkpoint.json`` records the settings that define the
Hamiltonian and the ensemble (timestep, temperature, friction, pressure, frame spacing, a digest of
every force, the masses and the constraints, and whatever the caller adds); a rerun with other settings
raises :class:`ResumeError` instead of continuing with a new Hamiltonian.  It also records the digest of
``checkpoint.chk``, so a truncated or corrupt checkpoint raises :class:`DataFileError`.

A NaN, an energy jump larger than ``max_energy_jump`` between reports, or an atom with a kinetic energy
above ``MAX_ATOM_KINETIC_KT`` kT (atoms flying apart while the energy stays flat) raises
:class:`BlowUpError`; the bad frame is not written, so the trajectory ends at the last good frame and
the last checkpoint is kept.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import math
import shutil
import signal
import threading
import time
import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

import openmm
import openmm.unit as u

from .. import units
from .._io import atomic_path, writable_dir
from ..errors import BlowUpError, ConfigError, DataFileError, Interrupted, ResumeError, from_graph
from ..openmm.fingerprint import system_fingerprint
from ..openmm.forces import diagnose, uses_cuda_graphs
from ..openmm.platform import choose_platform, openmm_seed
from ..store import RunStore
from ..settings import check_values
from .spec import MD_RULES

MD_CHECKPOINT = "openmlip-md-checkpoint"
CSV_FIELDS = ["step", "time_ps", "potential_kJmol", "kinetic_kJmol", "total_kJmol", "temperature_K"]
#: frames held in memory between checkpoints are written as a segment once they exceed this size
FRAME_BUFFER_BYTES = 64 * 2**20
#: molar gas constant R in kJ/(mol K)
#: an atom whose kinetic energy exceeds this many kT means the run blew up (a hydrogen at ~70 nm/ps at 300 K; a
#: real blow-up reaches 1e7 kT within a few steps).  Not 100 kT: a rough but stable model (the workflow's smoke
#: training) gives single hydrogens 100-120 kT in collisions while the energy stays put
MAX_ATOM_KINETIC_KT = 1000.0


class MDRunner:
    """Langevin MD (optionally NPT with a Monte Carlo barostat) with resumable outputs."""

    def __init__(self, system: openmm.System, topology, positions, out_dir, temperature: float = 300.0,
                 friction_per_ps: float = 1.0, timestep_fs: float = 0.5, pressure_bar: Optional[float] = None,
                 report_interval: int = 100, checkpoint_interval: int = 1000, platform: Optional[str] = None,
                 threads: int = 1, seed: int = 0, max_energy_jump: float = 1e4, box_vectors=None,
                 minimize_iterations: int = 500, settings: Optional[Dict[str, Any]] = None,
                 equilibrate_steps: int = 0, equilibrate_friction_per_ps: Optional[float] = None):
        """The first ``equilibrate_steps`` steps run with friction ``equilibrate_friction_per_ps`` (default: the
        production ``friction_per_ps``), the rest with ``friction_per_ps``: a strong coupling brings a minimised
        structure to the thermostat's temperature in a fraction of a picosecond, a weak one then disturbs the
        dynamics little (the kinetic energy relaxes at rate 2γ: γ = 1/ps leaves a minimised, half-cold system
        ~15% below its target after 0.5 ps).

        ``settings``: named settings that define the Hamiltonian or ensemble beyond what the System
        shows (e.g. the potential's name and model-file digest, the ML selection); like the runner's
        own (timestep, temperature, friction, pressure, report interval, forces, masses, constraints)
        they are stored with the checkpoint and a resume with other values raises :class:`ResumeError`.
        """
        check_values({"temperature_K": temperature, "friction_per_ps": friction_per_ps, "timestep_fs": timestep_fs,
                      "pressure_bar": pressure_bar, "report_interval": report_interval,
                      "checkpoint_interval": checkpoint_interval, "seed": seed, "max_energy_jump_kJmol": max_energy_jump,
                      "minimize_iterations": minimize_iterations, "equilibrate_steps": equilibrate_steps,
                      "equilibrate_friction_per_ps": equilibrate_friction_per_ps}, MD_RULES, "MDRunner",
                     optional=("pressure_bar", "equilibrate_friction_per_ps"))
        self.friction_per_ps = float(friction_per_ps)
        self.equilibrate_steps = int(equilibrate_steps)
        self.equilibrate_friction_per_ps = float(friction_per_ps if equilibrate_friction_per_ps is None
                                                 else equilibrate_friction_per_ps)
        # how the run was equilibrated is part of its history: a resume with another equilibration is refused
        phases = ({"equilibrate_steps": self.equilibrate_steps, "equilibrate_friction_per_ps": self.equilibrate_friction_per_ps}
                  if self.equilibrate_steps else {})
        if checkpoint_interval % report_interval:
            raise ConfigError(f"checkpoint_interval ({checkpoint_interval}) must be a multiple of report_interval "
                              f"({report_interval})")
        self.out = writable_dir(out_dir, "MD output")
        self.topology = topology
        self.positions = positions
        self.temperature = temperature
        self.report_interval = int(report_interval)
        self.checkpoint_interval = int(checkpoint_interval)
        self.max_energy_jump = float(max_energy_jump)
        self.seed = seed
        self.minimize_iterations = int(minimize_iterations)
        self.timestep_fs = timestep_fs
        forces = system_fingerprint(system)
        self.store = RunStore(self.out, "MD", {
            "timestep_fs": timestep_fs, "temperature_K": temperature, "friction_per_ps": friction_per_ps,
            "pressure_bar": pressure_bar, "report_interval": self.report_interval, **phases, **forces,
            **(settings or {})}, hints={k: "the ML potential: model, ML atoms, charge or precision"
                                        for k, v in forces.items() if v.startswith("TorchForce")})
        self.settings: Dict[str, Any] = self.store.settings
        self._last_checkpoint: Optional[Dict[str, Any]] = None
        self._masses = np.array([system.getParticleMass(i).value_in_unit(u.dalton) for i in range(system.getNumParticles())])
        if pressure_bar is not None:
            system = copy.deepcopy(system)  # the caller's System stays as it was given
            system.addForce(openmm.MonteCarloBarostat(pressure_bar * u.bar, temperature * u.kelvin))
        self.platform, props, self.platform_reasons = choose_platform(platform, threads)
        self.platform_properties = dict(props)
        # openmm-torch honours useCUDAGraphs on the CUDA platform only; elsewhere the capturable module runs as is
        self.cuda_graphs = self.platform.getName() == "CUDA" and uses_cuda_graphs(system)
        integrator = openmm.LangevinMiddleIntegrator(temperature * u.kelvin, friction_per_ps / u.picosecond,
                                                      timestep_fs * u.femtosecond)
        integrator.setRandomNumberSeed(openmm_seed(seed))
        self.context = openmm.Context(system, integrator, self.platform, props)
        self.integrator = integrator
        self.box_vectors = box_vectors
        self.traj_path = self.out / "trajectory.h5"
        self.csv_path = self.out / "state.csv"
        self.chk_path = self.out / "checkpoint.chk"
        self.chk_meta = self.out / "checkpoint.json"
        self.seg_dir = self.out / "trajectory.segments"
        self._frames: List[Tuple[int, np.ndarray, float, Optional[np.ndarray], Optional[np.ndarray]]] = []
        self._mdtraj_top = None
        self.n_dof = 3 * system.getNumParticles() - system.getNumConstraints() - (
            3 if any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces()) else 0)

    # -------------------------------------------------------------------------------- outputs
    def _truncate_outputs(self, step: int) -> None:
        """Drop trajectory frames and CSV rows written after ``step`` (they will be recomputed).

        Frames are matched by their time, not counted, so no frame at or before ``step`` is ever dropped.
        """
        if self.seg_dir.exists():
            for seg in self.seg_dir.glob("*.h5"):
                if int(seg.stem) > step:
                    seg.unlink()  # written before a checkpoint that never came
        if self.traj_path.exists():
            import tables

            try:
                with tables.open_file(str(self.traj_path), "r") as fh:
                    times = np.asarray(fh.root.time[:], dtype=float) if "time" in fh.root else np.zeros(0)
            except (tables.exceptions.HDF5ExtError, OSError) as exc:
                raise DataFileError(
                    f"{self.traj_path} ({self.traj_path.stat().st_size} bytes) cannot be read ({type(exc).__name__}): it "
                    f"was truncated or damaged outside openmlip (openmlip replaces it whole), so the frames before the "
                    f"checkpoint (step {step}) are lost: put back an intact copy, or delete {self.chk_meta.name} and "
                    f"{self.chk_path.name} to restart the run from step 0") from None
            keep = int(np.sum(times <= (step + 0.5 * self.report_interval) * self.timestep_fs * units.FS_TO_PS))
            if keep < len(times):  # frames past the checkpoint (kept after a blow-up): rewrite a copy, then swap
                with atomic_path(self.traj_path) as tmp:
                    shutil.copyfile(self.traj_path, tmp)
                    with tables.open_file(tmp, "a") as fh:
                        for name in ("coordinates", "time", "cell_lengths", "cell_angles"):
                            if name in fh.root:
                                node = fh.get_node("/", name)
                                if node.nrows > keep:
                                    node.truncate(keep)
        if self.csv_path.exists():
            rows: List[Dict[str, object]] = []
            with open(self.csv_path) as fh:
                for r in csv.DictReader(fh):
                    if None in r or any(r.get(k) in (None, "") for k in CSV_FIELDS):
                        continue  # a row cut short by a kill
                    if int(r["step"]) <= step and (not rows or int(r["step"]) > int(rows[-1]["step"])):
                        rows.append(r)
            self._write_csv(rows)

    def _write_csv(self, rows: List[Dict[str, object]]) -> None:
        with atomic_path(self.csv_path) as tmp:
            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
                w.writeheader()
                w.writerows(rows)

    def _append(self, step: int, state) -> None:
        """Buffer the frame (written by :meth:`_flush_frames`) and append the CSV row."""
        from mdtraj.utils import box_vectors_to_lengths_and_angles

        pos = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)[None].astype(np.float32)
        kwargs = {}
        if self.context.getSystem().usesPeriodicBoundaryConditions():
            a, b, c = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer)
            la, lb, lc, al, be, ga = box_vectors_to_lengths_and_angles(a, b, c)
            kwargs = dict(cell_lengths=np.array([[la, lb, lc]], dtype=np.float32), cell_angles=np.array([[al, be, ga]], dtype=np.float32))
        self._frames.append((step, pos, step * self.timestep_fs * units.FS_TO_PS, kwargs.get("cell_lengths"), kwargs.get("cell_angles")))
        if len(self._frames) * pos.nbytes > FRAME_BUFFER_BYTES:
            self._flush_frames()  # long checkpoint intervals: bound the memory (segments past a checkpoint are dropped on resume)
        pe = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        ke = state.getKineticEnergy().value_in_unit(u.kilojoule_per_mole)
        temp = 2 * ke / (self.n_dof * units.GAS_CONSTANT_KJ_PER_MOL_K) if self.n_dof > 0 else 0.0
        with open(self.csv_path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=CSV_FIELDS).writerow(dict(
                step=step, time_ps=step * self.timestep_fs * units.FS_TO_PS, potential_kJmol=pe, kinetic_kJmol=ke,
                total_kJmol=pe + ke, temperature_K=temp))

    def _flush_frames(self) -> None:
        """Write the buffered frames as one new segment file (atomically), named by its last step."""
        if not self._frames:
            return
        from mdtraj.formats import HDF5TrajectoryFile

        self.seg_dir.mkdir(exist_ok=True)
        with atomic_path(self.seg_dir / f"{self._frames[-1][0]:012d}.h5") as tmp, _tmp_h5_names_are_fine():
            with HDF5TrajectoryFile(tmp, "w") as fh:
                fh.topology = self._mdtraj_topology()
                cells = self._frames[0][3] is not None
                fh.write(coordinates=np.concatenate([f[1] for f in self._frames]),
                         time=np.array([f[2] for f in self._frames], dtype=np.float32),
                         cell_lengths=np.concatenate([f[3] for f in self._frames]) if cells else None,
                         cell_angles=np.concatenate([f[4] for f in self._frames]) if cells else None)
        self._frames = []

    def _mdtraj_topology(self):
        if self._mdtraj_top is None:  # built once per runner, not once per segment
            import mdtraj

            self._mdtraj_top = mdtraj.Topology.from_openmm(self.topology)
        return self._mdtraj_top

    def _consolidate(self) -> None:
        """Append the segment files to a copy of ``trajectory.h5`` and swap it in; then drop them.

        Idempotent: segments whose frames the trajectory already holds (a kill between the swap and
        the clean-up) are not added twice.
        """
        if not self.seg_dir.exists():
            return
        from mdtraj.formats import HDF5TrajectoryFile

        segments = sorted(self.seg_dir.glob("*.h5"), key=lambda p: int(p.stem))
        last = -1.0
        if self.traj_path.exists():
            import tables

            with tables.open_file(str(self.traj_path), "r") as fh:
                if "time" in fh.root and fh.root.time.nrows:
                    last = float(fh.root.time[-1]) / (self.timestep_fs * units.FS_TO_PS)
        new = [p for p in segments if int(p.stem) > last + 0.5 * self.report_interval]
        if new:
            with atomic_path(self.traj_path) as tmp, _tmp_h5_names_are_fine():
                exists = self.traj_path.exists()
                if exists:
                    shutil.copyfile(self.traj_path, tmp)
                with HDF5TrajectoryFile(tmp, "a" if exists else "w") as out:
                    if not exists:
                        out.topology = self._mdtraj_topology()
                    for seg in new:
                        with HDF5TrajectoryFile(str(seg), "r") as fh:
                            fr = fh.read()
                        out.write(coordinates=fr.coordinates, time=fr.time, cell_lengths=fr.cell_lengths,
                                  cell_angles=fr.cell_angles)
        for seg in segments:
            seg.unlink()
        shutil.rmtree(self.seg_dir, ignore_errors=True)

    def _checkpoint(self, step: int) -> None:
        """Write ``checkpoint.json`` (step, digest of the new checkpoint and of the one it replaces, settings),
        then ``checkpoint.chk``: a kill between the two leaves the previous checkpoint, which still matches."""
        self._flush_frames()  # frames first: a checkpoint never refers to frames that are not on disk
        data = self.context.createCheckpoint()
        digest = hashlib.sha256(data).hexdigest()
        self.store.save_json(self.chk_meta.name, MD_CHECKPOINT, {
            "step": step, "timestep_fs": self.timestep_fs, "sha256": digest, "bytes": len(data),
            "platform": self.platform.getName(), "previous": self._last_checkpoint})
        self.store.save_bytes(self.chk_path.name, data)
        self._last_checkpoint = {"step": step, "sha256": digest}

    def _resume_point(self) -> Tuple[int, bytes]:
        """The checkpoint to resume from: (step, bytes), after checking its settings and its digest."""
        fix = (f"delete {self.chk_meta.name} and {self.chk_path.name} to restart this run from step 0 (its frames are then "
               "rewritten), or use a new output folder")
        meta = self.store.load_json(self.chk_meta.name, MD_CHECKPOINT, fix)  # other settings: ResumeError naming them
        try:
            step = int(meta["step"])
        except (KeyError, TypeError, ValueError):
            raise DataFileError(f"{self.chk_meta} holds no step: {fix}") from None
        data = self.chk_path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        prev = meta.get("previous") or {}
        wrote = meta.get("platform")
        if wrote is not None and wrote != self.platform.getName():
            raise ResumeError(f"{self.chk_path} was written on OpenMM's {wrote} platform, and an OpenMM checkpoint loads "
                              f"only on the platform that wrote it (this run chose {self.platform.getName()}): rerun with "
                              f"--platform {wrote} (MDRunner(platform={wrote!r})), or use a new output folder")
        if digest == meta.get("sha256"):
            self._last_checkpoint = {"step": step, "sha256": digest}
            return step, data
        if digest == prev.get("sha256"):  # killed between writing checkpoint.json and checkpoint.chk
            self._last_checkpoint = {"step": int(prev["step"]), "sha256": digest}
            return int(prev["step"]), data
        raise DataFileError(f"{self.chk_path} is truncated or corrupt ({len(data)} bytes; {self.chk_meta.name} expects "
                            f"{meta.get('bytes')} bytes of step {step} with another sha256): delete "
                            f"{self.chk_path.name} and {self.chk_meta.name} to restart this run from step 0 (its frames "
                            "are then rewritten), or put back an intact copy of the file")

    def _hottest_atom(self, state) -> str:
        """'' or a description of the fastest atom when its kinetic energy exceeds ``MAX_ATOM_KINETIC_KT`` kT."""
        v = state.getVelocities(asNumpy=True).value_in_unit(u.nanometer / u.picosecond)
        ke = 0.5 * self._masses * np.sum(np.square(v), axis=1)  # Da nm²/ps² = kJ/mol
        i = int(np.argmax(ke))
        kt = units.GAS_CONSTANT_KJ_PER_MOL_K * self.temperature
        if np.isfinite(ke[i]) and ke[i] <= MAX_ATOM_KINETIC_KT * kt:
            return ""
        return (f"atom {i} moves at {np.linalg.norm(v[i]):.3g} nm/ps, a kinetic energy of {ke[i] / kt:.3g} kT "
                f"(limit {MAX_ATOM_KINETIC_KT:g} kT): atoms are flying apart")

    def _check_start(self) -> None:
        """Raise the typed openmlip error when a check fails on the starting structure (box too small, coincident
        atoms, neighbour-list overflow): raised in the graph, or, in CUDA graphs, the cause of a NaN energy."""
        try:
            state = self.context.getState(getEnergy=True, getPositions=True)
        except openmm.OpenMMException as exc:
            typed = from_graph(exc)
            if typed is None:
                raise
            raise typed from None
        found = self._nan_cause(state, state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole))
        if found is not None:
            raise found

    def _nan_cause(self, state, pe: float) -> Optional[Exception]:
        """Why a capturable openmlip force returned NaN (its checks cannot raise inside a CUDA graph), or None."""
        if math.isfinite(pe):
            return None
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer)
        return diagnose(self.context.getSystem(), state.getPositions(asNumpy=True).value_in_unit(u.nanometer), box)

    def _blow_up(self, step: int, pe: float, last: float, detail: str = "") -> BlowUpError:
        kept = self._last_checkpoint["step"] if self._last_checkpoint else 0
        return BlowUpError(
            f"simulation blew up at step {step} (potential energy {pe:.6g} kJ/mol, previous report {last:.6g}"
            + (f"; {detail}" if detail else "") + f"); the trajectory ends at the last good frame and "
            f"{self.chk_path.name} holds step {kept}: lower the timestep, minimise longer, or check the model"
        )

    # ------------------------------------------------------------------------------------ run
    def run(self, steps: int, minimize: bool = True, progress: bool = True) -> Dict[str, object]:
        """Run (or continue) to step ``steps``; holds the run's lock (a second process on ``out_dir`` is refused)."""
        with self.store.lock("md"):
            return self._run(steps, minimize, progress)

    def _run(self, steps: int, minimize: bool, progress: bool) -> Dict[str, object]:
        for stale in [*self.out.glob(f".{self.traj_path.name}.*.tmp"), *self.seg_dir.glob(".*.tmp")]:
            stale.unlink()  # temporary files of a write that a SIGKILL interrupted: never the real ones
        if self.chk_meta.exists() and self.chk_path.exists():
            step, data = self._resume_point()
            try:
                self.context.loadCheckpoint(data)
            except openmm.OpenMMException as exc:  # e.g. another CUDA device or precision than the one that wrote it
                raise ResumeError(f"OpenMM cannot load {self.chk_path} here ({str(exc).splitlines()[0]}): resume where "
                                  "it was written (same platform, device and precision), or use a new output folder") from None
            self._truncate_outputs(step)
            resumed = True
        else:
            for p in (self.traj_path, self.csv_path):
                if p.exists():
                    p.unlink()  # outputs without a checkpoint cannot be continued consistently
            shutil.rmtree(self.seg_dir, ignore_errors=True)
            if self.box_vectors is not None:
                self.context.setPeriodicBoxVectors(*self.box_vectors)
            self.context.setPositions(self.positions)
            self._check_start()
            if minimize:
                openmm.LocalEnergyMinimizer.minimize(self.context, 10.0, self.minimize_iterations)
            self.context.setVelocitiesToTemperature(self.temperature * u.kelvin, openmm_seed(self.seed))
            self._write_csv([])
            step = 0
            self._checkpoint(0)
            resumed = False
        last = self.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        t0, start = time.perf_counter(), step
        previous_term = None
        if threading.current_thread() is threading.main_thread():  # a batch system's time limit sends SIGTERM
            previous_term = signal.signal(signal.SIGTERM, _raise_system_exit)
        finished = False
        try:
            try:
                step = self._loop(step, steps, last, t0, start, progress)
            except KeyboardInterrupt:
                kept = self._last_checkpoint["step"] if self._last_checkpoint else 0
                raise Interrupted(f"MD interrupted; {self.traj_path.name} and {self.csv_path.name} keep every frame written, "
                                  f"and {self.chk_path.name} holds step {kept}: rerun the same command to continue from "
                                  "there") from None
            if step != start and step % self.checkpoint_interval:  # else the loop wrote it, or nothing ran
                self._checkpoint(step)
            finished = True
        finally:
            if previous_term is not None:
                signal.signal(signal.SIGTERM, previous_term)
            try:  # whatever happened (blow-up, Ctrl-C, SIGTERM), every good frame so far ends up in trajectory.h5
                self._flush_frames()
                self._consolidate()
            except Exception as exc:
                if finished:
                    raise
                warnings.warn(f"could not merge the trajectory segments after the run failed ({exc}); they stay in "
                              f"{self.seg_dir} and the next run of the same command merges them", RuntimeWarning)
        elapsed = time.perf_counter() - t0
        return {"steps": step, "steps_run": step - start, "resumed": resumed, "platform": self.platform.getName(),
                "platform_reasons": self.platform_reasons,
                "platform_properties": self.platform_properties, "cuda_graphs": self.cuda_graphs,
                "ms_per_step": 1000 * elapsed / max(step - start, 1), "trajectory": str(self.traj_path), "state": str(self.csv_path)}

    def _set_friction(self, step: int) -> None:
        """The friction of the phase that ``step`` (the next step's start) is in; set from the step number, so a resume
        continues with the right one."""
        gamma = self.equilibrate_friction_per_ps if step < self.equilibrate_steps else self.friction_per_ps
        if self.integrator.getFriction().value_in_unit(u.picosecond ** -1) != gamma:
            self.integrator.setFriction(gamma / u.picosecond)

    def _loop(self, step: int, steps: int, last: float, t0: float, start: int, progress: bool) -> int:
        from tqdm.auto import tqdm

        with tqdm(total=steps, initial=step, desc="MD", unit="step", disable=not progress) as bar:
            while step < steps:
                n = min(self.report_interval - step % self.report_interval, steps - step)
                if step < self.equilibrate_steps:
                    n = min(n, self.equilibrate_steps - step)
                self._set_friction(step)
                try:
                    self.integrator.step(n)
                except openmm.OpenMMException as exc:  # OpenMM's own NaN check, or an openmlip check in the graph
                    typed = from_graph(exc)
                    why = f"{type(typed).__name__}: {typed}" if typed is not None else "OpenMM: " + str(exc).splitlines()[0]
                    raise self._blow_up(step + n, float("nan"), last, why) from None
                step += n
                bar.update(n)
                if step % self.report_interval and step != steps:
                    continue
                # wrap only periodic systems: OpenMM would wrap atoms of an open system into its default box
                state = self.context.getState(getPositions=True, getVelocities=True, getEnergy=True,
                                              enforcePeriodicBox=self.context.getSystem().usesPeriodicBoundaryConditions())
                pe = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
                pos = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
                if not (math.isfinite(pe) and np.all(np.isfinite(pos))) or abs(pe - last) > self.max_energy_jump:
                    found = self._nan_cause(state, pe)
                    raise self._blow_up(step, pe, last, "" if found is None else
                                        f"openmlip check: {type(found).__name__}: {found}")
                hot = self._hottest_atom(state)
                if hot:
                    raise self._blow_up(step, pe, last, hot)
                last = pe
                self._append(step, state)
                if step % self.checkpoint_interval == 0:
                    self._checkpoint(step)
                elapsed = time.perf_counter() - t0
                if elapsed > 0:
                    ns_day = units.ns_per_day(self.timestep_fs, elapsed / (step - start))
                    bar.set_postfix(ns_per_day=f"{ns_day:.2f}")
        return step


@contextlib.contextmanager
def _tmp_h5_names_are_fine():
    """mdtraj warns that a file not ending in .h5 should (once per segment, i.e. dozens of times per run): ours are
    the ``.tmp`` names of atomic writes, renamed to ``.h5`` when complete."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The .h5 extension is recommended", category=UserWarning)
        yield


def _raise_system_exit(signum, frame):
    raise SystemExit(128 + signum)
