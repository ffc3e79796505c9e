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


class GeometryError(OpenMLIPError, ValueError):
    """Coordinates are not finite, or two atoms sit on top of each other."""


class ConfigError(OpenMLIPError, ValueError):
    """A setting (training config, CLI option, keyword argument) has a wrong type, range or name."""


class DataFileError(OpenMLIPError, ValueError):
    """A data, trajectory or checkpoint file is missing, truncated, empty or in an unsafe format."""


class ResumeError(OpenMLIPError, RuntimeError):
    """An output folder holds a run made with different settings; resuming it would mix two runs."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class TrainingDivergedError(OpenMLIPError, ArithmeticError):
    """The loss or its gradient became non-finite during training (the labels are finite)."""


class OutputError(OpenMLIPError, OSError):
    """An output location cannot be written, or writing it would destroy an input."""


class RunInUseError(OutputError):
    """Another process is writing the same run folder."""


class PluginExistsError(OutputError, FileExistsError):
    """The output folder exists and replacing it was not asked for."""


class SpecError(OpenMLIPError, ValueError):
    """A system.yaml is missing a key, has a bad value, names a missing file or an empty selection."""


class BlowUpError(OpenMLIPError, RuntimeError):
    """The simulation produced NaN or an implausible energy jump."""


class SpiceFormatError(OpenMLIPError, ValueError):
    """A SPICE file is unreadable, or a group lacks a required field."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a run; the message says what was kept and how to continue.  Still a
    :class:`KeyboardInterrupt`, so that ``except Exception`` in a caller's script does not swallow it."""


def from_graph(exc: BaseException) -> "OpenMLIPError | None":
    """The typed openmlip error raised inside a TorchScript graph, or None when ``exc`` is something else.

    A ``raise`` in a scripted model reaches Python as ``torch.jit.Error`` (called directly) or
    ``openmm.OpenMMException`` (inside a TorchForce) whose text is a TorchScript traceback ending in
    ``openmlip.errors.<Class>: <message>``; this turns that last line back into ``<Class>(<message>)``.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines or not lines[-1].startswith("openmlip.errors."):
        return None
    name, _, message = lines[-1][len("openmlip.errors."):].partition(": ")
    cls = globals().get(name)
    if isinstance(cls, type) and issubclass(cls, OpenMLIPError):
        return cls(message)
    return None
