"""Evaluating a run directory (``Run.evaluate``, ``pyvae evaluate``): resumable, interruptible,
nothing lost.

log p(x) is estimated batch by batch (``batch_size`` datapoints at a time). After every batch
the per-datapoint results so far, and the random state, go to ``RUN_DIR/eval-progress.pt``
(atomically); SIGINT or SIGTERM stops at the end of the current batch, and running the same
command again continues where it stopped, to the numbers an uninterrupted run gives.
"""
import os
import signal
import threading

import pyro
import torch

from ..errors import ConfigError, TrainingInterrupted
from ..infer import evaluate
from .checkpoint import EVAL, EVAL_PROGRESS, atomic_write, get_rng_state, set_rng_state, write_json

PROGRESS, RESULT = EVAL_PROGRESS, EVAL
FIELDS = ("value", "stderr", "ess", "elbo", "elbo_stderr", "khat")


class _Stop:
    """SIGINT/SIGTERM set a flag (in the main thread); the loop stops at the end of a block."""

    def __init__(self):
        self.signum, self.previous = None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signal.Signals(signum)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def _load_progress(path: str, key: dict):
    if not os.path.isfile(path):
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None  # damaged: start again
    if not isinstance(saved, dict) or saved.get("key") != key:
        return None  # another evaluation's: start again
    if any(not isinstance(saved.get(f), torch.Tensor) for f in FIELDS) or "rng" not in saved:
        return None
    return saved


def log_likelihood_resumable(run_dir, vae, x, key, num_samples, seed, batch_size, chunk_size,
                             progress=True, log=print):
    """Per-datapoint log p(x) of ``x``, continuing from ``RUN_DIR/eval-progress.pt`` if it
    matches ``key``; returns a ``LogLikelihood`` and whether every progress save succeeded.

    One random stream, seeded once, runs through the batches as in an uninterrupted
    ``evaluate.log_likelihood``; the progress file keeps its state after each batch, so a
    continued evaluation gives the same numbers as one that was never stopped.
    """
    path = os.path.join(run_dir, PROGRESS)
    saved = _load_progress(path, key)
    parts = {f: [] if saved is None else [saved[f]] for f in FIELDS}
    done = 0 if saved is None else int(saved["value"].shape[0])
    if done:
        log(f"continuing from {done} of {len(x)} datapoints done ({path})")
    status = {"saved_ok": True}

    def hook(start, result):
        if result is None:  # before a batch: skip the finished ones, restore the stream after them
            if start < done:
                return True
            if start == done and saved is not None:
                set_rng_state(saved["rng"])
            return False
        for f, t in zip(FIELDS, result):
            parts[f].append(t.detach().cpu())
        end = min(len(x), start + batch_size)
        state = {"key": key, "rng": get_rng_state(), **{f: torch.cat(parts[f]) for f in FIELDS}}
        try:
            atomic_write(path, lambda fh: torch.save(state, fh))
        except OSError as e:
            if status["saved_ok"]:
                log(f"warning: cannot save evaluation progress ({e.strerror}); going on")
            status["saved_ok"] = False
        if stop.signum is not None and end < len(x):
            kept = "progress saved" if status["saved_ok"] else "progress could NOT be saved"
            raise TrainingInterrupted(stop.signum, (
                f"stopped by {stop.signum.name} after {end} of {len(x)} datapoints; {kept}, "
                "run the same command again to continue"))
        return False

    pyro.set_rng_seed(seed)
    if done == len(x):  # all done before: the stream as it was after the last batch
        set_rng_state(saved["rng"])
    else:
        with _Stop() as stop:  # noqa: F841 (read by hook)
            evaluate.log_likelihood(vae.model, vae.guide, x, num_samples=num_samples,
                                    chunk_size=chunk_size, batch_size=batch_size,
                                    progress=progress, batch_hook=hook)
    value, stderr, ess, elbo, elbo_se, khat = (torch.cat(parts[f]) for f in FIELDS)
    return evaluate.LogLikelihood(value, stderr, num_samples, ess=ess, elbo=elbo,
                                  elbo_stderr=elbo_se, khat=khat), status["saved_ok"]


def write_result(run_dir: str, result: dict) -> str:
    """eval.json; then the progress file goes. A full disk is a one-line error, the progress
    file (and the printed table) keep the work."""
    path = os.path.join(run_dir, RESULT)
    try:
        write_json(path, result)
    except OSError as e:
        raise ConfigError(f"could not write {path} ({e.strerror}); the results are printed "
                          f"above and the per-datapoint ones kept in {PROGRESS}") from None
    try:
        os.unlink(os.path.join(run_dir, PROGRESS))
    except FileNotFoundError:
        pass
    return path
