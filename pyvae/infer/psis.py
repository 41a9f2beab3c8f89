"""Pareto-k diagnostic of importance weights (PSIS; Vehtari, Simpson, Gelman, Yao & Gabry).

The upper tail of the importance weights w = exp(log w) is fitted by a generalized Pareto
distribution (GPD) with density, for exceedances y = w - u above a threshold u,

    p(y | k, sigma) = (1 / sigma) (1 + k y / sigma)^(-1/k - 1),     y >= 0, sigma > 0.

The shape k tells how many moments the weights have: the variance exists for k < 1/2, the mean
for k < 1. PSIS's rule of thumb: k^ < 0.5 good, 0.5 to 0.7 usable, k^ > 0.7 the importance-
weighted estimate is unreliable (its error shrinks far more slowly than 1/sqrt(K), and its
reported standard error and ESS are meaningless). The tail holds the M = ceil(min(K / 5,
3 sqrt(K))) largest weights; the threshold u is the next largest.

k and sigma are estimated as Zhang & Stephens (2009) do, in the form PSIS uses: with
theta = -k / sigma, the profile log-likelihood of theta is

    l(theta) = n [log(-theta / k(theta)) - k(theta) - 1],   k(theta) = mean_i log(1 - theta y_i),

evaluated on m = 30 + floor(sqrt(n)) grid points theta_j = 1 / y_(n) + (1 - sqrt(m / (j - 1/2)))
/ (3 y_(floor(n/4 + 1/2))); the estimate is the posterior mean theta^ = sum_j theta_j w_j with
w_j proportional to exp l(theta_j); then k^ = -mean_i log(1 - theta^ y_i) (sign convention of
PSIS: k > 0 is a heavy tail), sigma^ = -k^ / theta^. Finally k^ is shrunk towards 1/2 by a weak
prior, k^ <- (n k^ + 10 * 0.5) / (n + 10), as in PSIS.

All functions are vectorised over leading dimensions and work in float64.
"""
import math

import torch

from ..errors import ConfigError

__all__ = ["gpd_fit", "pareto_khat", "pareto_khat_from_top", "tail_length", "KHAT_THRESHOLD"]

#: above this, importance-weighted estimates are unreliable (PSIS)
KHAT_THRESHOLD = 0.7


def gpd_fit(y: torch.Tensor, prior: bool = True):
    """Fit a generalized Pareto distribution to exceedances ``y`` (> 0) along the last dimension.

    Returns (k, sigma), each of shape ``y.shape[:-1]``, float64 (see the module docstring).
    ``prior=False`` skips the shrinkage of k towards 1/2.
    """
    y = torch.as_tensor(y, dtype=torch.float64)
    n = y.shape[-1]
    if n < 5:
        raise ConfigError(f"a generalized Pareto fit needs at least 5 exceedances, got {n}")
    y, _ = torch.sort(y, dim=-1)
    m = 30 + int(math.sqrt(n))
    j = torch.arange(1, m + 1, dtype=torch.float64, device=y.device)
    quartile = y[..., int(n / 4 + 0.5) - 1].unsqueeze(-1)
    theta = 1.0 / y[..., -1:] + (1.0 - torch.sqrt(m / (j - 0.5))) / (3.0 * quartile)  # (..., m)
    k_theta = torch.log1p(-theta.unsqueeze(-1) * y.unsqueeze(-2)).mean(-1)  # (..., m)
    profile = n * (torch.log(-theta / k_theta) - k_theta - 1.0)
    weights = torch.softmax(profile, dim=-1)
    theta_hat = (theta * weights).sum(-1)
    k = torch.log1p(-theta_hat.unsqueeze(-1) * y).mean(-1)
    sigma = -k / theta_hat
    if prior:
        k = (n * k + 10 * 0.5) / (n + 10)
    return k, sigma


def tail_length(num_samples: int) -> int:
    """M = ceil(min(K / 5, 3 sqrt(K))): how many of K weights form the fitted tail."""
    return int(math.ceil(min(0.2 * num_samples, 3.0 * math.sqrt(num_samples))))


def pareto_khat(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Pareto k^ of the importance weights exp(log_w) along ``dim``, one value per column.

    Works from the M + 1 largest log-weights (see ``pareto_khat_from_top``); NaN where the
    tail is degenerate (fewer than 5 distinct weights above the threshold, e.g. constant weights).
    """
    log_w = torch.as_tensor(log_w, dtype=torch.float64).movedim(dim, -1)
    k = log_w.shape[-1]
    top = torch.topk(log_w, min(k, tail_length(k) + 1), dim=-1).values
    return pareto_khat_from_top(top, k)


def pareto_khat_from_top(top: torch.Tensor, num_samples: int) -> torch.Tensor:
    """k^ from the largest log-weights ``top`` (last dimension, at least M + 1 of them, any
    order) of ``num_samples`` weights. The threshold is the (M + 1)-th largest."""
    m = tail_length(num_samples)
    top = torch.sort(torch.as_tensor(top, dtype=torch.float64), dim=-1, descending=True).values
    if top.shape[-1] < m + 1 or m < 5:
        return torch.full(top.shape[:-1], math.nan, dtype=torch.float64, device=top.device)
    top = top[..., :m + 1]
    shift = top[..., :1]
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    w = torch.exp(top - shift)
    y = w[..., :m] - w[..., m:m + 1]  # exceedances over the threshold
    degenerate = (y <= 0).any(-1) | ~torch.isfinite(y).all(-1)
    y = torch.where(degenerate.unsqueeze(-1), torch.ones_like(y) + torch.arange(
        m, dtype=y.dtype, device=y.device), y)  # placeholder, masked below
    k, _ = gpd_fit(y)
    return torch.where(degenerate, torch.full_like(k, math.nan), k)
