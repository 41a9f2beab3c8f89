"""Non-amortized variational inference: one q_i(z) per datapoint, refined from the encoder.

An amortized guide shares one network over all x; its ELBO falls short of log p(x) by
KL(q(z|x) || p(z|x)), the inference gap. Cremer, Li & Duvenaud (2018) split it in two:

    approximation gap  log p(x) - max_{q in family} ELBO(q)        (the family's limit)
    amortization gap   max_{q in family} ELBO(q) - ELBO(q(z|x))    (the encoder's shortfall)

``refine`` estimates the max over the family: every datapoint gets its own parameters (loc and a
scale or Cholesky factor), initialised from the encoder's output, and SVI with ``Trace_ELBO``
optimises them while the model stays fixed. The result is a Pyro guide with the usual site
names ("data" plate, "z"), to be evaluated like any other guide on the same batch x.
"""
import math
import warnings
from contextlib import contextmanager
from typing import Optional

import torch
from torch import nn
from torch.distributions import Distribution, Independent, LowRankMultivariateNormal, Normal

import pyro
import pyro.distributions as dist
import pyro.optim
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO

from ..errors import ConfigError, TrainingDiverged

REFINE_FAMILIES = ("diagonal", "full-rank")


class RefinedGuide(nn.Module):
    """Per-datapoint Gaussians q_i(z) for one fixed batch x of N datapoints.

    ``guide(x)`` is a Pyro guide: inside plate "data" of size N it samples "z" from
    N(loc_i, diag scale_i^2) ("diagonal") or N(loc_i, L_i L_i^T) ("full-rank"). It must be
    called with the batch it was refined on (the parameters belong to those rows).

    Attributes:
        history: ELBO per datapoint (nats, one Monte-Carlo estimate) after each SVI step.
    """

    def __init__(self, x: torch.Tensor, family: str, loc: torch.Tensor, cov: torch.Tensor):
        super().__init__()
        if family not in REFINE_FAMILIES:
            raise ConfigError(f"unknown refinement family {family!r}; choose one of: "
                              f"{', '.join(REFINE_FAMILIES)}")
        self.family = family
        self.register_buffer("x", x.detach())
        self.loc = nn.Parameter(loc.detach().clone())
        if family == "diagonal":
            # scale = exp(log_scale), from the marginal variances of the initial q
            self.log_scale = nn.Parameter(0.5 * cov.diagonal(dim1=-2, dim2=-1).log().detach())
        else:
            # L = diag(s) (I + M), M strictly lower: row i of L is s_i times a unit-diagonal row, so
            # a step on M changes correlations relative to each z_i's own scale. (With L's raw
            # entries as parameters, Adam moves every off-diagonal entry by ~lr in absolute units:
            # far more than the small posterior scales of the active units, and refinement ends
            # below the encoder it started from.) Stored as log s on the diagonal, M below it.
            tril = _cholesky(cov.detach())
            scale = tril.diagonal(dim1=-2, dim2=-1)
            self.scale_raw = nn.Parameter(
                (tril / scale.unsqueeze(-1)).tril(-1) + torch.diag_embed(scale.log()))
        self.history = []

    def distribution(self, path_gradient: bool = False) -> Distribution:
        """q_i(z) for all rows: batch shape (N,), event shape (z_dim,).

        With ``path_gradient``, ``log_prob`` sees the parameters detached (see ``_PathGradient``).
        """
        q = self._gaussian(self.loc, getattr(self, "log_scale", None), getattr(self, "scale_raw", None))
        if not path_gradient:
            return q
        detached = self._gaussian(*(None if p is None else p.detach() for p in (
            self.loc, getattr(self, "log_scale", None), getattr(self, "scale_raw", None))))
        return _PathGradient(q, detached)

    def _gaussian(self, loc, log_scale, scale_raw):
        if self.family == "diagonal":
            return dist.Normal(loc, log_scale.exp()).to_event(1)
        scale = scale_raw.diagonal(dim1=-2, dim2=-1).exp()
        eye = torch.eye(scale.shape[-1], dtype=scale.dtype, device=scale.device)
        scale_tril = scale.unsqueeze(-1) * (scale_raw.tril(-1) + eye)
        return dist.MultivariateNormal(loc, scale_tril=scale_tril)

    def forward(self, x: torch.Tensor, path_gradient: bool = False) -> None:
        if x.shape != self.x.shape or not torch.equal(x, self.x):
            raise ConfigError(f"this refined guide belongs to the batch of {self.x.shape[0]} "
                              f"datapoints it was refined on; call it with that batch")
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.distribution(path_gradient))


