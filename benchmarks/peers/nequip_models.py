"""Build real nequip / Allegro models with the nequip framework itself, for tests and benchmarks.

A small H/C/N/O data set (molecules, NH4+(H2O)2, a few perturbations each) labelled with ASE's EMT
calculator (fast, deterministic; the labels only have to be *some* smooth energy surface: what is tested
is that openmlip reproduces the framework's own model, not the model's accuracy), then ``nequip-train``
for a few steps and ``nequip-compile --mode torchscript`` — the route the framework documents for
deployment.  Sizes: ``tiny`` (tests: seconds) and ``bench`` (the framework's tutorial-sized model, for
``benchmarks/speed.py --imported``).

    python benchmarks/peers/nequip_models.py OUTDIR [--kind nequip|allegro] [--size tiny|bench]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

TYPE_NAMES = ["H", "C", "N", "O"]
CUTOFF = 4.0


def structures(seed: int = 0, copies: int = 6):
    """ASE Atoms: 7 molecules and NH4+(H2O)2, ``copies`` random perturbations (σ = 0.04 Å) each."""
    from ase import Atoms
    from ase.build import molecule

    base = [molecule(n) for n in ("CH4", "NH3", "H2O", "CH3OH", "HCOOH", "C2H4", "CH3CONH2")]
    nh4 = [(0, 0, 0), (0.6, 0.6, 0.6), (-0.6, -0.6, 0.6), (-0.6, 0.6, -0.6), (0.6, -0.6, -0.6)]
    cluster = Atoms("NH4OH2OH2", positions=nh4 + [(1.7, 1.7, 1.7), (2.1, 2.5, 1.9), (2.5, 1.4, 1.9),
                                                  (-1.7, -1.7, 1.7), (-2.1, -2.5, 1.9), (-2.5, -1.4, 1.9)])
    base.append(cluster)
    rng = np.random.default_rng(seed)
    out = []
    for atoms in base:
        for _ in range(copies):
            a = atoms.copy()
            a.positions += rng.normal(0.0, 0.04, a.positions.shape)
            out.append(a)
    return out


def write_dataset(path: Path, seed: int = 0) -> Path:
    """EMT-labelled extxyz (energy eV, forces eV/Å) of :func:`structures`."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frames = []
    for a in structures(seed):
        a.calc = EMT()
        e, f = a.get_potential_energy(), a.get_forces()
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
        frames.append(a)
    path.parent.mkdir(parents=True, exist_ok=True)
    write(str(path), frames, format="extxyz")
    return path


SIZES = {
    "tiny": {"nequip": dict(l_max=1, num_layers=2, num_features=8, radial_mlp_width=8),
             "allegro": dict(l_max=1, num_layers=1, num_scalar_features=8, num_tensor_features=4, width=8)},
    "bench": {"nequip": dict(l_max=1, num_layers=4, num_features=32, radial_mlp_width=64),
              "allegro": dict(l_max=1, num_layers=2, num_scalar_features=64, num_tensor_features=16, width=64)},
}


