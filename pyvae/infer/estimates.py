"""Per-datapoint Monte-Carlo estimates and their standard errors: what the evaluation
(``pyvae.infer.evaluate``) and AIS (``pyvae.infer.ais``) return. A leaf of ``pyvae.infer``: it
imports neither."""
import math
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch

from .psis import KHAT_THRESHOLD


@dataclass
class Estimate:
    """A per-datapoint Monte-Carlo estimate.

    Attributes:
        value: (N,) float64 estimates.
        stderr: (N,) their Monte-Carlo standard errors (NaN where one sample gives none).
        num_samples: samples of z per datapoint.
    """

    value: torch.Tensor
    stderr: torch.Tensor
    num_samples: int

    @property
    def mean(self) -> float:
        """Mean over datapoints (nats per datapoint)."""
        return float(self.value.mean())

    @property
    def mean_stderr(self) -> float:
        """Standard error of ``mean`` (datapoints' errors are independent)."""
        return float(self.stderr.pow(2).sum().sqrt() / self.value.numel())

    def summary(self) -> Dict[str, float]:
        return {"mean": self.mean, "stderr": self.mean_stderr, "num_samples": self.num_samples,
                "num_datapoints": int(self.value.numel())}


@dataclass
class LogLikelihood(Estimate):
    """The importance-weighted estimate log p^(x) per datapoint, with by-products.

    Attributes:
        value: (N,) log p^(x) = logsumexp_k log w_k - log K (float64).
        stderr: (N,) delta-method standard error of log p^(x): with normalised weights,
            Var[log p^] ~= Var(w) / (K mean(w)^2) = (K / ESS - 1) / (K - 1).
        num_samples: K, importance samples per datapoint.
        ess: (N,) effective sample size (sum w)^2 / sum w^2, between 1 and K.
        elbo: (N,) mean of log w over the same K samples: a K-sample estimate of the ELBO.
        elbo_stderr: (N,) its standard error, std(log w) / sqrt(K).
        khat: (N,) Pareto k^ of the K weights (``pyvae.infer.psis``): above 0.7 the estimate, its
            stderr and ESS are unreliable for that datapoint (NaN for constant weights).
    """

    ess: torch.Tensor = field(default=None)
    elbo: torch.Tensor = field(default=None)
    elbo_stderr: torch.Tensor = field(default=None)
    khat: torch.Tensor = field(default=None)

    @property
    def log_px(self) -> torch.Tensor:
        return self.value

    def summary(self) -> Dict[str, float]:
        out = {"log_px": self.mean, "log_px_stderr": self.mean_stderr,
               "num_samples": self.num_samples, "num_datapoints": int(self.value.numel()),
               "ess_mean": float(self.ess.mean()), "ess_min": float(self.ess.min())}
        if self.khat is not None:
            fitted = self.khat[~torch.isnan(self.khat)]  # NaN: too few or constant weights
            out["khat_max"] = float(fitted.max()) if fitted.numel() else None
            out["khat_over_0.7"] = int((self.khat > KHAT_THRESHOLD).sum())
        if self.elbo is not None:
            out["elbo"] = float(self.elbo.mean())
            out["elbo_stderr"] = float(self.elbo_stderr.pow(2).sum().sqrt() / self.elbo.numel())
        return out


@dataclass
class Gaps:
    """log p^(x) - ELBO per datapoint, split when a refined (non-amortized) guide is given:

        total = log p(x) - ELBO(q_amortized)
              = [log p(x) - ELBO(q_refined)]  +  [ELBO(q_refined) - ELBO(q_amortized)]
                 approximation gap                amortization gap

    All tensors have shape (N,); the ``*_refined`` and split fields are None without a refined guide.
    The ``*_stderr`` properties are the Monte-Carlo standard errors of the per-datapoint gaps
    (the two estimates' errors are independent: their squares add).

    Attributes:
        log_px: the estimate of log p(x) the gaps are measured from (nats per datapoint): the
            IW estimate, per datapoint the better-proposed one of the guide's and the refined
            guide's, or the AIS estimate.
        elbo: the amortized guide's ELBO, from the same draws as its IW estimate.
        elbo_refined: the refined guide's ELBO (None without a refined guide).
        log_px_iw: the guide's own IW estimate when ``log_px`` is another one (None otherwise).
        ais_start: with AIS, what started it: "guide", or "prior" for a guide that cannot
            score arbitrary z (None without AIS).
        log_px_refined: the IW estimate from the refined guide's draws (None without one).
    """

    log_px: Estimate
    elbo: Estimate
    elbo_refined: Optional[Estimate] = None
    log_px_iw: Optional[Estimate] = None  # the guide's IW estimate, when log_px is another
    ais_start: Optional[str] = None  # with AIS: "guide", or "prior" for a guide that cannot score z
    log_px_refined: Optional[Estimate] = None  # the IW estimate from the refined guide's draws

    @property
    def total(self) -> torch.Tensor:
        return self.log_px.value - self.elbo.value

    @property
    def approximation(self) -> Optional[torch.Tensor]:
        return None if self.elbo_refined is None else self.log_px.value - self.elbo_refined.value

    @property
    def amortization(self) -> Optional[torch.Tensor]:
        return None if self.elbo_refined is None else self.elbo_refined.value - self.elbo.value

    @property
    def approximation_stderr(self) -> Optional[torch.Tensor]:
        return None if self.elbo_refined is None else \
            self.log_px.stderr.hypot(self.elbo_refined.stderr)

    @property
    def amortization_stderr(self) -> Optional[torch.Tensor]:
        return None if self.elbo_refined is None else self.elbo_refined.stderr.hypot(self.elbo.stderr)

    def summary(self) -> Dict[str, float]:
        out = {"log_px": self.log_px.mean, "log_px_stderr": self.log_px.mean_stderr,
               "elbo": self.elbo.mean, "elbo_stderr": self.elbo.mean_stderr,
               "total_gap": float(self.total.mean())}
        if self.log_px_iw is not None:
            out.update(log_px_iw=self.log_px_iw.mean, log_px_iw_stderr=self.log_px_iw.mean_stderr)
        if self.elbo_refined is not None:
            out.update(elbo_refined=self.elbo_refined.mean,
                       elbo_refined_stderr=self.elbo_refined.mean_stderr,
                       approximation_gap=float(self.approximation.mean()),
                       approximation_gap_stderr=_mean_stderr(self.approximation_stderr),
                       amortization_gap=float(self.amortization.mean()),
                       amortization_gap_stderr=_mean_stderr(self.amortization_stderr))
        return out


def _mean_stderr(stderr: torch.Tensor) -> float:
    """Standard error of the mean over datapoints of independent per-datapoint estimates."""
    return float(stderr.pow(2).sum().sqrt() / stderr.numel())


def delta_method_stderr(ess: torch.Tensor, k: int) -> torch.Tensor:
    """Standard error of log (1/k) sum_k w_k by the delta method, from the weights' ESS:
    sqrt((k / ESS - 1) / (k - 1)) (the sample variance of w over its squared mean, over k);
    NaN for k = 1."""
    if k < 2:
        return torch.full_like(ess, math.nan)
    return ((k / ess - 1.0).clamp(min=0.0) / (k - 1)).sqrt()
