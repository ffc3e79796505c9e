"""Regenerate the MACE test fixture (run in the MACE venv: mace-torch pins e3nn 0.4.4).

    bash benchmarks/peers/setup.sh mace
    benchmarks/peers/.venv-mace/bin/python benchmarks/peers/make_mace_fixture.py tests/data/mace

Writes, for float64 and float32:
* ``mace-tiny-<dtype>.pt``: a small ``ScaleShiftMACE`` (H, C, N, O; r_max 4 Å; 2 interactions, max_ell 2,
  correlation 3; seeded random weights and E0s) scripted with ``e3nn.util.jit.compile`` (``torch.jit.script``
  with e3nn's compile modes), exactly as MACE's own LAMMPS/OpenMM exports script their models;
* ``mace-tiny-<dtype>-reference.npz``: energies and forces of MACE's own ASE calculator
  (``MACECalculator(models=...)``) on three structures — acetamide, the charged cluster NH4+(H2O)2 and a
  periodic box of 20 waters whose molecules cross the boundary — with the structures themselves.
The test (tests/test_imports.py) imports the ``.pt`` with openmlip (torch only, no mace-torch) and compares.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule

Z = [1, 6, 7, 8]


def structures():
    out = [molecule("CH3CONH2")]
    nh4 = [(0, 0, 0), (0.6, 0.6, 0.6), (-0.6, -0.6, 0.6), (-0.6, 0.6, -0.6), (0.6, -0.6, -0.6)]
    out.append(Atoms("NH4OH2OH2", positions=nh4 + [(1.7, 1.7, 1.7), (2.1, 2.5, 1.9), (2.5, 1.4, 1.9),
                                                   (-1.7, -1.7, 1.7), (-2.1, -2.5, 1.9), (-2.5, -1.4, 1.9)]))
    out[-1].info["charge"] = 1
    rng = np.random.default_rng(7)
    box = 9.0
    w = molecule("H2O").positions
    sites = np.array([(i, j, k) for i in range(3) for j in range(3) for k in range(3)], float) * 3.0 + 1.4
    pos, sym = [], []
    for s in sites[rng.permutation(len(sites))[:20]]:
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        pos.extend(s + w @ q.T)
        sym.extend(["O", "H", "H"])
    water = Atoms(sym, positions=np.array(pos) - 2.0, cell=[box, box, box], pbc=True)
    water.wrap()  # molecules at the faces end up split across the boundary
    out.append(water)
    return out


def model(dtype: torch.dtype):
    from e3nn import o3
    from mace import modules

    torch.manual_seed(3)
    m = modules.ScaleShiftMACE(
        r_max=4.0, num_bessel=8, num_polynomial_cutoff=6, max_ell=2,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=2, num_elements=len(Z), hidden_irreps=o3.Irreps("8x0e + 8x1o"),
        MLP_irreps=o3.Irreps("8x0e"), atomic_energies=np.array([-13.6, -1029.8, -1485.0, -2042.6]),
        avg_num_neighbors=6.0, atomic_numbers=Z, correlation=3, gate=torch.nn.functional.silu,
        atomic_inter_scale=0.8, atomic_inter_shift=0.1,
    )
    return m.to(dtype).eval()


def main(outdir: str):
    from e3nn.util import jit
    from mace.calculators import MACECalculator
    import mace

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    for name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
        torch.set_default_dtype(dtype)
        m = model(dtype)
        scripted = jit.compile(m)
        torch.jit.save(scripted, str(out / f"mace-tiny-{name}.pt"))
        calc = MACECalculator(models=m, device="cpu", default_dtype=name)
        rec = {"mace_version": np.array(mace.__version__)}
        for k, atoms in enumerate(structures()):
            atoms = atoms.copy()
            atoms.calc = calc
            rec[f"s{k}_numbers"] = atoms.numbers
            rec[f"s{k}_positions"] = atoms.positions
            rec[f"s{k}_cell"] = np.asarray(atoms.cell)
            rec[f"s{k}_pbc"] = atoms.pbc
            rec[f"s{k}_charge"] = np.array(atoms.info.get("charge", 0))
            rec[f"s{k}_energy"] = np.array(atoms.get_potential_energy())
            rec[f"s{k}_forces"] = atoms.get_forces()
        np.savez(out / f"mace-tiny-{name}-reference.npz", **rec)
        print(name, {k: float(v) for k, v in rec.items() if k.endswith("_energy")})


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/mace")
