"""openmlip potential plugin 'openmlip-xtb-v4'."""
from pathlib import Path

NAME = 'openmlip-xtb-v4'


def model_path() -> Path:
    """Path of the shipped model file."""
    return Path(__file__).resolve().parent / "model.pt"
