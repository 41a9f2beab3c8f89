"""The one exception pyvae raises for bad input or configuration."""
import os
import re
import sys


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


def load_failure(path: str, what: str, error: Exception) -> str:
    """The one-line message for a file that ``torch.load(weights_only=True)`` (or NumPy) could
    not read: pickled objects are refused without torch's terminal escapes or its advice to load
    the file unsafely; anything else is a truncated or foreign file."""
    text = str(error)
    if "weights_only" in text or "Weights only" in text or "Unsupported global" in text:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        which = f" (it names {found.group(1)})" if found else ""
        return (f"{path}: refused to load: the file holds Python objects beyond tensors and "
                f"plain data{which}, which could run code; a pyvae {what} holds none")
    lines = [line for line in re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text).splitlines() if line.strip()]
    first = lines[0].strip() if lines else type(error).__name__
    return f"{path}: not a readable {what} (truncated or foreign file): {first}"


def interrupted_while_starting(signum, frame):
    """SIGINT while the ``pyvae`` command is still importing torch and pyro: one line, exit
    status 128 + signal (nothing has been written yet)."""
    print("pyvae: interrupted", file=sys.stderr, flush=True)
    os._exit(128 + signum)
