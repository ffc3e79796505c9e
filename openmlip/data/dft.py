"""DFT relabelling of a subset of conformers with PySCF (``openmlip data relabel``).

Each chosen conformer is recomputed at the given functional/basis at its own total charge and spin
multiplicity (restricted Kohn–Sham for singlets, unrestricted otherwise): energy, analytic gradient and
meta-Löwdin partial charges (basis-set stable, unlike Mulliken).  The default level is SPICE's,
ωB97M-D3BJ/def2-TZVPPD, with density fitting (PySCF's def2-universal-JKFIT auxiliary basis); a dispersion
suffix (``-d3bj``, ``-d3zero``, ``-d4``) needs the ``pyscf-dispersion`` package (in the ``data`` extra) and its
term enters energy and gradient.  Written in the SPICE layout with keys
``dft_total_energy``, ``dft_total_gradient``, ``dft_charges`` (hartree, hartree/bohr, e), so the same
reader and trainer take it.  A checkpoint (``<output>.partial.json``, JSON: reading it runs no code) is
written after every conformer: a killed run recomputes nothing it finished; the output file is written
atomically at the end.  The checkpoint records the input file's sha256, the choice of conformers and the level
of theory; a rerun with any of them changed is a :class:`~openmlip.errors.ResumeError` naming it
(:mod:`openmlip.store`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import numpy as np

from .._io import check_not_input, file_sha256, writable_file
from ..errors import ConfigError, DataFileError
from ..store import RunStore
from .structure import Structure, structure_from_json, structure_to_json

RELABEL_PROGRESS = "openmlip-relabel-progress"



DEFAULT_XC, DEFAULT_BASIS = "wb97m-d3bj", "def2-tzvppd"  # SPICE 2's level
DISPERSION_SUFFIXES = ("-d3bj", "-d3zero", "-d3bjm", "-d3zerom", "-d3op", "-d4")


def check_level(xc: str, basis: Optional[str] = None, elements: Iterable[int] = ()) -> None:
    """:class:`ConfigError` before any SCF for a functional PySCF does not know, a basis it does not have (for
    each of ``elements``), or a dispersion-corrected functional without pyscf-dispersion (PySCF would stop
    mid-run)."""
    import warnings

    from pyscf import gto
    from pyscf.dft import libxc

    try:
        libxc.parse_xc(xc)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"--xc {xc}: PySCF does not know this functional ({str(exc).strip(chr(34))}); give a "
                          f"libxc name such as {DEFAULT_XC}, wb97x-v, b3lyp-d3bj or pbe0") from None
    if basis is not None:
        from ase.data import chemical_symbols

        for symbol in [chemical_symbols[z] for z in sorted(set(int(v) for v in elements))] or ["H"]:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "install basis-set-exchange": not needed for PySCF's own sets
                    gto.basis.load(basis, symbol)
            except Exception:  # noqa: BLE001  -- BasisNotFoundError and friends
                raise ConfigError(f"--basis {basis}: PySCF has no such basis set for {symbol}; give one of its "
                                  f"basis names, such as {DEFAULT_BASIS}, def2-svp or cc-pvdz") from None
    if xc.lower().endswith(DISPERSION_SUFFIXES):
        try:
            import pyscf.dispersion  # noqa: F401
        except ImportError:
            raise ConfigError(f"--xc {xc}: the dispersion correction needs the pyscf-dispersion package: "
                              "pip install pyscf-dispersion (it is in openmlip's data extra)") from None


def dft_label(s: Structure, xc: str = DEFAULT_XC, basis: str = DEFAULT_BASIS, threads: int = 1,
              density_fit: bool = True) -> Structure:
    """A copy of ``s`` with PySCF energy (eV), forces (eV/Å) and meta-Löwdin charges (e)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    from pyscf import dft, gto, lib

    from .. import units

    check_level(xc)
    lib.num_threads(threads)
    charge = int(round(s.total_charge))
    spin = int(round(s.spin_multiplicity)) - 1
    mol = gto.M(atom=[(int(z), tuple(p)) for z, p in zip(s.numbers, s.positions)], unit="Angstrom", basis=basis,
                charge=charge, spin=spin, verbose=0)
    mf = dft.RKS(mol) if spin == 0 else dft.UKS(mol)
    mf.xc = xc
    if density_fit:
        mf = mf.density_fit()
    mf.conv_tol = 1e-9
    e = mf.kernel()
    if not mf.converged:
        raise RuntimeError(f"SCF did not converge for a conformer of {s.name!r} ({xc}/{basis})")
    grad = mf.nuc_grad_method().kernel()
    _, q = mf.mulliken_meta(verbose=0)
    out = Structure(numbers=s.numbers.copy(), positions=s.positions.copy(), total_charge=s.total_charge,
                    spin_multiplicity=s.spin_multiplicity, energy=float(e) * units.HARTREE_TO_EV,
                    forces=-np.asarray(grad) * units.HARTREE_TO_EV / units.BOHR_TO_ANGSTROM, charges=np.asarray(q, dtype=float),
                    formal_charges=s.formal_charges, name=s.name, subset=s.subset)
    return out


