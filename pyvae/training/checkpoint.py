"""Checkpoint files: written atomically, read without unpickling code.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts, saved with ``torch.save``
and loaded with ``torch.load(weights_only=True)``, so a file carrying a pickled object that
would run code is refused rather than executed.
"""
import json
import math
import os
import random
import tempfile
import threading

import torch

from ..errors import ConfigError, TrainingDiverged

FORMAT = "pyvae-checkpoint"
VERSION = 1
#: what every checkpoint holds; a file without one of them is refused when loaded
REQUIRED_KEYS = ("vae_config", "trainer_config", "extra_config", "model_state", "optim_state",
                 "history", "epoch", "step", "rng")

# The files of a run directory (``pyvae.Run`` reads them, ``pyvae.Trainer`` writes them)
CHECKPOINT = "checkpoint.pt"    # weights, optimizer and random states, history: resume from here
CONFIG = "config.json"          # pyvae.config.RunConfig.to_dict()
METRICS = "metrics.jsonl"       # one JSON record per epoch
EVAL = "eval.json"              # the last ``pyvae evaluate`` / ``Run.evaluate``
SNR = "snr.json"                # the last ``pyvae snr`` / ``Run.snr``
BDMC = "bdmc.json"              # the last ``pyvae bdmc`` / ``Run.bdmc``
TENSORBOARD = "tensorboard"     # event files of ``pyvae train --tensorboard``
FIGURES = "figures"             # ``pyvae plot``'s default output
EVAL_PROGRESS = "eval-progress.pt"  # per-datapoint results of an unfinished evaluation
TMP_PREFIX = ".tmp-"            # temp files and directories, removed when a writer opens the run


_umask_lock = threading.Lock()


def umask() -> int:
    """The process's umask (read from /proc where possible, without changing it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from ``open``: 0o666 less the umask."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


def atomic_write(path: str, write) -> None:
    """Call ``write(file_object)`` on a temp file beside ``path``, fsync, then ``os.replace``.

    Readers see either the old file or the complete new one, never a half-written one.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=directory)
    try:
        os.fchmod(fd, file_mode())  # mkstemp makes 0600; a run's files get the umask's mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def check_finite_result(module, history, epoch: int) -> None:
    """Raise ``TrainingDiverged`` if a parameter or the last epoch's train/valid ELBO is NaN/Inf:
    such a state is never written as a checkpoint."""
    bad = [name for name, p in module.named_parameters() if not torch.isfinite(p).all()]
    last = history[-1] if history else {}
    if bad or any(v is not None and not math.isfinite(v)
                  for v in (last.get("train_elbo"), last.get("valid_elbo"))):
        where = f"parameter {bad[0]}" if bad else "the ELBO"
        raise TrainingDiverged(f"{where} became NaN or Inf at epoch {epoch}; no checkpoint "
                               "written, the last good one is kept (try a lower --lr or --clip-norm)")


def save_checkpoint(path: str, payload: dict) -> None:
    payload = dict(payload, format=FORMAT, version=VERSION)
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str, map_location=None) -> dict:
    """Load a pyvae checkpoint; refuses pickled code, truncated or foreign files with a ConfigError."""
    if not os.path.isfile(path):
        raise ConfigError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise ConfigError(
                f"{path}: refused to load: the file holds Python objects beyond tensors and "
                f"plain data, which could run code ({first})"
            ) from None
        raise ConfigError(f"{path}: not a readable checkpoint (truncated or foreign file): {first}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a pyvae checkpoint")
    if payload.get("version") != VERSION:
        raise ConfigError(
            f"{path}: checkpoint format version {payload.get('version')} is not supported "
            f"(this pyvae reads version {VERSION})"
        )
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise ConfigError(f"{path}: damaged checkpoint: missing {', '.join(missing)}")
    if not isinstance(payload["model_state"], dict) or not isinstance(payload["history"], list):
        raise ConfigError(f"{path}: damaged checkpoint: model_state or history has the wrong type")
    return payload


def get_rng_state() -> dict:
    """The global random states that training consumes (torch CPU/CUDA, Python)."""
    state = {"torch": torch.get_rng_state(), "python": _python_state_to_plain(random.getstate())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(_python_state_from_plain(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _python_state_to_plain(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_plain(state):
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def resolve_device(device) -> torch.device:
    """``torch.device(device)``, or ConfigError (unknown name, CUDA absent)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"bad device {device!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device} requested but CUDA is not available")
    return device


def is_run_dir(path: str) -> bool:
    """Whether ``path`` holds a run's checkpoint."""
    return os.path.isfile(os.path.join(path, CHECKPOINT))
