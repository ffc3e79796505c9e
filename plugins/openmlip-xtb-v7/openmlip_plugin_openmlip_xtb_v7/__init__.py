"""openmlip potential plugin 'openmlip-xtb-v7'."""
from pathlib import Path

NAME = 'openmlip-xtb-v7'


def model_path() -> Path:
    """Path of the shipped model file."""
    return Path(__file__).resolve().parent / "model.pt"