def config(kind: str, data: Path, size: str = "tiny", dtype: str = "float64", epochs: int = 1) -> str:
    """The nequip-train (hydra) YAML for a ``kind`` model on ``data``."""
    s = SIZES[size][kind]
    if kind == "nequip":
        model = f"""    _target_: nequip.model.NequIPGNNModel
    seed: 1
    model_dtype: {dtype}
    type_names: ${{model_type_names}}
    r_max: ${{cutoff_radius}}
    l_max: {s['l_max']}
    parity: true
    num_layers: {s['num_layers']}
    num_features: {s['num_features']}
    radial_mlp_depth: 1
    radial_mlp_width: {s['radial_mlp_width']}
    avg_num_neighbors: ${{training_data_stats:num_neighbors_mean}}
    per_type_energy_shifts: ${{training_data_stats:per_atom_energy_mean}}
    per_type_energy_scales: ${{training_data_stats:forces_rms}}"""
    elif kind == "allegro":
        model = f"""    _target_: allegro.model.AllegroModel
    seed: 1
    model_dtype: {dtype}
    type_names: ${{model_type_names}}
    r_max: ${{cutoff_radius}}
    l_max: {s['l_max']}
    radial_chemical_embed:
      _target_: allegro.nn.TwoBodyBesselScalarEmbed
      num_bessels: 8
    radial_chemical_embed_dim: {s['num_scalar_features']}
    scalar_embed_mlp_hidden_layers_depth: 1
    scalar_embed_mlp_hidden_layers_width: {s['width']}
    num_layers: {s['num_layers']}
    num_scalar_features: {s['num_scalar_features']}
    num_tensor_features: {s['num_tensor_features']}
    allegro_mlp_hidden_layers_depth: 1
    allegro_mlp_hidden_layers_width: {s['width']}
    readout_mlp_hidden_layers_depth: 1
    readout_mlp_hidden_layers_width: {s['width']}
    avg_num_neighbors: ${{training_data_stats:num_neighbors_mean}}
    per_type_energy_shifts: ${{training_data_stats:per_atom_energy_mean}}
    per_type_energy_scales: ${{training_data_stats:forces_rms}}"""
    else:
        raise ValueError(f"kind must be 'nequip' or 'allegro', got {kind!r}")
    return f"""run: [train]
seed: 1
cutoff_radius: {CUTOFF}
model_type_names: {TYPE_NAMES}
chemical_species: ${{model_type_names}}
dataloader:
  _target_: torch.utils.data.DataLoader
  batch_size: 8
data:
  _target_: nequip.data.datamodule.NequIPDataModule
  seed: ${{seed}}
  split_dataset:
    dataset:
      _target_: nequip.data.dataset.ASEDataset
      file_path: {data}
      transforms:
        - _target_: nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper
          model_type_names: ${{model_type_names}}
          chemical_species_to_atom_type_map: ${{list_to_identity_dict:${{chemical_species}}}}
        - _target_: nequip.data.transforms.NeighborListTransform
          r_max: ${{cutoff_radius}}
    train: 40
    val: 8
  train_dataloader: ${{dataloader}}
  val_dataloader: ${{dataloader}}
  stats_manager:
    _target_: nequip.data.CommonDataStatisticsManager
    type_names: ${{model_type_names}}
trainer:
  _target_: lightning.Trainer
  max_epochs: {epochs}
  accelerator: cpu
  enable_progress_bar: false
  logger: false
  callbacks:
    - _target_: lightning.pytorch.callbacks.ModelCheckpoint
      dirpath: ${{hydra:runtime.output_dir}}
      filename: last
      save_last: false
training_module:
  _target_: nequip.train.EMALightningModule
  loss:
    _target_: nequip.train.EnergyForceLoss
    per_atom_energy: true
    coeffs: {{total_energy: 1.0, forces: 1.0}}
  val_metrics:
    _target_: nequip.train.EnergyForceMetrics
    coeffs: {{total_energy_mae: 1.0, forces_mae: 1.0}}
  optimizer:
    _target_: torch.optim.Adam
    lr: 0.01
  model:
{model}
"""


def _bin(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: pip install 'openmlip[foreign]' (nequip, nequip-allegro)")
    return found


def build(outdir: Path, kind: str = "nequip", size: str = "tiny", dtype: str = "float64", epochs: int = 1) -> Path:
    """Train a ``kind`` model with nequip-train and compile it; returns the ``.nequip.pth`` path."""
    outdir = Path(outdir).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    compiled = outdir / f"{kind}-{size}-{dtype}.nequip.pth"
    if compiled.exists():
        return compiled
    data = outdir / "data.xyz"
    if not data.exists():
        write_dataset(data)
    cfg_dir = outdir / f"{kind}-{size}-{dtype}"
    cfg_dir.mkdir(exist_ok=True)
    (cfg_dir / "config.yaml").write_text(config(kind, data, size, dtype, epochs))
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), HYDRA_FULL_ERROR="1")
    run_dir = cfg_dir / "run"
    subprocess.run([_bin("nequip-train"), "-cp", str(cfg_dir), "-cn", "config", f"hydra.run.dir={run_dir}"],
                   check=True, cwd=cfg_dir, env=env, capture_output=True, text=True)
    ckpt = run_dir / "last.ckpt"
    tmp = compiled.with_name(compiled.name.replace(".nequip.pth", ".tmp.nequip.pth"))
    subprocess.run([_bin("nequip-compile"), str(ckpt), str(tmp), "--mode", "torchscript", "--device", "cpu"],
                   check=True, cwd=cfg_dir, env=env, capture_output=True, text=True)
    tmp.replace(compiled)
    return compiled


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--kind", choices=["nequip", "allegro"], default="nequip")
    ap.add_argument("--size", choices=list(SIZES), default="tiny")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    ap.add_argument("--epochs", type=int, default=1)
    a = ap.parse_args(argv)
    try:
        print(build(a.outdir, a.kind, a.size, a.dtype, a.epochs))
    except subprocess.CalledProcessError as exc:
        sys.stderr.write((exc.stdout or "")[-3000:] + (exc.stderr or "")[-6000:])
        raise SystemExit(1)


if __name__ == "__main__":
    main()
