"""The evaluation of a trained run, as ``pyvae evaluate`` reports it: importance-weighted
log p(x) with its standard error, the ELBO, the gap, ESS, Pareto k, active units and KL, and
log p(x) by AIS; resumable (``pyvae.training.evalrun``) or shared over torchrun's processes."""
import time
from typing import Optional

import pyro
import torch

from ..devices import resolve_device
from ..errors import ConfigError
from ..infer import evaluate as _evaluate
from ..infer.ais import ais
from ..infer.ais import NUM_CHAINS as AIS_CHAINS, NUM_STEPS as AIS_STEPS
from ..infer.evaluate import BATCH_SIZE, NUM_SAMPLES
from ..limits import check_count, check_seed
from ..models.likelihoods import bits_per_dim
from ..training import evalrun
from ..training.checkpoint import tensor_digest



def evaluate_run(run, split: str = "test", num_samples: int = NUM_SAMPLES,
                 max_datapoints: Optional[int] = None, data_dir: Optional[str] = None,
                 seed: int = 0, device="cpu", chunk_size: Optional[int] = None,
                 batch_size: int = BATCH_SIZE, progress: Optional[bool] = None, download: bool = True,
                 write: bool = True, ais_steps: Optional[int] = None,
                 ais_chains: int = AIS_CHAINS, resumable: bool = False, log=print,
                 distributed=None) -> dict:
    """``evaluate_vae`` on the first ``max_datapoints`` of ``split`` of ``run`` (a ``pyvae.Run``;
    all datapoints by default): the keys of eval.json, which is written unless ``write=False``.

    With ``resumable``, the per-datapoint results are saved after every batch to
    ``eval-progress.pt`` in the run directory, SIGINT/SIGTERM stop after the current batch
    (``TrainingInterrupted``), and the same call continues where it stopped, to the numbers
    of an uninterrupted evaluation (``pyvae.training.evalrun``; ``log`` says so).

    ``distributed``: this process's ``pyvae.distributed.Distributed`` (under torchrun):
    each process evaluates its share of whole batches, the per-datapoint results are
    gathered, and every process returns the numbers of one process (``resumable`` is
    refused; rank 0 writes eval.json). Each batch is seeded from (seed, its first row), so
    the result depends on the seed, ``batch_size`` and ``chunk_size``, not on the process
    count or on what ran before."""
    check_seed(seed)
    check_count("num_samples", num_samples)
    check_count("batch_size", batch_size)
    for name, value in (("max_datapoints", max_datapoints), ("chunk_size", chunk_size)):
        if value is not None:
            check_count(name, value)
    if ais_steps is not None:
        check_count("ais_steps", ais_steps, minimum=0)  # 0: no AIS
    check_count("ais_chains", ais_chains)
    if distributed is not None and resumable:
        raise ConfigError("a distributed evaluation keeps no progress file: it cannot be "
                          "resumable")
    device = resolve_device(device)
    vae = run.load_vae(device)
    data = run.data(split, data_dir, download)
    data.check_for(vae.likelihood, vae.x_dim)
    n = len(data) if max_datapoints is None else min(len(data), int(max_datapoints))
    data = data.to(device)
    # the held-out splits are binarized once when loaded; "train" with dynamic binarization
    # is drawn here, seeded, so that the numbers repeat
    x = data.batch(torch.arange(n, device=device), torch.Generator(device).manual_seed(seed))
    estimate = None
    run.progress_kept = False  # whether eval-progress.pt holds every result (write_evaluation)
    if resumable:
        # with the weights' and the data's sha256, what decides the per-datapoint numbers
        settings = {"seeds": "per batch", "split": split, "num_samples": int(num_samples),
                    "seed": int(seed), "datapoints": n, "batch_size": int(batch_size),
                    "chunk_size": chunk_size, "device": device.type}

        def resumed():
            ll, run.progress_kept = evalrun.log_likelihood_resumable(
                run.path, vae, x, settings, num_samples, seed, batch_size, chunk_size, progress,
                log)
            return ll
        estimate = resumed
    # data_sha256: the datapoints evaluated (after binarization), so that results are compared
    # on the same data (``compare --runs``)
    result = {"split": split, "epoch": run.checkpoint["epoch"], "batch_size": int(batch_size),
              "chunk_size": chunk_size, "data_sha256": tensor_digest({"x": x.cpu()}),
              **evaluate_vae(vae, x, num_samples, seed, chunk_size, batch_size, progress,
                             ais_steps, ais_chains, estimate, distributed)}
    if write and (distributed is None or distributed.is_main):
        run.write_evaluation(result)
    return result


