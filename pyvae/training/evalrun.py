"""Evaluating a run directory (``pyvae evaluate``): resumable, interruptible, nothing lost.

log p(x) is estimated batch by batch (``batch_size`` datapoints at a time). After every batch
the per-datapoint results so far, and the random state, go to ``RUN_DIR/eval-progress.pt``
(atomically); SIGINT or SIGTERM stops at the end of the current batch, and running the same
command again continues where it stopped, to the numbers an uninterrupted run gives. The run directory is locked while it is evaluated (one writer).
"""
import math
import os
import signal
import threading
import time

import pyro
import torch

from ..data import load_split
from ..errors import ConfigError, TrainingInterrupted
from ..infer import evaluate
from ..limits import check_at_most, check_seed
from .checkpoint import atomic_write, get_rng_state, load_checkpoint, set_rng_state, write_json

PROGRESS = "eval-progress.pt"
RESULT = "eval.json"
FIELDS = ("value", "stderr", "ess", "elbo", "elbo_stderr")


def load_vae(run_dir: str, device="cpu"):
    """(vae, checkpoint payload) of a run directory; ConfigError if they do not fit."""
    from ..models.vae import VAE

    path = os.path.join(run_dir, "checkpoint.pt")
    if not os.path.isdir(run_dir) or not os.path.isfile(path):
        raise ConfigError(f"{run_dir} is not a pyvae run directory (no checkpoint.pt)")
    payload = load_checkpoint(path, map_location=device)
    if payload["vae_config"] is None:
        raise ConfigError(f"{run_dir}: the run used custom components; evaluate it from Python "
                          "with pyvae.evaluate.log_likelihood(vae.model, vae.guide, x)")
    try:
        vae = VAE.from_config(payload["vae_config"])
    except TypeError as e:
        raise ConfigError(f"{run_dir}: the checkpoint's model config is damaged: {e}") from None
    try:
        vae.load_state_dict(payload["model_state"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise ConfigError(f"{run_dir}: checkpoint does not fit the model: {str(e).splitlines()[0]}") from None
    return vae.to(device).eval(), payload


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
    value, stderr, ess, elbo, elbo_se = (torch.cat(parts[f]) for f in FIELDS)
    return evaluate.LogLikelihood(value, stderr, num_samples, ess=ess, elbo=elbo,
                                  elbo_stderr=elbo_se), status["saved_ok"]


def evaluate_run(run_dir: str, num_samples: int = 5000, split: str = "test", seed: int = 0,
                 batch_size: int = 100, chunk_size=None, max_datapoints=None, device="cpu",
                 data_dir=None, download: bool = True, progress: bool = True, log=print) -> dict:
    """Evaluate a run (see the module doc); returns the result dict (not yet written)."""
    from .trainer import resolve_device

    check_seed(seed)
    check_at_most("num_samples", num_samples)
    device = resolve_device(device)
    vae, payload = load_vae(run_dir, device)
    data = load_split(payload["extra_config"], split, data_dir, download)
    data.check_for(vae.likelihood, vae.x_dim)
    n = len(data) if max_datapoints is None else min(len(data), int(max_datapoints))
    data = data.to(device)
    # the held-out splits are binarized once when loaded; "train" with dynamic binarization is
    # drawn here, seeded, so that the numbers repeat
    x = data.batch(torch.arange(n, device=device), torch.Generator(device).manual_seed(seed))
    pyro.clear_param_store()
    key = {"split": split, "num_samples": int(num_samples), "seed": int(seed), "n": n,
           "batch_size": int(batch_size), "chunk_size": chunk_size, "epoch": payload["epoch"], "step": payload["step"]}
    started = time.perf_counter()
    ll, _ = log_likelihood_resumable(run_dir, vae, x, key, num_samples, seed, batch_size,
                                     chunk_size, progress=progress, log=log)
    seconds = time.perf_counter() - started
    units = evaluate.active_units(vae.guide, x)
    kl = evaluate.kl_to_prior(vae.guide, x, model=vae.model, num_samples=10)
    try:  # per-dimension KL is defined only for a guide that factorizes over dimensions
        kl_dims = evaluate.kl_per_dimension(vae.guide, x, model=vae.model).tolist()
    except ConfigError:
        kl_dims = None
    s = ll.summary()
    return {
        "split": split, "num_datapoints": n, "num_samples": num_samples,
        "seed": seed, "epoch": payload["epoch"],
        "log_px": s["log_px"], "log_px_stderr": s["log_px_stderr"], "nll": -s["log_px"],
        "bits_per_dim": -s["log_px"] / (vae.x_dim * math.log(2)),
        "elbo": s["elbo"], "elbo_stderr": s["elbo_stderr"], "gap": s["log_px"] - s["elbo"],
        "ess_mean": s["ess_mean"], "ess_min": s["ess_min"],
        "active_units": units["num_active"], "z_dim": vae.z_dim, "kl": float(kl),
        "kl_per_dimension": kl_dims,
        "seconds": seconds,
    }


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
