"""Per-datapoint evaluation of any Pyro model/guide pair: the ELBO, importance-weighted bounds,
the log-likelihood estimate, the gaps between them, active units and per-dimension KL.

Nothing here knows the ``VAE`` class. A model is a Pyro function ``model(x)``, a guide a Pyro
function ``guide(x)``, and both put every sample site inside a plate named ``"data"`` over the
first dimension of ``x``. With z_k ~ q(z|x) and the log importance weight

    log w_k(x) = log p(x, z_k) - log q(z_k | x),

    ELBO(x)    = E_q[log w]                                   (mean over samples)
    IWAE_k(x)  = E[log (1/k) sum_{i<=k} w_i]                  (k-sample bound)
    log p^(x)  = logsumexp_k log w_k - log K                  (the estimate, K large)

and ELBO <= IWAE_k <= IWAE_k' <= log p(x) for k <= k' (Burda et al., 2016).

Memory: ``log_likelihood`` draws ``chunk_size`` samples for ``batch_size`` datapoints per call
of the guide and model, so the decoder's output, ``chunk_size x batch_size x x_dim`` floats
(plus one or two temporaries of that size in the likelihood's log-density), is the peak.
The default keeps ``chunk_size x batch_size`` near ``default_rows(device)``: on the CPU small
enough that a chunk's decoder output and its temporaries stay in the processor's cache (4,000
rows: 12.5 MB per 784-pixel float32 tensor; elementwise passes over larger chunks wait on
memory), on other devices larger, for fewer kernel launches.
"""
import contextlib
import itertools
import math
from typing import Callable, Optional

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
# AIS and BDMC live in their own module; they are part of this module's interface too
from .ais import (NUM_CHAINS, AISEstimate, BDMCResult, GuideCannotScore, ais, bdmc,  # noqa: F401
                  prior_guide)
from .batches import iter_batches, num_rows
from .estimates import Estimate, Gaps, LogLikelihood, delta_method_stderr  # noqa: F401
from .progress import progress_disabled
from .latents import active_units, kl_per_dimension, kl_to_prior  # noqa: F401 (pyvae.evaluate.*)
from ..limits import check_count
from .psis import pareto_khat_from_top, tail_length
from .weights import (DATA_PLATE, PARTICLE_PLATE, Batch, batches,  # noqa: F401
                      check_x as _check_x, joint_log_weights, log_weights, max_plate_nesting)

#: importance samples K per datapoint of an evaluation when none is given (``pyvae evaluate``)
NUM_SAMPLES = 5000
#: datapoints per pass of an evaluation when none is given (``pyvae evaluate --batch-size``)
BATCH_SIZE = 100
#: samples x datapoints drawn per guide/model call when ``chunk_size`` is not given, on the CPU
ROWS_PER_CHUNK = 4_000
#: the same on other devices (CUDA)
ROWS_PER_CHUNK_ACCELERATOR = 20_000


def default_rows(device) -> int:
    """Samples x datapoints per chunk when ``chunk_size`` is not given, on ``device``.

    Args:
        device: a ``torch.device`` or its name ("cpu", "cuda:0"): ``ROWS_PER_CHUNK`` on the
            CPU, ``ROWS_PER_CHUNK_ACCELERATOR`` elsewhere.
    """
    return ROWS_PER_CHUNK if torch.device(device).type == "cpu" else ROWS_PER_CHUNK_ACCELERATOR

__all__ = ["Estimate", "LogLikelihood", "Gaps", "log_likelihood", "joint_log_likelihood", "elbo",
           "iwae_bound", "gaps", "active_units", "kl_per_dimension", "log_weights", "max_plate_nesting", "ais", "bdmc",
           "AISEstimate", "BDMCResult", "batch_seed"]


