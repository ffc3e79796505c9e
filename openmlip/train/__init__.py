"""Training: YAML config, batching, the trainer with exact resume, deployment of a run."""
from .config import TrainConfig
from .trainer import Trainer, deploy_run, reference_energies, split_by_molecule

__all__ = ["TrainConfig", "Trainer", "deploy_run", "reference_energies", "split_by_molecule"]
