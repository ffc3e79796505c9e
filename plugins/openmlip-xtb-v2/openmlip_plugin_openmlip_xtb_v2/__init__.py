"""openmlip potential plugin 'openmlip-xtb-v2'."""
from pathlib import Path

NAME = 'openmlip-xtb-v2'


def model_path() -> Path:
    """Path of the shipped model file."""
    return Path(__file__).resolve().parent / "model.pt"
