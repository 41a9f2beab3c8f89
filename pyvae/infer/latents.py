"""How the latent code is used: active units, per-dimension KL and KL(q(z|x) || p(z)), for any
Pyro model/guide pair whose latent site is ``"z"`` (or another named site).
"""
from typing import Callable, Dict, Optional

import torch

import pyro.poutine as poutine

from ..errors import ConfigError
from .weights import check_x as _check_x


def posterior_mean(q, num_samples: int = 100) -> torch.Tensor:
    """E_q[z], a point summary of a distribution q(z|x): its mean in closed form where it has one
    (Gaussians), else the average of ``num_samples`` draws (flows have no closed-form mean).

    Args:
        q: a torch distribution over z, batch shape (N,) and event shape (z_dim,).
        num_samples: draws averaged where q has no closed-form mean.

    Returns:
        (N, z_dim) tensor: E_q[z] for each of the N datapoints.
    """
    try:
        return q.mean
    except NotImplementedError:
        return q.sample((num_samples,)).mean(0)


def _latent_site(trace, site, where):
    node = trace.nodes.get(site)
    if node is None or node["type"] != "sample":
        raise ConfigError(f"the {where} has no sample site {site!r}")
    return node


def _factorized(fn, site, where):
    """The elementwise base of a distribution with independent coordinates (Independent(...))."""
    base = fn
    while isinstance(base, torch.distributions.Independent):
        base = base.base_dist
    if base.event_shape != ():
        raise ConfigError(
            f"per-dimension KL needs a factorized {where} at site {site!r} (an Independent of "
            f"scalar distributions); got {type(fn).__name__} with a joint event")
    return base


def active_units(guide: Callable, x: torch.Tensor, threshold: float = 0.01, site: str = "z",
                 num_samples: int = 100, batch_size: int = 1000) -> Dict[str, object]:
    """Active units (Burda et al., 2016): latent dimension j is active if
    Cov_x(E_q[z_j | x]) > threshold.

    E_q[z|x] is the distribution's mean where it has one in closed form, else a Monte-Carlo
    average of ``num_samples`` draws (e.g. for flows).

    Args:
        guide: a Pyro guide of ``x`` with a sample site ``site``.
        x: (N, ...) tensor of data; the variance is taken over its N rows.
        threshold: a dimension is active when Var_x E_q[z_j|x] exceeds it (0.01 in Burda et
            al., for z in the units of the prior's standard deviation).
        site: the name of the latent sample site in the guide.
        num_samples: draws per datapoint for E_q[z|x] where q has no closed-form mean.
        batch_size: rows of x per call of the guide.

    Returns:
        a dict: ``num_active`` (int), ``variance`` ((z_dim,) float64 tensor of
        Var_x E_q[z_j|x]), ``active`` ((z_dim,) bool tensor, ``variance > threshold``).
    """
    x = _check_x(x)
    means = []
    with torch.no_grad(), poutine.block():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size]
            node = _latent_site(poutine.trace(guide).get_trace(xb), site, "guide")
            mean = posterior_mean(node["fn"], num_samples)
            means.append(mean.reshape(xb.shape[0], -1).to(torch.float64))
    mu = torch.cat(means)
    variance = mu.var(0, unbiased=False) if mu.shape[0] > 1 else torch.zeros_like(mu[0])
    active = variance > threshold
    return {"num_active": int(active.sum()), "variance": variance, "active": active}


def kl_per_dimension(guide: Callable, x: torch.Tensor, prior=None, model: Optional[Callable] = None,
                     site: str = "z", num_samples: int = 100, batch_size: int = 1000) -> torch.Tensor:
    """Average over x of KL(q(z_j|x) || p(z_j)) for each latent dimension j, shape (z_dim,).

    The prior is ``prior`` (a distribution over z) or, given ``model``, the model's ``site``
    distribution. Closed form where torch knows the KL of the coordinates' distributions, else a
    Monte-Carlo average of log q(z_j|x) - log p(z_j) over ``num_samples`` draws. Both q and p must
    factorize over dimensions (the KL of a joint q does not split into per-dimension terms).

    Args:
        guide: a Pyro guide of ``x`` with a sample site ``site`` whose distribution is an
            ``Independent`` of scalar distributions.
        x: (N, ...) tensor of data; the KL is averaged over its N rows.
        prior: p(z) as a torch distribution with independent coordinates (give this or
            ``model``).
        model: a Pyro model whose ``site`` distribution, replayed on the guide's z, is p(z)
            (give this or ``prior``).
        site: the name of the latent sample site in the guide (and the model).
        num_samples: draws per datapoint for the Monte-Carlo KL where no closed form exists.
        batch_size: rows of x per call of the guide.

    Returns:
        (z_dim,) float64 tensor: KL in nats per datapoint for each dimension; its sum is
        KL(q(z|x) || p(z)) averaged over x.
    """
    x = _check_x(x)
    if (prior is None) == (model is None):
        raise ConfigError("give exactly one of prior= (a distribution) or model= (a Pyro model)")
    total, count = None, 0
    with torch.no_grad(), poutine.block():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size]
            guide_trace = poutine.trace(guide).get_trace(xb)
            q = _latent_site(guide_trace, site, "guide")["fn"]
            if model is not None:
                model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(xb)
                p = _latent_site(model_trace, site, "model")["fn"]
            else:
                p = prior
            q_base, p_base = _factorized(q, site, "guide"), _factorized(p, site, "prior")
            try:
                kl = torch.distributions.kl_divergence(q_base, p_base)
            except NotImplementedError:
                z = q_base.sample((num_samples,))
                kl = (q_base.log_prob(z) - p_base.log_prob(z)).mean(0)
            kl = kl.expand(q_base.batch_shape).reshape(xb.shape[0], -1).to(torch.float64)
            total = kl.sum(0) if total is None else total + kl.sum(0)
            count += xb.shape[0]
    return total / count


def kl_to_prior(guide: Callable, x: torch.Tensor, model: Callable, site: str = "z",
                num_samples: int = 100, batch_size: int = 1000) -> torch.Tensor:
    """Average over x of KL(q(z|x) || p(z)) at ``site``, for any guide (flows included).

    Monte Carlo over the guide's own draws: KL = E_q[log q(z|x) - log p(z)], with p(z) the
    model's distribution at ``site`` (replayed on the guide's z, so a prior that depends on
    nothing but parameters is scored exactly).

    Args:
        guide: a Pyro guide of ``x`` with a sample site ``site``.
        x: (N, ...) tensor of data; the KL is averaged over its N rows.
        model: a Pyro model whose distribution at ``site`` is p(z).
        site: the name of the latent sample site in the guide and the model.
        num_samples: draws per datapoint (one pass over x per draw).
        batch_size: rows of x per call of the guide.

    Returns:
        a scalar float64 tensor: KL in nats per datapoint.
    """
    x = _check_x(x)
    total, count = torch.zeros((), dtype=torch.float64), 0
    with torch.no_grad(), poutine.block():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size]
            for _ in range(num_samples):
                guide_trace = poutine.trace(guide).get_trace(xb)
                q_site = _latent_site(guide_trace, site, "guide")
                model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(xb)
                p_site = _latent_site(model_trace, site, "model")
                z = q_site["value"]
                # the guide scores its own sample (flows without inverses use their cache)
                diff = q_site["fn"].log_prob(z) - p_site["fn"].log_prob(z)
                total += diff.to(torch.float64).sum()
            count += xb.shape[0]
    return total / (count * num_samples)
