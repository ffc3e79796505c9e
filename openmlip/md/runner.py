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
continues: frames stay continuous and unique.  A NaN or an energy jump larger than
``max_energy_jump`` between reports raises :class:`BlowUpError`; the bad frame is not written, so the
trajectory ends at the last good frame and the last checkpoint is kept.
"""
from __future__ import annotations

import csv
import json
import math
import shutil
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

import openmm
import openmm.unit as u

from .._io import atomic_path
from ..errors import OpenMLIPError

PLATFORM_ORDER = ("CUDA", "OpenCL", "CPU", "Reference")
CSV_FIELDS = ["step", "time_ps", "potential_kJmol", "kinetic_kJmol", "total_kJmol", "temperature_K"]
#: frames held in memory between checkpoints are written as a segment once they exceed this size
FRAME_BUFFER_BYTES = 64 * 2**20


class BlowUpError(OpenMLIPError, RuntimeError):
    """The simulation produced NaN or an implausible energy jump."""


def choose_platform(forced: Optional[str] = None, threads: int = 1) -> Tuple[openmm.Platform, Dict[str, str], List[str]]:
    """CUDA (mixed precision) → OpenCL → CPU → Reference, skipping platforms where a TorchForce does not run.

    Returns (platform, properties, reasons): one line per platform considered.
    """
    from ..doctor import _torchforce_works

    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    reasons: List[str] = []
    order = (forced,) if forced else PLATFORM_ORDER
    if forced and forced not in names:
        raise ValueError(f"platform {forced!r} is not available; available: {', '.join(names)}")
    for name in order:
        if name not in names:
            reasons.append(f"{name}: not installed or no device")
            continue
        err = _torchforce_works(name)
        if err is not None:
            reasons.append(f"{name}: present but openmm-torch does not run on it ({err})")
            if forced:
                raise ValueError(f"platform {forced!r} cannot run openmlip's TorchForce: {err}")
            continue
        props = {"Precision": "mixed"} if name in ("CUDA", "OpenCL") else ({"Threads": str(threads)} if name == "CPU" else {})
        reasons.append(f"{name}: chosen" + (" (forced)" if forced else ""))
        return openmm.Platform.getPlatformByName(name), props, reasons
    raise RuntimeError("no OpenMM platform can run openmlip: " + "; ".join(reasons))


class MDRunner:
    """Langevin MD (optionally NPT with a Monte Carlo barostat) with resumable outputs."""

    def __init__(self, system: openmm.System, topology, positions, out_dir, temperature: float = 300.0,
                 friction_per_ps: float = 1.0, timestep_fs: float = 0.5, pressure_bar: Optional[float] = None,
                 report_interval: int = 100, checkpoint_interval: int = 1000, platform: Optional[str] = None,
                 threads: int = 1, seed: int = 0, max_energy_jump: float = 1e4, box_vectors=None,
                 minimize_iterations: int = 500):
        if checkpoint_interval % report_interval:
            raise ValueError("checkpoint_interval must be a multiple of report_interval")
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.topology = topology
        self.positions = positions
        self.temperature = temperature
        self.report_interval = int(report_interval)
        self.checkpoint_interval = int(checkpoint_interval)
        self.max_energy_jump = float(max_energy_jump)
        self.seed = seed
        self.minimize_iterations = int(minimize_iterations)
        self.timestep_fs = timestep_fs
        if pressure_bar is not None:
            system.addForce(openmm.MonteCarloBarostat(pressure_bar * u.bar, temperature * u.kelvin))
        self.platform, props, self.platform_reasons = choose_platform(platform, threads)
        integrator = openmm.LangevinMiddleIntegrator(temperature * u.kelvin, friction_per_ps / u.picosecond,
                                                      timestep_fs * u.femtosecond)
        integrator.setRandomNumberSeed(seed)
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
        """Drop trajectory frames and CSV rows written after ``step`` (they will be recomputed)."""
        keep = step // self.report_interval
        if self.seg_dir.exists():
            for seg in self.seg_dir.glob("*.h5"):
                if int(seg.stem) > step:
                    seg.unlink()  # written before a checkpoint that never came
        if self.traj_path.exists():
            import tables

            with tables.open_file(str(self.traj_path), "r") as fh:
                longer = "time" in fh.root and fh.root.time.nrows > keep
            if longer:  # frames past the checkpoint (kept after a blow-up): rewrite a copy, then swap
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
        self._frames.append((step, pos, step * self.timestep_fs / 1000.0, kwargs.get("cell_lengths"), kwargs.get("cell_angles")))
        if len(self._frames) * pos.nbytes > FRAME_BUFFER_BYTES:
            self._flush_frames()  # long checkpoint intervals: bound the memory (segments past a checkpoint are dropped on resume)
        pe = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        ke = state.getKineticEnergy().value_in_unit(u.kilojoule_per_mole)
        temp = 2 * ke / (self.n_dof * 0.00831446261815324) if self.n_dof > 0 else 0.0
        with open(self.csv_path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=CSV_FIELDS).writerow(dict(
                step=step, time_ps=step * self.timestep_fs / 1000.0, potential_kJmol=pe, kinetic_kJmol=ke,
                total_kJmol=pe + ke, temperature_K=temp))

    def _flush_frames(self) -> None:
        """Write the buffered frames as one new segment file (atomically), named by its last step."""
        if not self._frames:
            return
        from mdtraj.formats import HDF5TrajectoryFile

        self.seg_dir.mkdir(exist_ok=True)
        with atomic_path(self.seg_dir / f"{self._frames[-1][0]:012d}.h5") as tmp:
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
                    last = float(fh.root.time[-1]) / (self.timestep_fs / 1000.0)
        new = [p for p in segments if int(p.stem) > last + 0.5 * self.report_interval]
        if new:
            with atomic_path(self.traj_path) as tmp:
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
        self._flush_frames()  # frames first: a checkpoint never refers to frames that are not on disk
        with atomic_path(self.chk_path) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(self.context.createCheckpoint())
        with atomic_path(self.chk_meta) as tmp:
            with open(tmp, "w") as fh:
                json.dump({"step": step, "timestep_fs": self.timestep_fs}, fh)

    def _blow_up(self, step: int, pe: float, last: float, detail: str = "") -> BlowUpError:
        kept = json.loads(self.chk_meta.read_text())["step"]
        return BlowUpError(
            f"simulation blew up at step {step} (potential energy {pe:.6g} kJ/mol, previous report {last:.6g}"
            + (f"; OpenMM: {detail}" if detail else "") + f"); the trajectory ends at the last good frame and "
            f"{self.chk_path.name} holds step {kept}: lower the timestep, minimise longer, or check the model"
        )

    # ------------------------------------------------------------------------------------ run
    def run(self, steps: int, minimize: bool = True, progress: bool = True) -> Dict[str, object]:
        for stale in [*self.out.glob(f".{self.traj_path.name}.*.tmp"), *self.seg_dir.glob(".*.tmp")]:
            stale.unlink()  # temporary files of a write that a SIGKILL interrupted: never the real ones
        if self.chk_meta.exists() and self.chk_path.exists():
            step = int(json.loads(self.chk_meta.read_text())["step"])
            self.context.loadCheckpoint(self.chk_path.read_bytes())
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
            if minimize:
                openmm.LocalEnergyMinimizer.minimize(self.context, 10.0, self.minimize_iterations)
            self.context.setVelocitiesToTemperature(self.temperature * u.kelvin, self.seed)
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
            step = self._loop(step, steps, last, t0, start, progress)
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
        return {"steps": step, "resumed": resumed, "platform": self.platform.getName(), "platform_reasons": self.platform_reasons,
                "ms_per_step": 1000 * elapsed / max(step - start, 1), "trajectory": str(self.traj_path), "state": str(self.csv_path)}

    def _loop(self, step: int, steps: int, last: float, t0: float, start: int, progress: bool) -> int:
        from tqdm.auto import tqdm

        with tqdm(total=steps, initial=step, desc="MD", unit="step", disable=not progress) as bar:
            while step < steps:
                n = min(self.report_interval - step % self.report_interval, steps - step)
                try:
                    self.integrator.step(n)
                except openmm.OpenMMException as exc:  # OpenMM's own NaN check fires inside step()
                    raise self._blow_up(step + n, float("nan"), last, str(exc).splitlines()[0]) from None
                step += n
                bar.update(n)
                if step % self.report_interval and step != steps:
                    continue
                # wrap only periodic systems: OpenMM would wrap atoms of an open system into its default box
                state = self.context.getState(getPositions=True, getEnergy=True,
                                              enforcePeriodicBox=self.context.getSystem().usesPeriodicBoundaryConditions())
                pe = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
                pos = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
                if not (math.isfinite(pe) and np.all(np.isfinite(pos))) or abs(pe - last) > self.max_energy_jump:
                    raise self._blow_up(step, pe, last)
                last = pe
                self._append(step, state)
                if step % self.checkpoint_interval == 0:
                    self._checkpoint(step)
                elapsed = time.perf_counter() - t0
                if elapsed > 0:
                    ns_day = (step - start) * self.timestep_fs * 1e-6 / elapsed * 86400
                    bar.set_postfix(ns_per_day=f"{ns_day:.2f}")
        return step


def _raise_system_exit(signum, frame):
    raise SystemExit(128 + signum)
