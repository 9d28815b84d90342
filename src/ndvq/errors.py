"""User errors: the one place every part of ndvq takes its exception classes from (a leaf module).

An :class:`NdvqError` is a problem with what the user gave ndvq (a config value, a data file, a
checkpoint, a codes file). Its message is one line naming what was expected and what came; the command
line prints it and exits with code 2. Any other exception is a bug: the command line shows its traceback
and exits with code 1.

Every kind also derives from :class:`ValueError`, so code that catches ``ValueError`` keeps working.

Example:
    >>> from ndvq.errors import ConfigError, NdvqError
    >>> isinstance(ConfigError("model.n_codes must be >= 2, got 1"), NdvqError)
    True
"""

from __future__ import annotations

__all__ = ["NdvqError", "ConfigError", "DataError", "CheckpointError", "CodesError", "NonFiniteLossError",
           "RunInUseError", "RankDiedError", "StoppedBySignal"]


class NdvqError(Exception):
    """A user error: a one-line message, exit code 2 on the command line."""


class ConfigError(NdvqError, ValueError):
    """A bad config file, key or value."""


class DataError(NdvqError, ValueError):
    """Data that cannot be used: an empty folder, an unreadable or inconsistent file."""


class CheckpointError(NdvqError, ValueError):
    """A checkpoint or pretrained folder that cannot be used (missing, corrupt, another model)."""


class CodesError(NdvqError, ValueError):
    """A codes file (``ndvq encode`` output) that does not fit the model it is decoded with."""


class NonFiniteLossError(NdvqError, RuntimeError):
    """Training stopped after ``train.max_nonfinite_steps`` consecutive non-finite steps."""


class RunInUseError(NdvqError, RuntimeError):
    """Another live ``ndvq train`` holds the run directory's lock (``runs/<name>/.lock``)."""


class RankDiedError(NdvqError, RuntimeError):
    """A DDP rank died (killed, or its process exited) and the job was stopped; exit code 1 on the command line."""


class StoppedBySignal(Exception):
    """Not an error: the job was stopped by a signal before training produced a result (e.g. while DDP ranks
    started). The command line prints the message and exits with ``128 + signum`` (130 SIGINT, 143 SIGTERM).

    Attributes:
        signum: the signal number.
    """

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = int(signum)
