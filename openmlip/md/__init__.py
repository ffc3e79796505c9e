"""MD runner: platform choice, reporters, checkpoints with resume, blow-up detection."""
from .runner import BlowUpError, MDRunner, choose_platform

__all__ = ["BlowUpError", "MDRunner", "choose_platform"]
