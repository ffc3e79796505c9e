"""MD runner: reporters, checkpoints with resume, blow-up detection."""
from .runner import BlowUpError, MDRunner

__all__ = ["BlowUpError", "MDRunner"]
