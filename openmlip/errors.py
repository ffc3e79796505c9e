"""Typed errors.  Every message names the problem and the fix."""


class OpenMLIPError(Exception):
    """Base class of openmlip's errors."""


class ModelFileError(OpenMLIPError, ValueError):
    """A model file is missing, corrupt, or not readable by this openmlip version."""


class UnsupportedElementError(OpenMLIPError, ValueError):
    """The structure contains an element the model was not trained on."""


class ChargeError(OpenMLIPError, ValueError):
    """A total charge is missing, non-integral or inconsistent."""


class BoxError(OpenMLIPError, ValueError):
    """A periodic box is too small for the model's cutoff."""


class SelectionError(OpenMLIPError, ValueError):
    """Atom indices or selections are invalid."""
