"""Checkpoint files: written atomically, read without unpickling code.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts, saved with ``torch.save``
and loaded with ``torch.load(weights_only=True)``, so a file carrying a pickled object that
would run code is refused rather than executed.
"""
import errno
import hashlib
import io
import json
import math
import os
import random
import tempfile
import threading
import warnings

import torch

from ..errors import ConfigError, TrainingDiverged, load_failure

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
EVALUATIONS = "evaluations"     # every finished evaluation, one file each, and index.json
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

    Readers see either the old file or the complete new one, never a half-written one. A full
    or read-only disk is an ``OSError`` (ENOSPC, EROFS) naming ``path``; the temp file goes.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=directory)
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None
    try:
        os.fchmod(fd, file_mode())  # mkstemp makes 0600; a run's files get the umask's mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        raise OSError(e.errno, e.strerror or os.strerror(e.errno or errno.EIO), path) from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def atomic_write_bytes(path: str, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def torch_bytes(obj) -> bytes:
    """``torch.save(obj)`` into memory: the file is then written by ``atomic_write``, whose write
    errors are plain ``OSError``s (torch's own writer turns ENOSPC into a ``RuntimeError``)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def tensor_digest(tensors: dict) -> str:
    """sha256 of named tensors (names, dtypes, shapes and bytes): which weights, which data."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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
    atomic_write_bytes(path, torch_bytes(payload))


def safe_load(path: str, what: str, map_location=None):
    """``torch.load(path, weights_only=True)``: a file holding pickled objects (which could run
    code) or a truncated or foreign one is one ConfigError line naming ``what`` it should be."""
    try:
        with warnings.catch_warnings():  # torch's notes on a foreign pickle protocol: noise here
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ConfigError(load_failure(path, what, e)) from None


def load_checkpoint(path: str, map_location=None) -> dict:
    """Load a pyvae checkpoint; refuses pickled code, truncated, foreign and damaged files
    (``check_payload``) with a ConfigError."""
    if not os.path.isfile(path):
        raise ConfigError(f"no checkpoint at {path}")
    payload = safe_load(path, "checkpoint", map_location)
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
    problem = check_payload(payload)
    if problem:
        raise ConfigError(f"{path}: damaged checkpoint: {problem}")
    return payload


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _finite_tensors(obj):
    """The first path (a string) inside ``obj`` to a tensor with NaN/Inf, or None."""
    if isinstance(obj, torch.Tensor):
        return "" if obj.is_floating_point() and not torch.isfinite(obj).all() else None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        inner = _finite_tensors(value)
        if inner is not None:
            return f"{key}.{inner}" if inner else str(key)
    return None


def check_payload(p: dict):
    """What is wrong with a checkpoint's contents (one phrase), or None.

    The counters: ``epoch`` (epochs done) and ``step`` (steps into the next one) are integers
    >= 0, ``history`` holds one record per epoch done, numbered 1..epoch with finite ELBOs;
    weights are finite tensors; the optimizer state is a dict per parameter, not empty once
    training has stepped (every optimizer pyvae builds keeps state); the random states have
    their types; ``partial`` (the sums of an interrupted epoch) goes with ``step`` > 0.
    """
    for key in ("vae_config", "trainer_config", "extra_config"):
        if p[key] is not None and not isinstance(p[key], dict):
            return f"{key} is {type(p[key]).__name__}, not a dict"
    if not isinstance(p["trainer_config"], dict):
        return "trainer_config is missing"
    epoch, step, history = p["epoch"], p["step"], p["history"]
    if not _count(epoch):
        return f"epoch {epoch!r} is not an integer >= 0"
    if not _count(step):
        return f"step {step!r} is not an integer >= 0"
    epochs = p["trainer_config"].get("epochs")
    if _count(epochs) and epoch > epochs:
        return f"epoch {epoch} is beyond the run's {epochs} epochs"
    if not isinstance(history, list):
        return f"history is {type(history).__name__}, not a list"
    if len(history) != epoch:
        return f"history holds {len(history)} records for {epoch} epochs"
    for i, record in enumerate(history):
        if not isinstance(record, dict) or record.get("epoch") != i + 1:
            return f"history record {i + 1} is not the record of epoch {i + 1}"
        if not _number(record.get("train_elbo")) or not (
                record.get("valid_elbo") is None or _number(record.get("valid_elbo"))):
            return f"history record {i + 1} has no finite train_elbo/valid_elbo"
    state = p["model_state"]
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        return "model_state is not a dict of named tensors"
    bad = _finite_tensors(state)
    if bad is not None:
        return f"weight {bad} holds NaN or Inf"
    optim = p["optim_state"]
    if not isinstance(optim, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("state"), dict)
            and isinstance(v.get("param_groups"), list) for k, v in optim.items()):
        return "optim_state is not a dict of per-parameter states"
    if (epoch > 0 or step > 0) and not any(v["state"] for v in optim.values()):
        return "optim_state is empty after training steps (the optimizer would start afresh)"
    bad = _finite_tensors(optim)
    if bad is not None:
        return f"optimizer state {bad} holds NaN or Inf"
    rng = p["rng"]
    if not isinstance(rng, dict) or not isinstance(rng.get("torch"), torch.Tensor) \
            or rng["torch"].dtype != torch.uint8 or not _python_state_ok(rng.get("python")):
        return "rng is not a torch and a Python random state"
    partial = p.get("partial")
    if partial is not None and not (isinstance(partial, dict) and step > 0 and all(
            _number(partial.get(k)) for k in ("loss", "seconds"))):
        return "partial (an interrupted epoch's sums) is damaged"
    return None


def _python_state_ok(state) -> bool:
    try:
        random.Random().setstate(_python_state_from_plain(state))
    except (TypeError, ValueError, OverflowError):
        return False
    return True


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


def is_run_dir(path: str) -> bool:
    """Whether ``path`` holds a run's checkpoint."""
    return os.path.isfile(os.path.join(path, CHECKPOINT))
