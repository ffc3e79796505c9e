"""Training: YAML config, batching, the trainer with exact resume, deployment of a run."""
from ..data.split import split_by_molecule
from .config import TrainConfig
from .trainer import Trainer, deploy_run, reference_energies

__all__ = ["TrainConfig", "Trainer", "deploy_run", "reference_energies", "split_by_molecule"]
