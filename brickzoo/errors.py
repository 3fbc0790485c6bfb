"""Every exception brickzoo raises on bad input lives here.

All of them derive from :class:`BrickzooError`, and each also derives from the builtin
exception a Python user would expect (``ValueError``, ``KeyError``, ``TypeError``...), so
``except ValueError`` keeps working. Messages always say what was got, what was expected
and which brick path, tensor name or file is concerned.
"""

from __future__ import annotations

__all__ = [
    "BrickDefinitionError",
    "BrickGraphError",
    "BrickInputError",
    "BrickOutputError",
    "BrickRuntimeError",
    "BrickzooError",
    "ConfigError",
    "DataError",
    "DataWarning",
    "DownloadError",
    "ExportError",
    "MissingInputsError",
    "OutputError",
    "UsageError",
    "WeightsError",
    "WeightsNotADirectoryError",
    "WeightsNotFoundError",
    "ZooError",
]


class BrickzooError(Exception):
    """Base class of every error raised by brickzoo."""


class BrickDefinitionError(BrickzooError, ValueError):
    """A brick was constructed with invalid arguments (names, groups, model)."""


class BrickGraphError(BrickzooError, ValueError):
    """The bricks of a collection do not form a valid graph (cycle, two writers, bad relative name)."""


class MissingInputsError(BrickzooError, KeyError):
    """A group selection needs named inputs that were not given."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class BrickOutputError(BrickzooError, ValueError):
    """A brick returned something that cannot be mapped onto its output names."""


class BrickRuntimeError(BrickzooError, RuntimeError):
    """A brick raised while running; the original exception is chained as ``__cause__``."""


class BrickInputError(BrickzooError, ValueError):
    """A zoo brick received a tensor of the wrong shape, dtype or value range."""


class WeightsError(BrickzooError, ValueError):
    """Weights could not be saved or loaded (shape mismatch, unreadable file)."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """A weight folder or file does not exist (also a ``FileNotFoundError``)."""


class DownloadError(WeightsError, ConnectionError):
    """A download failed on the way (timeout, refused or dropped connection); also a ``ConnectionError``."""


class WeightsNotADirectoryError(WeightsError, NotADirectoryError):
    """A file was given where a folder of weights is expected (also a ``NotADirectoryError``)."""


class ExportError(BrickzooError, RuntimeError):
    """ONNX export or the onnxruntime parity check failed."""


class ConfigError(BrickzooError, ValueError):
    """A zoo config (YAML or dict) or a command-line override is invalid."""


class DataError(BrickzooError, ValueError):
    """A dataset file or folder is missing, corrupt or inconsistent."""


class OutputError(BrickzooError, OSError):
    """An output file or folder cannot be written (also an ``OSError``).

    A file where a folder is expected or the reverse, no write permission, or a run folder that
    another process is using.
    """


class DataWarning(UserWarning):
    """A dataset found doubtful input and says what it changed or suspects (clipped boxes, stray mask values).

    The message counts the cases and names the file. It is a warning, not a :class:`BrickzooError`;
    ``warnings.simplefilter("error", DataWarning)`` makes it raise.
    """


class ZooError(BrickzooError, KeyError):
    """An unknown name was asked from a registry of the zoo."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UsageError(BrickzooError, ValueError):
    """A command-line request that cannot be carried out (an option combination, a run folder's state)."""
