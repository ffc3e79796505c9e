"""Cost and accuracy of candidate DFT levels for relabelling xTB data (issue #19, point 2 "Reference quality").

For each molecule (an openmlip template: ``build_template``, a short GFN2-xTB BFGS optimisation as in
``openmlip data generate`` (fmax 0.1 eV/Å, <= 60 steps), then every coordinate displaced by N(0, 0.05 Å) noise
with a fixed seed so that forces are non-zero) this computes, on that one geometry:

* GFN2-xTB forces (tblite, at the template's charge and multiplicity);
* for each requested level, ``openmlip.data.dft.dft_label`` (PySCF RKS/UKS, density fitting unless
  ``--no-density-fit``, conv_tol 1e-9, analytic gradient, meta-Löwdin charges), timed wall-clock with 1 thread.

Levels (PySCF names):

* ``L1`` = ``wb97m-d3bj/def2-tzvppd`` (SPICE's level, ``openmlip data relabel``'s default; the D3BJ term comes
  from pyscf-dispersion),
* ``L2`` = ``wb97m-d3bj/def2-svp``,
* ``L3`` = ``wb97x/def2-svp``,
* ``L1v`` = ``wb97m-v/def2-tzvppd`` (VV10 instead of D3BJ; PySCF's VV10 is a double loop over grid points and
  dominates the cost for small molecules),

or any ``xc/basis`` string.  L1 is run only for molecules of at most ``--l1-max-atoms`` atoms, and first, so
that the later levels can be compared with it.  One JSON line per calculation is appended to ``--out``:
molecule, atoms, charge, level, seconds (dft_label wall time), cpu_seconds (its process CPU time: the cost on a
shared core), threads, force_rmsd_vs_L1_meV_per_A (null when
L1 was not computed for the molecule), force_rmsd_vs_xtb_meV_per_A, energy_eV, machine note.  Force RMSD is the
root mean square over all 3N Cartesian components of the force difference.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/dft_level.py --molecules methanethiol acetamide \\
        --levels L1 L2 L3 --out benchmarks/results/dft-level.jsonl --timeout 900

``benchmarks/results/dft-level-before-density-fitting.jsonl`` was measured before density fitting and D3BJ were available: its
``L1`` is ωB97M-V and its ``L1n``/``L2n`` are ωB97M with VV10 switched off.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LEVELS = {"L1": ("wb97m-d3bj", "def2-tzvppd"), "L2": ("wb97m-d3bj", "def2-svp"), "L3": ("wb97x", "def2-svp"),
          "L1v": ("wb97m-v", "def2-tzvppd")}
DEFAULT_MOLECULES = ["methanethiol", "acetamide", "methylguanidinium", "thiophene", "bromobenzene",
                     "dimethyl-phosphate", "gly-dipeptide"]


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout()


def geometry(name: str, noise: float = 0.05, seed: int = 0):
    """(template, Structure at the displaced geometry, xTB forces there in eV/Å)."""
    from ase import Atoms
    from ase.optimize import BFGS

    from openmlip.data.geometry import build_template
    from openmlip.data.structure import Structure
    from openmlip.data.templates import TEMPLATES
    from openmlip.data.xtb import xtb_calculator

    t = TEMPLATES[name]
    z, pos = build_template(t, seed)
    atoms = Atoms(numbers=z, positions=pos)
    atoms.calc = xtb_calculator(t)
    BFGS(atoms, logfile=None).run(fmax=0.1, steps=60)
    atoms.positions = atoms.positions + np.random.default_rng(seed).normal(0.0, noise, size=atoms.positions.shape)
    f_xtb = atoms.get_forces().copy()
    s = Structure(numbers=np.asarray(z, dtype=int), positions=atoms.positions.copy(), total_charge=float(t.charge),
                  spin_multiplicity=float(t.multiplicity), name=name, subset=t.subset)
    return t, s, f_xtb


def rmsd_mev(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)) * 1000.0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--molecules", nargs="+", default=DEFAULT_MOLECULES)
    p.add_argument("--levels", nargs="+", default=["L1", "L2", "L3"], help="L1 L2 L3 or xc/basis")
    p.add_argument("--l1-max-atoms", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--timeout", type=float, default=0, help="seconds per DFT calculation (0: none); a timed-out one "
                   "is recorded with seconds = null and timed_out_after")
    p.add_argument("--no-density-fit", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.05, help="Å, standard deviation of the displacement")
    p.add_argument("--note", default="2-core VM, other core busy")
    p.add_argument("--out", default="benchmarks/results/dft-level.jsonl")
    a = p.parse_args(argv)

    from openmlip.data.dft import dft_label

    signal.signal(signal.SIGALRM, _alarm)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in a.molecules:
        t, s, f_xtb = geometry(name, a.noise, a.seed)
        n = len(s.numbers)
        levels = sorted(a.levels, key=lambda lv: not lv.startswith("L1"))  # L1 first: the others are compared with it
        f_l1 = None
        for lv in levels:
            if lv.startswith("L1") and n > a.l1_max_atoms:
                print(f"{name}: {n} atoms > {a.l1_max_atoms}, L1 skipped", flush=True)
                continue
            xc, basis = LEVELS[lv] if lv in LEVELS else lv.split("/")
            rec = {"molecule": name, "atoms": n, "charge": t.charge, "level": lv, "xc": xc, "basis": basis,
                   "seconds": None, "cpu_seconds": None, "threads": a.threads, "force_rmsd_vs_L1_meV_per_A": None,
                   "force_rmsd_vs_xtb_meV_per_A": None, "energy_eV": None, "machine": a.note,
                   "method_note": "PySCF dft_label, %s, conv_tol 1e-9; geometry xTB-BFGS + N(0,%g A) seed %d"
                                  % ("no density fitting" if a.no_density_fit else "density fitting", a.noise, a.seed)}
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                if a.timeout:
                    signal.alarm(int(a.timeout))
                lab = dft_label(s, xc, basis, a.threads, density_fit=not a.no_density_fit)
                signal.alarm(0)
            except Timeout:
                rec["timed_out_after"] = a.timeout
                print(json.dumps(rec), flush=True)
                with out.open("a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                continue
            except RuntimeError as e:
                signal.alarm(0)
                rec["error"] = str(e)
                lab = None
            rec["seconds"] = round(time.perf_counter() - t0, 2)
            rec["cpu_seconds"] = round(time.process_time() - c0, 2)
            if lab is not None:
                rec["energy_eV"] = lab.energy
                rec["force_rmsd_vs_xtb_meV_per_A"] = round(rmsd_mev(lab.forces, f_xtb), 1)
                if lv.startswith("L1"):
                    f_l1 = lab.forces
                elif f_l1 is not None:
                    rec["force_rmsd_vs_L1_meV_per_A"] = round(rmsd_mev(lab.forces, f_l1), 1)
                rec["force_rms_meV_per_A"] = round(float(np.sqrt(np.mean(lab.forces ** 2))) * 1000.0, 1)
            print(json.dumps(rec), flush=True)
            with out.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