class _PathGradient(dist.TorchDistribution):
    """Samples from q, scores with q's parameters detached: the "sticking the landing" gradient
    (Roberts, Wu & Duvenaud 2017). The ELBO's value is unchanged; its gradient loses the score
    term E_q[d log q / d phi] = 0, which is pure noise, so at the exact posterior every sample's
    gradient is zero and SVI can settle there instead of jittering around it."""

    arg_constraints = {}
    has_rsample = True

    def __init__(self, q, q_detached):
        self.q, self.q_detached = q, q_detached
        super().__init__(q.batch_shape, q.event_shape, validate_args=False)

    @property
    def support(self):
        return self.q.support

    def rsample(self, sample_shape=torch.Size()):
        return self.q.rsample(sample_shape)

    def log_prob(self, value):
        return self.q_detached.log_prob(value)

    def expand(self, batch_shape, _instance=None):
        return _PathGradient(self.q.expand(batch_shape), self.q_detached.expand(batch_shape))


def refine(model, x: torch.Tensor, init=None, family: str = "diagonal", steps: int = 500,
           lr: float = 1e-2, lr_final: Optional[float] = None, particles: int = 1,
           path_gradient: bool = True, seed: Optional[int] = None,
           validate: bool = False) -> RefinedGuide:
    """Fit per-datapoint q_i(z) to the posterior of a fixed model by SVI (Trace_ELBO).

    Args:
        model: a Pyro model ``model(x)`` with plate "data" over x's rows and latent site "z"
            (e.g. ``vae.model``). Its parameters are held fixed: they are hidden from the
            optimiser and do not require gradients during refinement.
        x: the batch, shape (N, x_dim).
        init: where to start: a guide family (``vae.encoder``), any callable ``x -> q(z|x)``, a
            distribution with batch shape (N,) and event shape (z_dim,), or None for N(0, I).
            Gaussians start at their own mean and covariance; other distributions (flows) at
            the mean and covariance of 256 of their samples.
        family: "diagonal" or "full-rank".
        steps: SVI steps.
        lr: Adam learning rate, decayed exponentially to ``lr_final`` (default ``lr / 100``).
            Adam's steps stay about ``lr`` in size however noisy the gradient, so without the
            decay the per-datapoint parameters jitter around the optimum instead of settling.
        particles: samples of z per datapoint per step (vectorised).
        path_gradient: drop the zero-mean score term from the gradient estimate ("sticking the
            landing"): same ELBO and expected gradient, much less noise near the optimum.
        seed: if given, seeds Pyro/torch before the first step.
        validate: keep Pyro's distribution argument checks on (slow; off by default, as in
            ``Trainer``).

    Returns:
        A ``RefinedGuide``: call it as a Pyro guide with the same x.
    """
    if family not in REFINE_FAMILIES:
        raise ConfigError(f"unknown refinement family {family!r}; choose one of: "
                          f"{', '.join(REFINE_FAMILIES)}")
    if int(steps) < 0 or int(particles) < 1:
        raise ConfigError(f"need steps >= 0 and particles >= 1, got {steps} and {particles}")
    lr_final = lr / 100 if lr_final is None else lr_final
    if not (lr > 0 and lr_final > 0 and math.isfinite(lr) and math.isfinite(lr_final)):
        raise ConfigError(f"learning rates must be positive, got lr={lr}, lr_final={lr_final}")
    if x.dim() != 2:
        raise ConfigError(f"x must have shape (N, x_dim), got {tuple(x.shape)}")
    if seed is not None:
        pyro.set_rng_seed(seed)
    n = x.shape[0]
    store = pyro.get_param_store()
    # a private parameter store: the model's pyro.module/pyro.param calls register there and
    # leave the caller's store (e.g. a Trainer's) untouched
    with store.scope():
        with torch.no_grad():
            trace = poutine.trace(model).get_trace(x)
        if "z" not in trace.nodes:
            raise ConfigError("the model has no sample site named 'z'")
        z = trace.nodes["z"]["value"]
        loc, cov = _initial_moments(init, x, z.shape[-1], z.dtype)
        guide = RefinedGuide(x, family, loc, cov)
        frozen = [site["value"].unconstrained() for site in trace.nodes.values()
                  if site["type"] == "param"]
        fixed_model = poutine.block(model, hide_types=["param"])

        def train_guide(x):
            pyro.module("refined", guide)
            guide(x, path_gradient)

        # ClippedAdam's lrd multiplies the learning rate by lrd after every step
        decay = (lr_final / lr) ** (1.0 / max(int(steps), 1))
        optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": decay})
        svi = SVI(fixed_model, train_guide, optim,
                  Trace_ELBO(num_particles=int(particles), vectorize_particles=int(particles) > 1))
        with _no_grad_for(frozen), pyro.validation_enabled(validate), warnings.catch_warnings():
            # pyro.module warns about every frozen parameter it skips: expected here
            warnings.filterwarnings("ignore", message=".*was not registered in the param store")
            for step in range(int(steps)):
                loss = svi.step(x)
                if not math.isfinite(loss):
                    raise TrainingDiverged(f"refinement loss became {loss} at step {step + 1}; "
                                           "try a lower lr")
                guide.history.append(-loss / n)
    return guide


