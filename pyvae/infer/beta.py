"""β-weighting and KL warm-up of the latent site: a training objective that is *not* the ELBO.

Scaling the log-densities of site "z" by β in both model and guide turns the Trace_ELBO loss into

    loss_β = -E_q[log p(x|z)] + β E_q[log q(z|x) - log p(z)]

(β times the Monte-Carlo KL estimate; with TraceMeanField_ELBO, β times the analytic KL). β = 1 is
the negative ELBO; β > 1 is the β-VAE (Higgins et al. 2017); β rising linearly from 0 to 1 over
the first epochs is KL warm-up (Bowman et al. 2016; Sønderby et al. 2016). Only training uses it:
``Trainer`` reports the true ELBO (scale 1) for validation.
"""
from typing import Callable

from pyro.poutine.messenger import Messenger



class SiteScale(Messenger):
    """Multiply the log-density of one named sample site by ``scale`` (which may be changed
    between calls by assigning ``.scale``).

    ``pyro.poutine.scale`` scales every site in its context and refuses scale 0 (pointing to
    ``poutine.mask``); here only the latent site is scaled, the observed "x" is not, and β = 0 at
    the start of a warm-up is allowed (log q and log p of z then drop out of the loss).
    """

    def __init__(self, site: str, scale: float = 1.0):
        super().__init__()
        self.site = site
        self.scale = scale

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and msg["name"] == self.site:
            msg["scale"] = self.scale * msg["scale"]


def scale_site(fn: Callable, scaler: SiteScale) -> Callable:
    """``fn`` run under ``scaler`` (a model or guide whose latent site is to be β-weighted)."""
    def scaled(*args, **kwargs):
        with scaler:
            return fn(*args, **kwargs)

    scaled.__name__ = getattr(fn, "__name__", "scaled")
    return scaled


def kl_weight(beta: float, kl_warmup: float, epoch: int, step: int, steps: int) -> float:
    """β at ``step`` (0-based, of ``steps``) of ``epoch`` (0-based): β · min(1, t / kl_warmup) with
    t = epoch + step / steps the epochs done so far; just β without warm-up."""
    if not kl_warmup:
        return float(beta)
    return float(beta) * min(1.0, (epoch + step / steps) / kl_warmup)