def evaluate_vae(vae, x: torch.Tensor, num_samples: int = NUM_SAMPLES, seed: int = 0,
                 chunk_size: Optional[int] = None, batch_size: int = BATCH_SIZE,
                 progress: Optional[bool] = False, ais_steps: Optional[int] = None,
                 ais_chains: int = AIS_CHAINS, estimate=None, distributed=None) -> dict:
    """The evaluation of a VAE on data x, as ``pyvae evaluate`` reports it.

    log p^(x) = logsumexp_k log w_k - log K with K = ``num_samples`` draws from the guide, each
    batch of ``batch_size`` datapoints seeded from (``seed``, its first row) (and its standard
    error); the ELBO as the mean of the same log w; gap = log p^(x) - ELBO;
    effective sample sizes; active units; KL(q(z|x) || p(z)) and, for a factorized guide, its
    per-dimension split; Pareto k of each datapoint's weights (``khat_max``, ``khat_over_0.7``).
    With ``ais_steps``, also log p^(x) by AIS from the guide (``ais_chains`` chains, seeded with
    ``seed``): ``ais_log_px``, its stderr, ``ais_minus_iw`` (mean per-datapoint difference),
    ``ais_unreliable`` (datapoints whose chain ESS is below ``MIN_CHAIN_ESS``),
    the acceptance rate and the time. Nats per datapoint; bits/dim = -log p^(x) / (x_dim log 2).
    Active units and KL are drawn after ``pyro.set_rng_seed(seed)``: nothing depends on the
    random state the call found. ``estimate``: a function returning the ``LogLikelihood`` in
    place of the plain seeded ``evaluate.log_likelihood`` (how ``Run.evaluate`` resumes).
    ``distributed``: a ``Distributed`` whose processes share the batches of log p(x) and of AIS
    (``pyvae.training.evalrun.evaluate_sharded``); the same numbers on every rank.
    Times: ``seconds`` is the importance-weighted estimate's, ``ais_seconds`` AIS's,
    ``total_seconds`` the whole evaluation's. The data are checked by the caller; the work runs
    without Pyro's argument validation (as training does), for speed.
    """
    begun = time.perf_counter()
    with pyro.validation_enabled(False):
        result = _evaluate_vae(vae, x, num_samples, seed, chunk_size, batch_size, progress,
                               ais_steps, ais_chains, estimate, distributed)
    result["total_seconds"] = time.perf_counter() - begun
    return result


def _evaluate_vae(vae, x, num_samples, seed, chunk_size, batch_size, progress, ais_steps,
                  ais_chains, estimate, distributed) -> dict:
    pyro.clear_param_store()
    started = time.perf_counter()
    if estimate is not None:
        ll = estimate()
    elif distributed is not None:
        ll = evalrun.evaluate_sharded(distributed, vae, x, num_samples, seed, batch_size,
                                      chunk_size, progress)
    else:
        ll = _evaluate.log_likelihood(vae.model, vae.guide, x, num_samples=num_samples,
                                      chunk_size=chunk_size, batch_size=batch_size,
                                      progress=progress, seed=seed)
    seconds = time.perf_counter() - started
    extra = {}
    if ais_steps:
        started = time.perf_counter()
        if distributed is not None:
            est = evalrun.ais_sharded(distributed, vae, x, ais_steps, ais_chains, seed,
                                      batch_size, progress)
        else:
            est = ais(vae.model, vae.guide, x, num_steps=ais_steps,
                                num_chains=ais_chains, seed=seed, batch_size=batch_size,
                                progress=progress)
        extra = {"ais_log_px": est.mean, "ais_log_px_stderr": est.mean_stderr,
                 "ais_steps": ais_steps, "ais_chains": ais_chains,
                 "ais_acceptance": float(est.acceptance.mean()),
                 "ais_unreliable": int(est.unreliable.sum()),
                 "ais_seconds": time.perf_counter() - started,
                 "ais_minus_iw": float((est.value - ll.value).mean())}
    pyro.set_rng_seed(seed)  # the draws below (flows' means, KL) follow the seed alone
    units = _evaluate.active_units(vae.guide, x)
    kl = _evaluate.kl_to_prior(vae.guide, x, model=vae.model, num_samples=10)
    try:  # per-dimension KL is defined only for a guide that factorizes over dimensions
        kl_dims = _evaluate.kl_per_dimension(vae.guide, x, model=vae.model).tolist()
    except ConfigError:
        kl_dims = None
    s = ll.summary()
    return {
        "num_datapoints": int(x.shape[0]), "num_samples": num_samples, "seed": seed,
        "log_px": s["log_px"], "log_px_stderr": s["log_px_stderr"], "nll": -s["log_px"],
        "bits_per_dim": bits_per_dim(-s["log_px"], vae.x_dim),
        "elbo": s["elbo"], "elbo_stderr": s["elbo_stderr"], "gap": s["log_px"] - s["elbo"],
        "ess_mean": s["ess_mean"], "ess_min": s["ess_min"],
        "khat_max": s["khat_max"], "khat_over_0.7": s["khat_over_0.7"],
        "active_units": units["num_active"], "z_dim": vae.z_dim, "kl": float(kl),
        "kl_per_dimension": kl_dims, "seconds": seconds, **extra,
    }