# ------------------------------------------------------------------------------ streaming
class _Accumulator:
    """Running sums over samples of log w for each datapoint, in float64.

    Keeps m = max log w so far, s1 = sum exp(log w - m), s2 = sum exp(2 (log w - m)) (a streaming
    logsumexp: when m grows, the sums are rescaled by exp(m_old - m_new)), and shifted sums of
    log w and (log w)^2 for the ELBO's mean and variance.
    """

    def __init__(self, n: int, device, keep_top: int = 0):
        kw = dict(dtype=torch.float64, device=device)
        self.keep_top = keep_top  # the largest log w so far, for Pareto k^
        self.top = torch.empty(0, n, **kw)
        self.m = torch.full((n,), -math.inf, **kw)
        self.s1 = torch.zeros(n, **kw)
        self.s2 = torch.zeros(n, **kw)
        self.shift = None
        self.sum = torch.zeros(n, **kw)
        self.sum_sq = torch.zeros(n, **kw)
        self.count = 0

    def update(self, lw: torch.Tensor) -> None:
        m_new = torch.maximum(self.m, lw.max(0).values)
        ref = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        rescale = torch.exp(self.m - ref)
        w = torch.exp(lw - ref)
        self.s1 = self.s1 * rescale + w.sum(0)
        self.s2 = self.s2 * rescale.square() + w.square().sum(0)
        self.m = m_new
        if self.shift is None:  # shifted sums avoid cancellation in the variance
            self.shift = lw.mean(0)
            self.shift = torch.where(torch.isfinite(self.shift), self.shift, torch.zeros_like(self.shift))
        d = lw - self.shift
        self.sum += d.sum(0)
        self.sum_sq += d.square().sum(0)
        self.count += lw.shape[0]
        if self.keep_top:
            both = torch.cat([self.top, lw])
            self.top = torch.topk(both, min(self.keep_top, both.shape[0]), dim=0).values

    def log_mean_exp(self):
        k = self.count
        ref = torch.where(torch.isfinite(self.m), self.m, torch.zeros_like(self.m))
        value = ref + torch.log(self.s1) - math.log(k)
        ess = self.s1.square() / self.s2
        return value, delta_method_stderr(ess, k), ess

    def mean(self):
        k = self.count
        mean = self.sum / k
        if k > 1:
            var = ((self.sum_sq - k * mean.square()) / (k - 1)).clamp(min=0.0)
            stderr = (var / k).sqrt()
        else:
            stderr = torch.full_like(mean, math.nan)
        return self.shift + mean, stderr


def _check_counts(num_samples, chunk_size, batch_size):
    check_count("num_samples", num_samples)
    if chunk_size is not None:
        check_count("chunk_size", chunk_size)
    check_count("batch_size", batch_size)


def _chunks(total: int, chunk: int):
    done = 0
    while done < total:
        size = min(chunk, total - done)
        yield size
        done += size


def batch_seed(seed: int, start: int) -> int:
    """The seed of the batch of datapoints that starts at row ``start``, from the evaluation's
    ``seed``: a mix of the two numbers (numpy's ``SeedSequence``), 32 bits as
    ``pyro.set_rng_seed`` takes. Distinct batches get unrelated streams.

    Args:
        seed: the evaluation's seed (its low 32 bits are used).
        start: the index of the batch's first row in the evaluated data.

    Returns:
        an integer in [0, 2**32).
    """
    return int(np.random.SeedSequence([int(seed) & 0xFFFF_FFFF, int(start)])
               .generate_state(1, np.uint32)[0])


def _streamed(data, batch_size: int):
    """The batches of a Dataset, DataLoader or stream as ``Batch``es over consecutive rows."""
    start = 0
    for xb in iter_batches(data, batch_size):
        xb = _check_x(xb)
        yield Batch(xb, None, range(start, start + xb.shape[0]))
        start += xb.shape[0]


