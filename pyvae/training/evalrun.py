"""Evaluating a run directory (``Run.evaluate``, ``pyvae evaluate``): resumable, interruptible,
nothing lost.

log p(x) is estimated batch by batch (``batch_size`` datapoints at a time), each batch seeded
from (seed, its first row) (``evaluate.batch_seed``), so its numbers depend on nothing that ran
before. After every batch the per-datapoint results so far go to ``RUN_DIR/eval-progress.pt``
(atomically); SIGINT or SIGTERM stops at the end of the current batch, and running the same
command again continues where it stopped, to the numbers an uninterrupted run gives.

With ``--distributed`` (``evaluate_sharded``, ``ais_sharded``) each process evaluates a
contiguous run of whole batches, with the same per-batch seeds, and the per-datapoint results
are gathered: the numbers of one process. No progress file is kept then; rank 0 alone holds the
run directory's lock (``locked``) and writes eval.json.
"""
import contextlib
import os

import torch

from ..errors import ConfigError, TrainingInterrupted
from ..infer import evaluate
from .checkpoint import EVAL, EVAL_PROGRESS, atomic_write, write_json
from .rundir import RunDir
from .signals import StopSignals

PROGRESS, RESULT = EVAL_PROGRESS, EVAL
FIELDS = ("value", "stderr", "ess", "elbo", "elbo_stderr", "khat")


def _load_progress(path: str, key: dict):
    if not os.path.isfile(path):
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None  # damaged: start again
    if not isinstance(saved, dict) or saved.get("key") != key:
        return None  # another evaluation's: start again
    if any(not isinstance(saved.get(f), torch.Tensor) for f in FIELDS):
        return None
    return saved


def log_likelihood_resumable(run_dir, vae, x, key, num_samples, seed, batch_size, chunk_size,
                             progress=True, log=print):
    """Per-datapoint log p(x) of ``x``, continuing from ``RUN_DIR/eval-progress.pt`` if it
    matches ``key``; returns a ``LogLikelihood`` and whether every progress save succeeded.

    Each batch is seeded from (``seed``, its first row), as in ``evaluate.log_likelihood`` with
    that seed, so a continued evaluation skips the finished batches and gives the same numbers
    as one that was never stopped; no random state needs keeping.
    """
    path = os.path.join(run_dir, PROGRESS)
    saved = _load_progress(path, key)
    parts = {f: [] if saved is None else [saved[f]] for f in FIELDS}
    done = 0 if saved is None else int(saved["value"].shape[0])
    if done:
        log(f"continuing from {done} of {len(x)} datapoints done ({path})")
    status = {"saved_ok": True}

    def hook(start, result):
        if result is None:  # before a batch: skip the finished ones
            return start < done
        for f, t in zip(FIELDS, result):
            parts[f].append(t.detach().cpu())
        end = min(len(x), start + batch_size)
        state = {"key": key, **{f: torch.cat(parts[f]) for f in FIELDS}}
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

    if done < len(x):
        with StopSignals() as stop:  # noqa: F841 (read by hook)
            evaluate.log_likelihood(vae.model, vae.guide, x, num_samples=num_samples,
                                    chunk_size=chunk_size, batch_size=batch_size,
                                    progress=progress, batch_hook=hook, seed=seed)
    value, stderr, ess, elbo, elbo_se, khat = (torch.cat(parts[f]) for f in FIELDS)
    return evaluate.LogLikelihood(value, stderr, num_samples, ess=ess, elbo=elbo,
                                  elbo_stderr=elbo_se, khat=khat), status["saved_ok"]


def evaluate_sharded(ctx, vae, x, num_samples, seed, batch_size, chunk_size, progress=False):
    """``evaluate.log_likelihood(..., seed=seed)`` of all of x, this process computing its
    ``ctx.batch_shard`` of whole batches (the others skipped), the rows gathered on every rank."""
    lo, hi = ctx.batch_shard(len(x), batch_size)
    fields = [torch.empty(0, dtype=torch.float64) for _ in FIELDS]
    if lo < hi:
        ll = evaluate.log_likelihood(vae.model, vae.guide, x, num_samples=num_samples,
                                     chunk_size=chunk_size, batch_size=batch_size,
                                     progress=progress, seed=seed,
                                     batch_hook=lambda start, result: not lo <= start < hi)
        fields = [ll.value, ll.stderr, ll.ess, ll.elbo, ll.elbo_stderr, ll.khat]
    value, stderr, ess, elbo, elbo_se, khat = ctx.gather_rows(fields)
    return evaluate.LogLikelihood(value, stderr, num_samples, ess=ess, elbo=elbo,
                                  elbo_stderr=elbo_se, khat=khat)


def ais_sharded(ctx, vae, x, num_steps, num_chains, seed, batch_size, progress=False):
    """``evaluate.ais`` of all of x with ``seed`` (batch i seeded with seed + i), this process
    running its ``ctx.batch_shard`` of whole batches; the per-datapoint fields gathered (not
    the chains' log-weights)."""
    lo, hi = ctx.batch_shard(len(x), batch_size)
    fields = [torch.empty(0, dtype=torch.float64) for _ in range(5)]
    if lo < hi:
        est = evaluate.ais(vae.model, vae.guide, x[lo:hi], num_steps=num_steps,
                           num_chains=num_chains, seed=seed + lo // batch_size,
                           batch_size=batch_size, progress=progress)
        fields = [est.value, est.stderr, est.ess, est.acceptance, est.step_size]
    value, stderr, ess, acceptance, step = ctx.gather_rows(fields)
    return evaluate.AISEstimate(value, stderr, num_chains, ess=ess, acceptance=acceptance,
                                step_size=step, num_steps=num_steps)


@contextlib.contextmanager
def locked(run_dir: str, ctx=None):
    """The run directory's writer lock for an evaluation (not while it trains); with ``ctx``
    rank 0 alone takes it and the others learn whether it did (its error, on every rank)."""
    if ctx is None:
        with RunDir(run_dir, resume=True):
            yield
        return
    handle, error = None, None
    if ctx.is_main:
        try:
            handle = RunDir(run_dir, resume=True)
        except ConfigError as e:
            error = str(e)
    errors = [None] * ctx.world_size
    torch.distributed.all_gather_object(errors, error)
    if errors[0] is not None:
        raise ConfigError(errors[0])
    try:
        yield
    finally:
        if handle is not None:
            handle.close()


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
