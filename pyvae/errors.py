"""The one exception pyvae raises for bad input or configuration."""


class ConfigError(ValueError):
    """A bad argument, file or data set. The message is one line, written for the user.

    The CLI prints it on stderr and exits with status 2; from Python it is a ``ValueError``.
    """


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became NaN/Inf; the last good checkpoint is kept as it was."""


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM stopped training; a checkpoint of the current step was written."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = int(signum)