@contextmanager
def _no_grad_for(tensors):
    """Turn off requires_grad on the model's parameters for the duration, then restore it."""
    previous = [t.requires_grad for t in tensors]
    try:
        for t in tensors:
            t.requires_grad_(False)
        yield
    finally:
        for t, flag in zip(tensors, previous):
            t.requires_grad_(flag)


@torch.no_grad()
def _initial_moments(init, x, z_dim, dtype, samples=256):
    """Mean (N, d) and covariance (N, d, d) of the initial q for every row of x."""
    n = x.shape[0]
    if init is None:
        loc = torch.zeros(n, z_dim, dtype=dtype, device=x.device)
        return loc, torch.eye(z_dim, dtype=dtype, device=x.device).expand(n, z_dim, z_dim)
    q = init if isinstance(init, Distribution) else init(x)
    if not isinstance(q, Distribution):
        raise ConfigError(f"init must be a distribution or a callable x -> distribution, got "
                          f"{type(init).__name__}")
    if tuple(q.batch_shape) != (n,) or tuple(q.event_shape) != (z_dim,):
        raise ConfigError(f"init distribution has batch {tuple(q.batch_shape)}, event "
                          f"{tuple(q.event_shape)}; expected ({n},), ({z_dim},)")
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal) and q.reinterpreted_batch_ndims == 1:
        loc, cov = q.mean, torch.diag_embed(q.variance)
    elif isinstance(q, (torch.distributions.MultivariateNormal, LowRankMultivariateNormal)):
        loc, cov = q.mean, q.covariance_matrix
    else:
        draws = q.sample((samples,))
        loc = draws.mean(0)
        centred = draws - loc
        cov = torch.einsum("sni,snj->nij", centred, centred) / (samples - 1)
    return loc.to(dtype), cov.to(dtype)


def _cholesky(cov):
    """Cholesky factor, with growing jitter if a sample covariance is not quite positive definite."""
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    jitter = 0.0
    for _ in range(6):
        factor, info = torch.linalg.cholesky_ex(cov + jitter * eye)
        if not info.any():
            return factor
        jitter = 1e-6 if jitter == 0 else 10 * jitter
    raise ConfigError("the initial covariance is not positive definite")