def _stream(model, guide, x, num_samples, chunk_size, batch_size, progress, desc, per_batch,
            batch_hook=None, seed=None):
    """Run ``per_batch(accumulate)`` over datapoint batches, feeding log-weight chunks to it.

    ``batch_hook(start, None)`` is called before each batch (a true result skips it) and
    ``batch_hook(start, result)`` after it: how a long evaluation saves progress and resumes.
    With an int ``seed``, the global random streams are seeded with ``batch_seed(seed, start)``
    before the batch starting at row ``start``: its draws depend on nothing that ran before.
    """
    _check_counts(num_samples, chunk_size, batch_size)
    if isinstance(x, torch.Tensor):  # the guide's plate decides how x is cut (weights.batches)
        x = _check_x(x)
        total = x.shape[0]
        plan = iter(batches(guide, x, min(batch_size, total)))
    else:  # a Dataset, DataLoader or stream: its batches as they come, each covering its rows
        total = num_rows(x)
        plan = _streamed(x, batch_size)
    first = next(plan, None)
    if first is None:
        raise ConfigError("the data yielded no batches")
    device = first.x.device
    if chunk_size is None:  # (the first batch's size: batch_size, or all of a smaller x)
        chunk_size = max(1, min(num_samples, default_rows(device) // first.x.shape[0]))
    results = []
    with torch.no_grad():
        nesting = max_plate_nesting(first.wrap(model), first.wrap(guide), first.x)
        bar = tqdm(total=total, desc=desc, unit="x", disable=progress_disabled(progress),
                   leave=False, dynamic_ncols=True)
        with bar:
            for batch in itertools.chain([first], plan):
                start = batch.rows.start
                if batch_hook is not None and batch_hook(start, None):  # skip: done before
                    bar.update(len(batch.rows))
                    continue
                if seed is not None:
                    pyro.set_rng_seed(batch_seed(seed, start))

                checked = []  # set once the batch's first chunk has run

                def draw(particles, batch=batch, checked=checked):
                    # Pyro's checks (x in the likelihood's support, valid parameters) run on the
                    # batch's first chunk as the switch says; the other chunks score the same x
                    # with the same model and run unchecked (they cost ~20% otherwise)
                    with pyro.validation_enabled(False) if checked else contextlib.nullcontext():
                        lw = log_weights(batch.wrap(model), batch.wrap(guide), batch.x, particles,
                                         nesting)[0]
                    checked.append(True)
                    return batch.keep(lw)

                results.append(per_batch(draw, len(batch.rows), device, chunk_size))
                if batch_hook is not None:
                    batch_hook(start, results[-1])
                bar.update(len(batch.rows))
    return results


# ------------------------------------------------------------------------------ estimators
def log_likelihood(model: Callable, guide: Callable, x, num_samples: int = NUM_SAMPLES,
                   chunk_size: Optional[int] = None, batch_size: int = BATCH_SIZE,
                   progress: Optional[bool] = None, batch_hook: Optional[Callable] = None,
                   seed: Optional[int] = None) -> LogLikelihood:
    """Importance-weighted estimate of log p(x) per datapoint, with standard error and ESS.

        log p^(x) = logsumexp_{k<=K} [log p(x, z_k) - log q(z_k|x)] - log K,   z_k ~ q(z|x)

    Consistent as K grows, and a lower bound in expectation (IWAE_K). Samples are drawn
    ``chunk_size`` at a time for ``batch_size`` datapoints at a time; log-weights are reduced with
    a streaming logsumexp in float64. Runs on x's device. Peak memory is about
    ``chunk_size * batch_size * x_dim`` floats for the decoder output (times the likelihood's
    temporaries); ``chunk_size`` defaults to ``default_rows(x.device) // batch_size``.

    Args:
        model: a Pyro model of ``x`` with a ``"data"`` plate over its first dimension.
        guide: a Pyro guide of ``x`` with the same plate.
        x: (N, ...) data: a tensor, a map-style ``Dataset`` (taken in order, ``batch_size``
            rows at a time), a ``DataLoader`` or an iterable of batches (its own batches, as
            they come: data larger than memory stream through). See ``pyvae.infer.batches``.
        num_samples: K, importance samples per datapoint.
        chunk_size: samples drawn per call of the guide and the model (None:
            ``default_rows(device) // batch_size``, at most K); memory grows with
            ``chunk_size * batch_size``, the result does not depend on it beyond the random
            numbers drawn.
        batch_size: datapoints per call of the guide and the model.
        progress: show a tqdm bar over datapoints (None: where a terminal is attached).
        batch_hook: called as ``batch_hook(start, None)`` before the batch at row ``start`` (a
            true result skips it) and ``batch_hook(start, result)`` after it.
        seed: None draws from the global random streams as they stand, one stream through all
            batches; an int seeds each batch from ``(seed, start)`` (``batch_seed``), so a
            batch's numbers depend only on the seed, its first row, ``batch_size`` and
            ``chunk_size``: not on what ran before, nor on which batches were skipped.

    Returns:
        a ``LogLikelihood`` (per-datapoint value, stderr, ess, the K-sample ELBO, and the
        Pareto k^ of the K weights, from the M + 1 largest kept while streaming).
    """
    def per_batch(draw, n, device, chunk):
        acc = _Accumulator(n, device, keep_top=tail_length(num_samples) + 1)
        for size in _chunks(num_samples, chunk):
            acc.update(draw(size))
        value, stderr, ess = acc.log_mean_exp()
        elbo_mean, elbo_se = acc.mean()
        khat = pareto_khat_from_top(acc.top.T, num_samples)
        return value, stderr, ess, elbo_mean, elbo_se, khat

    parts = _stream(model, guide, x, num_samples, chunk_size, batch_size, progress,
                    f"log p(x), K={num_samples}", per_batch, batch_hook, seed)
    value, stderr, ess, elbo_mean, elbo_se, khat = (torch.cat(p) for p in zip(*parts))
    return LogLikelihood(value, stderr, num_samples, ess=ess, elbo=elbo_mean, elbo_stderr=elbo_se,
                         khat=khat)


def joint_log_likelihood(model: Callable, guide: Callable, x: torch.Tensor,
                         num_samples: int = 1000, chunk_size: Optional[int] = None,
                         progress: Optional[bool] = None) -> LogLikelihood:
    """Importance-weighted estimate of log p(x_1, ..., x_N) for the rows of x as a whole:

        log p^(X) = logsumexp_{k<=K} [log p(X, Z_k) - log q(Z_k|X)] - log K,   Z_k ~ q(Z|X),

    with Z all rows' latents drawn together. For a guide whose q couples the datapoints (an
    ``AutoContinuous`` guide: ``AutoDiagonalNormal``, ``AutoMultivariateNormal``,
    ``AutoLowRankMultivariateNormal``, ``AutoIAFNormal`` draw one vector for all rows), which
    has no per-datapoint estimate; it equals sum_n log p(x_n) for a model of independent rows.
    The guide must cover x as fitted (all rows, in order); the weights live in a space of all
    rows' latents, so K must grow with N for the same accuracy (watch ``ess`` and ``khat``).

    Args:
        model: a Pyro model of ``x``.
        guide: a Pyro guide of ``x`` that draws all rows' latents at once, fitted on these
            rows.
        x: (N, ...) tensor: the rows the guide was fitted on, in the same order.
        num_samples: K, joint draws Z_k of all N rows' latents.
        chunk_size: draws per call of the guide and the model (None: about
            ``default_rows(device) // N``).
        progress: show a tqdm bar over the chunks (None: where a terminal is attached).

    Returns:
        a ``LogLikelihood`` whose tensors have one entry, the batch's: value, stderr, ess, the
        K-sample ELBO of the batch and the Pareto k^ of the K weights.
    """
    x = _check_x(x)
    _check_counts(num_samples, chunk_size, 1)
    if chunk_size is None:
        chunk_size = max(1, min(num_samples, default_rows(x.device) // x.shape[0]))
    acc = _Accumulator(1, x.device, keep_top=tail_length(num_samples) + 1)
    with torch.no_grad():
        nesting = max_plate_nesting(model, guide, x, joint=True)
        for size in tqdm(list(_chunks(num_samples, chunk_size)), desc=f"log p(X), K={num_samples}",
                         disable=progress_disabled(progress), leave=False,
                         dynamic_ncols=True):
            acc.update(joint_log_weights(model, guide, x, size, nesting)[:, None])
    value, stderr, ess = acc.log_mean_exp()
    elbo_mean, elbo_se = acc.mean()
    khat = pareto_khat_from_top(acc.top.T, num_samples)
    return LogLikelihood(value, stderr, num_samples, ess=ess, elbo=elbo_mean, elbo_stderr=elbo_se,
                         khat=khat)


def elbo(model: Callable, guide: Callable, x, num_samples: int = 1,
         chunk_size: Optional[int] = None, batch_size: int = BATCH_SIZE,
         progress: Optional[bool] = None) -> Estimate:
    """ELBO(x) = E_q[log p(x, z) - log q(z|x)] per datapoint, averaged over ``num_samples`` draws.

    The standard error is std(log w) / sqrt(num_samples) (NaN for one sample).

    Args:
        model: a Pyro model of ``x`` with a ``"data"`` plate over its first dimension.
        guide: a Pyro guide of ``x`` with the same plate.
        x: (N, ...) data, as for ``log_likelihood``: a tensor, a map-style ``Dataset``, a
            ``DataLoader`` or an iterable of batches.
        num_samples: draws z ~ q(z|x) per datapoint averaged into each ELBO.
        chunk_size: draws per call of the guide and the model (None: about
            ``default_rows(device) // batch_size``).
        batch_size: datapoints per call of the guide and the model.
        progress: show a tqdm bar over datapoints (None: where a terminal is attached).

    Returns:
        an ``Estimate``: (N,) float64 ELBO in nats per datapoint and its (N,) standard error.
    """
    def per_batch(draw, n, device, chunk):
        acc = _Accumulator(n, device)
        for size in _chunks(num_samples, chunk):
            acc.update(draw(size))
        return acc.mean()

    parts = _stream(model, guide, x, num_samples, chunk_size, batch_size, progress,
                    "ELBO", per_batch)
    value, stderr = (torch.cat(p) for p in zip(*parts))
    return Estimate(value, stderr, num_samples)


def iwae_bound(model: Callable, guide: Callable, x: torch.Tensor, k: int, repeats: int = 1,
               chunk_size: Optional[int] = None, batch_size: int = BATCH_SIZE,
               progress: Optional[bool] = None) -> Estimate:
    """The k-sample importance-weighted bound per datapoint, averaged over ``repeats`` draws:

        IWAE_k(x) = E[ logsumexp_{i<=k} log w_i - log k ],   IWAE_1 = ELBO <= IWAE_k <= log p(x)

    Each repeat uses k fresh samples; the standard error is the spread over repeats / sqrt(repeats)
    (NaN for one repeat). Chunks hold a whole number of k-groups.

    Args:
        model: a Pyro model of ``x`` with a ``"data"`` plate over its first dimension.
        guide: a Pyro guide of ``x`` with the same plate.
        x: (N, ...) data, as for ``log_likelihood``.
        k: importance samples inside each logsumexp (k = 1 is the ELBO).
        repeats: independent k-sample bounds averaged per datapoint (k * repeats draws in all).
        chunk_size: draws per call of the guide and the model, rounded down to whole groups of
            k (None: about ``default_rows(device) // batch_size``).
        batch_size: datapoints per call of the guide and the model.
        progress: show a tqdm bar over datapoints (None: where a terminal is attached).

    Returns:
        an ``Estimate``: (N,) float64 IWAE_k in nats per datapoint, its (N,) standard error,
        and ``num_samples`` = k * repeats.
    """
    check_count("k", k)
    check_count("repeats", repeats)

    def per_batch(draw, n, device, chunk):
        groups_per_chunk = max(1, chunk // k)
        acc = _Accumulator(n, device)
        for groups in _chunks(repeats, groups_per_chunk):
            lw = draw(groups * k).reshape(groups, k, n)
            acc.update(torch.logsumexp(lw, dim=1) - math.log(k))
        return acc.mean()

    parts = _stream(model, guide, x, k * repeats, chunk_size, batch_size, progress,
                    f"IWAE_{k}", per_batch)
    value, stderr = (torch.cat(p) for p in zip(*parts))
    return Estimate(value, stderr, k * repeats)


def gaps(model: Callable, guide: Callable, x: torch.Tensor, num_samples: int = NUM_SAMPLES,
         elbo_samples: int = 100, refined_guide: Optional[Callable] = None,
         chunk_size: Optional[int] = None, batch_size: int = BATCH_SIZE,
         progress: Optional[bool] = None, ais_steps: Optional[int] = None,
         ais_chains: int = NUM_CHAINS,
         seed: Optional[int] = None) -> Gaps:
    """The inference gap log p(x) - ELBO(q) per datapoint (Cremer et al., 2018).

    log p(x) is the importance-weighted estimate with ``num_samples`` draws from ``guide``, and
    the amortized ELBO the mean of the same draws' log-weights (no extra cost). Given
    ``refined_guide`` (any Pyro guide of x, e.g. ``pyvae.refine``'s, with per-datapoint
    variational parameters optimised for these x), the gap splits into the approximation gap
    log p(x) - ELBO(refined) and the amortization gap ELBO(refined) - ELBO(guide). The refined
    guide's ``elbo_samples`` draws give its ELBO and a second IW estimate of log p(x), kept in
    ``Gaps.log_px_refined``; log p(x) is then, per datapoint, the IW estimate of the guide
    whose weights have the larger effective sample size per draw, ESS / K (the better
    proposal: from a poor amortized guide the IW estimate can fall below the refined ELBO,
    which would make the approximation gap negative). The choice looks at the ESS, not at the
    estimates themselves, so it does not favour whichever estimate the noise lifted. The
    guide's own estimate is kept in ``Gaps.log_px_iw``. A non-amortized guide is called on
    batches of ``batch_size`` consecutive rows of x (``pyvae.refine``'s accept that).

    With ``ais_steps``, log p(x) is instead the AIS estimate from the guide (``ais_chains``
    chains, ``seed``), which stays close to log p(x) where the IW estimate's ESS collapses; the
    IW estimates are then kept in ``Gaps.log_px_iw`` and ``Gaps.log_px_refined``. A guide that
    cannot score arbitrary z (a flow without an inverse) cannot start AIS; the prior starts it
    then (``Gaps.ais_start``).

    Args:
        model: a Pyro model of ``x`` with a ``"data"`` plate over its first dimension.
        guide: the amortized Pyro guide of ``x``, with the same plate.
        x: (N, ...) tensor of data.
        num_samples: K, draws from ``guide`` per datapoint: its IW estimate of log p(x) and,
            from the same draws, its ELBO.
        elbo_samples: draws from ``refined_guide`` per datapoint: its ELBO and its IW estimate.
        refined_guide: a Pyro guide of these x with per-datapoint parameters (``pyvae.refine``);
            None: no split.
        chunk_size: samples per call of a guide and the model (None: about
            ``default_rows(device) // batch_size``).
        batch_size: datapoints per call of a guide and the model.
        progress: show tqdm bars (None: where a terminal is attached).
        ais_steps: take log p(x) from AIS with this many annealing steps (None or 0: from the
            IW estimates).
        ais_chains: AIS chains per datapoint.
        seed: seeds AIS's batches (``ais``; None: the global random streams).

    Returns:
        a ``Gaps``: per datapoint the total gap and, with ``refined_guide``, the approximation
        and amortization gaps (nats, with their standard errors), and the estimates they come
        from.
    """
    ll = log_likelihood(model, guide, x, num_samples, chunk_size, batch_size, progress)
    amortized = Estimate(ll.elbo, ll.elbo_stderr, num_samples)
    refined = ll_refined = None
    if refined_guide is not None:
        ll_refined = log_likelihood(model, refined_guide, x, elbo_samples, chunk_size, batch_size,
                                    progress)
        refined = Estimate(ll_refined.elbo, ll_refined.elbo_stderr, elbo_samples)
    if ais_steps:
        start, start_name = guide, "guide"
        try:
            log_px = ais(model, start, x, num_steps=ais_steps, num_chains=ais_chains,
                             progress=progress, seed=seed, batch_size=batch_size)
        except GuideCannotScore:
            start, start_name = prior_guide(model), "prior"
            log_px = ais(model, start, x, num_steps=ais_steps, num_chains=ais_chains,
                             progress=progress, seed=seed, batch_size=batch_size)
        return Gaps(log_px, amortized, refined, log_px_iw=ll, ais_start=start_name,
                    log_px_refined=ll_refined)
    if ll_refined is None:
        return Gaps(ll, amortized)
    better = ll_refined.ess / elbo_samples > ll.ess / num_samples
    log_px = Estimate(torch.where(better, ll_refined.value, ll.value),
                      torch.where(better, ll_refined.stderr, ll.stderr), num_samples)
    return Gaps(log_px, amortized, refined, log_px_iw=ll, log_px_refined=ll_refined)