def relabel(input_path, output, n: int, xc: str = DEFAULT_XC, basis: str = DEFAULT_BASIS, seed: int = 0,
            molecules: Optional[List[str]] = None, source_keys: Optional[Dict[str, str]] = None, progress: bool = True,
            stop_after: Optional[int] = None, density_fit: bool = True) -> Dict[str, object]:
    """Relabel ``n`` conformers of ``input_path`` (spread evenly over molecules, random within each)."""
    from tqdm.auto import tqdm

    check_level(xc)

    from .spice import DFT_LABELS, XTB_LABELS, read_spice, write_spice

    if not Path(input_path).is_file():
        raise FileNotFoundError(f"input {str(input_path)!r} not found: give the HDF5 written by `openmlip data generate`")
    check_not_input(output, [input_path], "output", manifests=True)
    writable_file(output, "output file")
    keys = source_keys or XTB_LABELS.kwargs()
    structs = [s for s in read_spice(input_path, **keys) if molecules is None or s.name in molecules]
    if not structs:
        raise DataFileError(f"no conformers in {input_path}" + (f" for molecules {molecules}" if molecules else ""))
    check_level(xc, basis, {int(z) for s in structs for z in s.numbers})
    rng = np.random.default_rng(seed)
    by: Dict[str, List[int]] = {}
    for i, s in enumerate(structs):
        by.setdefault(s.name, []).append(i)
    order = {k: list(rng.permutation(v)) for k, v in sorted(by.items())}
    chosen: List[int] = []
    while len(chosen) < min(n, len(structs)):  # round robin over molecules
        for k in order:
            if order[k] and len(chosen) < n:
                chosen.append(int(order[k].pop(0)))
    output = Path(output)
    partial = output.name + ".partial.json"
    store = RunStore(output.parent, "data relabel", {
        "input": str(Path(input_path).resolve()), "input_sha256": file_sha256(input_path), "chosen": chosen,
        "xc": xc, "basis": basis, "density_fit": density_fit})
    computed = 0
    with store.lock(output.name):
        state = store.load_json(partial, RELABEL_PROGRESS)  # other input, conformers or level: ResumeError
        done: List[Structure] = [structure_from_json(d) for d in state["done"]] if state is not None else []
        with tqdm(total=len(chosen), initial=len(done), desc=f"{xc}/{basis}", unit="conf", disable=not progress) as bar:
            for i in chosen[len(done):]:
                if stop_after is not None and computed >= stop_after:
                    return {"status": "interrupted", "computed": computed}
                done.append(dft_label(structs[i], xc, basis, density_fit=density_fit))
                computed += 1
                store.save_json(partial, RELABEL_PROGRESS, {"done": [structure_to_json(d) for d in done]})
                bar.update(1)
        counts = write_spice(output, done, **DFT_LABELS.kwargs())
        store.path(partial).unlink(missing_ok=True)
    return {"status": "finished", "computed_this_run": computed, "conformers": sum(counts.values()),
            "method": f"{xc}/{basis} (PySCF{', density fitting' if density_fit else ''})",
            "charges": "meta-Löwdin", "keys": DFT_LABELS.kwargs()}
