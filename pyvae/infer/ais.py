"""Annealed importance sampling (AIS) and bidirectional Monte Carlo (BDMC) for log p(x).

For any Pyro model/guide pair whose latent sites are continuous and inside plate ``"data"``.
AIS (Neal 2001) anneals from a start distribution q0(z) (the guide's q(z|x), or the prior with
``prior_guide(model)``) to the posterior p(z|x) = p(x, z) / p(x) through the targets

    f_t(z) = q0(z)^(1 - beta_t) p(x, z)^beta_t,     0 = beta_0 < beta_1 < ... < beta_T = 1,

with z_0 ~ q0 and, for t = 1..T,

    log w += (beta_t - beta_{t-1}) [log p(x, z_{t-1}) - log q0(z_{t-1})],
    z_t    ~ an HMC transition that leaves f_t / Z_t invariant (t < T).

Then E[w] = Z_T / Z_0 = p(x), so log p^(x) = log mean_c w_c over C independent chains is a
stochastic lower bound (E log p^ <= log p(x) by Jensen) that is consistent as T grows, even
where q0 is far from the posterior (Wu et al. 2017).

Run backwards from an exact posterior sample z_T ~ p(z|x), the same chain gives
E[w_rev] = Z_0 / Z_T = 1 / p(x), so -log mean_c w_rev is a stochastic *upper* bound. An exact
posterior sample is available for data simulated from the model: (z, x) ~ p(z) p(x|z). The
two bounds together are BDMC (Grosse, Ghahramani & Adams 2015); their gap bounds the error of
AIS with this schedule on data like the simulated data.

HMC works on unconstrained coordinates u = biject_to(support)^-1(z), so each target gains
log|det dz/du|. Every datapoint (and every chain) is an independent Markov chain: the
Metropolis accept/reject is per (chain, datapoint), and the leapfrog step size is per datapoint:
fitted before annealing to the start target (q0 forward, the posterior in reverse), where the
chains are exact draws, then adapted towards acceptance 0.65 as the targets narrow
(``pyvae.infer.hmc``). The beta schedule is sigmoidal (Grosse et al. 2015). Weights accumulate
in float64; the standard error is the jackknife over chains (``jackknife_stderr``).
"""
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import torch
from tqdm.auto import tqdm

import pyro
import pyro.poutine as poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import biject_to

from ..errors import ConfigError
from .estimates import Estimate
from .hmc import HMC, INITIAL_STEP
from ..limits import check_count
from .progress import progress_disabled
from .weights import (batches, check_x as _check_x, data_frame, enumerated, guide_sites,
                      max_plate_nesting, model_log_density, per_datapoint)

__all__ = ["ais", "bdmc", "AISEstimate", "BDMCResult", "prior_guide", "sigmoid_schedule",
           "recommend_steps"]

CHAIN_PLATE = "_ais_chains"
# below this effective number of chains an AIS estimate is flagged unreliable
MIN_CHAIN_ESS = 2.0
# BDMC: the mean width (nats) at which a number of steps counts as enough (recommend_steps)
BDMC_TOLERANCE = 0.5
#: annealing steps T when none is given (``pyvae evaluate --ais``, ``pyvae bdmc``)
NUM_STEPS = 1000
#: independent chains per datapoint when none is given (``--ais-chains``)
NUM_CHAINS = 16
#: datapoints annealed together (the chains of a pass are ``batch_size`` x ``num_chains``)
BATCH_SIZE = 100


@dataclass
class AISEstimate(Estimate):
    """log p^(x) by AIS, per datapoint.

    Attributes:
        value: (N,) float64 log mean_c w_c (forward: a stochastic lower bound), or
            -log mean_c w_rev,c (reverse: a stochastic upper bound).
        stderr: (N,) jackknife standard error across the C chains (``jackknife_stderr``).
        num_samples: C, the number of chains.
        log_weights: (C, N) float64 log-weights of the chains.
        ess: (N,) effective number of chains, (sum w)^2 / sum w^2.
        unreliable: (N,) bool, ESS < ``MIN_CHAIN_ESS``: the chains' weights are so uneven
            that one or two chains make the estimate and no error bar computed from them can
            be trusted (the role Pareto k^ > 0.7 plays for the IW estimate); run more steps.
        acceptance: (N,) mean HMC acceptance probability over chains and transitions.
        step_size: (N,) final leapfrog step sizes.
        tuned_step_size: (N,) the steps fitted to the start target before annealing (None
            when the caller gave ``step_size``).
        num_steps: T, annealing steps.
    """

    log_weights: torch.Tensor = field(default=None)
    ess: torch.Tensor = field(default=None)
    acceptance: torch.Tensor = field(default=None)
    step_size: torch.Tensor = field(default=None)
    tuned_step_size: Optional[torch.Tensor] = field(default=None)
    num_steps: int = 0

    @property
    def unreliable(self) -> torch.Tensor:
        return self.ess < MIN_CHAIN_ESS

    def summary(self) -> Dict[str, float]:
        out = super().summary()
        out.update(num_steps=self.num_steps, acceptance=float(self.acceptance.mean()),
                   ess_mean=float(self.ess.mean()), ess_min=float(self.ess.min()),
                   unreliable=int(self.unreliable.sum()))
        return out


@dataclass
class BDMCResult:
    """Bidirectional Monte Carlo on data simulated from the model.

    Attributes:
        x: the simulated data, same shape as the template x.
        z: dict of the exact latent values that generated x (exact posterior samples).
        lower: forward AIS (stochastic lower bound on log p(x)).
        upper: reverse AIS from z (stochastic upper bound on log p(x)).
    """

    x: torch.Tensor
    z: Dict[str, torch.Tensor]
    lower: AISEstimate
    upper: AISEstimate

    @property
    def width(self) -> torch.Tensor:
        """upper - lower per datapoint (nats)."""
        return self.upper.value - self.lower.value

    @property
    def mean_width(self) -> float:
        return float(self.width.mean())

    def summary(self) -> Dict[str, float]:
        return {"lower": self.lower.mean, "upper": self.upper.mean, "mean_width": self.mean_width,
                "num_steps": self.lower.num_steps, "num_chains": self.lower.num_samples,
                "num_datapoints": int(self.width.numel()),
                "acceptance": float((self.lower.acceptance.mean() + self.upper.acceptance.mean()) / 2),
                "lower_unreliable": int(self.lower.unreliable.sum()),
                "upper_unreliable": int(self.upper.unreliable.sum())}


def recommend_steps(widths: Dict[int, float], tolerance: float = BDMC_TOLERANCE) -> Optional[int]:
    """The smallest number of AIS steps whose BDMC mean width (``{num_steps: width}``, nats) is
    at most ``tolerance`` in size; None if none is. With those steps (and the same chains), AIS
    on data like the simulated data is within about ``tolerance`` of log p(x). A negative width
    (stochastic bounds that crossed, which noise allows) counts by its size: bounds 2 nats the
    wrong way round certify nothing.

    Args:
        widths: {num_steps: BDMC mean width upper - lower in nats per datapoint}.
        tolerance: the largest |width|, in nats, that counts as enough.

    Returns:
        the smallest such num_steps, or None.
    """
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance > 0):
        raise ConfigError(f"tolerance must be a positive number of nats, got {tolerance!r}")
    enough = [steps for steps, width in widths.items() if abs(width) <= tolerance]
    return min(enough) if enough else None


def sigmoid_schedule(num_steps: int, delta: float = 4.0) -> torch.Tensor:
    """beta_0..beta_T (T = num_steps) on a sigmoid: beta~_t = sigmoid(delta (2t/T - 1)),
    rescaled so that beta_0 = 0 and beta_T = 1 (Grosse et al. 2015).

    Args:
        num_steps: T, the number of annealing steps.
        delta: half-width of the sigmoid's argument range [-delta, delta]; larger puts more
            of the steps near beta = 0 and beta = 1.

    Returns:
        (T + 1,) float64 tensor of increasing betas from 0 to 1.
    """
    s = torch.sigmoid(torch.linspace(-delta, delta, num_steps + 1, dtype=torch.float64))
    beta = (s - s[0]) / (s[-1] - s[0])
    beta[0], beta[-1] = 0.0, 1.0
    return beta


def prior_guide(model: Callable) -> Callable:
    """A guide that samples the model's latent sites from the prior (the model with its
    observed sites hidden): AIS from it starts at q0 = p(z).

    Args:
        model: a Pyro model ``model(x)``.

    Returns:
        a Pyro guide ``guide(x)`` whose latent sites are the model's, drawn from p(z).
    """
    return poutine.block(model, hide_fn=lambda msg: bool(msg.get("is_observed")))


# ------------------------------------------------------------------------------ densities

class GuideCannotScore(ConfigError):
    """The start guide's q(z|x) has no density at points it did not draw itself (a flow
    without an inverse), or gives a non-finite log q0 at its own draws; AIS needs log q0
    everywhere."""


#: the auxiliary site that holds a latent site's unconstrained value in ``AutoNormal``
AUXILIARY_SUFFIX = "_unconstrained"


def site_bijection(name, support):
    """biject_to(support); a mixture's support is its components' (torch registers no bijection
    for the mixture's own constraint)."""
    try:
        return biject_to(support)
    except NotImplementedError:
        base = getattr(support, "base_constraint", None)
        if base is None:
            raise ConfigError(f"latent site {name!r}: no bijection to the reals for its support "
                              f"{type(support).__name__}") from None
        return site_bijection(name, base)


class _Target:
    """log p(x, z), log q0(z) and log|det dz/du| per (chain, datapoint), from Pyro traces.

    The model is traced with its latent sites conditioned on z = biject_to(support)(u), and its
    sites marked for enumeration summed out (``pyvae.infer.weights.model_log_density``); the
    guide likewise (so guides whose sites depend on earlier latents are scored correctly). The
    guide's distribution must be able to score any z (flows without an inverse cannot). A guide
    that draws z through an auxiliary site ``z_unconstrained`` and a Delta at
    biject_to(support)(z_unconstrained) (``AutoNormal``) has that site conditioned on u too:
    the Delta then sits at its own value and q0 is scored by the auxiliary site's density and
    the Delta's log-Jacobian. At the start the guide must score its own draws finitely
    (``GuideCannotScore`` if not).
    """

    def __init__(self, model, guide, x, chains, nesting):
        self.model, self.guide, self.x, self.chains = model, guide, x, chains
        self.nesting, self.chain_dim = nesting, -(nesting + 1)
        with torch.no_grad(), poutine.block():
            start = self._run(guide)
            replay = self._run(poutine.replay(model, trace=start))
        sampled = guide_sites(start)
        self.sites, self.layout = {}, {}
        for name, site in replay.nodes.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            if name not in sampled and site["infer"].get("enumerate") == "parallel":
                continue  # summed out in log p(x, z)
            if site["fn"].support.is_discrete:
                raise ConfigError(f"latent site {name!r} is discrete; AIS needs continuous latents "
                                  "(a discrete site of the model alone can be marked for "
                                  "enumeration: config_enumerate)")
            if name not in start.nodes:
                raise ConfigError(f"the guide has no sample site {name!r}; the model needs it")
            self.sites[name] = site_bijection(name, site["fn"].support)
            # (data plate dim, event dims of the unconstrained value)
            self.layout[name] = (data_frame(name, site).dim, self.sites[name].domain.event_dim)
        if not self.sites:
            raise ConfigError("the model has no latent sample sites")
        self.auxiliary = {name + AUXILIARY_SUFFIX: name for name in self.sites
                          if start.nodes.get(name + AUXILIARY_SUFFIX, {}).get("infer", {})
                          .get("is_auxiliary")}
        self.start = {name: start.nodes[name]["value"].detach() for name in self.sites}
        with torch.no_grad():
            log_q = self.evaluate(self.to_unconstrained(self.start))[1]
        if not bool(torch.isfinite(log_q).all()):
            raise GuideCannotScore(
                "the start guide gives a non-finite log q0 at its own draws (a guide whose latent "
                "is a deterministic map of an auxiliary site it redraws cannot be scored at a "
                "given z); start AIS from a guide with a density at any z, e.g. "
                "pyvae.infer.ais.prior_guide(model)")

    def _run(self, fn, data=None, enumerate_sites=False):
        with pyro.plate(CHAIN_PLATE, self.chains, dim=self.chain_dim):
            if data is not None:
                fn = poutine.condition(fn, data=data)
            if enumerate_sites:
                fn = enumerated(fn, self.nesting)
            trace = poutine.trace(fn).get_trace(self.x)
        trace = prune_subsample_sites(trace)
        trace.compute_log_prob()
        return trace

    def _sum(self, trace, skip_observed):
        total = 0.0
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or (skip_observed and site["is_observed"]
                                            and name not in self.sites
                                            and name not in self.auxiliary):
                continue
            frame = data_frame(name, site)
            lp = scale_and_mask(site["unscaled_log_prob"], 1.0, site["mask"])
            total = total + per_datapoint(lp, self.chain_dim, frame.dim, self.chains)
        return total

    def per_cn(self, name, value):
        """Sum a per-site tensor (batch + unconstrained event dims) to shape (C, N)."""
        data_dim, event_dim = self.layout[name]
        if event_dim:
            value = value.sum(list(range(-event_dim, 0)))
        return per_datapoint(value, self.chain_dim, data_dim, self.chains)

    def broadcast(self, name, per_cn, like):
        """A (C, N) tensor reshaped to broadcast against site ``name``'s value ``like``."""
        data_dim, event_dim = self.layout[name]
        batch_rank = like.dim() - event_dim
        shape = [1] * like.dim()
        shape[batch_rank + self.chain_dim] = per_cn.shape[0]
        shape[batch_rank + data_dim] = per_cn.shape[1]
        return per_cn.reshape(shape)

    def to_unconstrained(self, z):
        return {name: t.inv(z[name]).detach() for name, t in self.sites.items()}

    def evaluate(self, u):
        """(log p, log q0, log det, grad log p, grad log q0, grad log det) at u; the first
        three of shape (C, N), the gradients dicts like u."""
        with torch.enable_grad(), poutine.block():
            u = {name: v.detach().requires_grad_(True) for name, v in u.items()}
            z, log_det = {}, 0.0
            for name, t in self.sites.items():
                z[name] = t(u[name])
                ld = t.log_abs_det_jacobian(u[name], z[name])
                ld = ld.expand(u[name].shape[:u[name].dim() - self.layout[name][1]])
                log_det = log_det + per_datapoint(ld, self.chain_dim, self.layout[name][0],
                                                   self.chains)
            model_trace = self._run(self.model, z, enumerate_sites=True)
            log_p = model_log_density(model_trace, set(self.sites), self.chains, self.nesting)[0]
            guide_values = dict(z, **{aux: u[name] for aux, name in self.auxiliary.items()})
            try:
                log_q = self._sum(self._run(self.guide, guide_values), skip_observed=True)
            except (NotImplementedError, KeyError):  # (Pyro's planar/radial raise KeyError)
                raise GuideCannotScore("the guide's q(z|x) cannot score arbitrary z (a flow without an "
                                  "inverse: planar, radial, sylvester); start AIS from another "
                                  "guide, e.g. pyvae.infer.ais.prior_guide(model)") from None
            inputs = list(u.values())
            grads = []
            for out in (log_p, log_q, log_det):
                if not torch.is_tensor(out) or not out.requires_grad:
                    grads.append({k: torch.zeros_like(v) for k, v in u.items()})
                    continue
                g = torch.autograd.grad(out.sum(), inputs, retain_graph=True, allow_unused=True)
                grads.append({k: torch.zeros_like(u[k]) if gi is None else gi.detach()
                              for k, gi in zip(u, g)})
        log_det = torch.as_tensor(log_det, dtype=torch.float64).expand_as(log_p) \
            if not torch.is_tensor(log_det) else log_det
        return (log_p.detach(), log_q.detach(), log_det.detach(), *grads)


# ------------------------------------------------------------------------------ AIS
def _check_args(num_steps, num_chains, leapfrog_steps, step_size, batch_size):
    for name, value in (("num_steps", num_steps), ("num_chains", num_chains),
                        ("leapfrog_steps", leapfrog_steps), ("batch_size", batch_size)):
        check_count(name, value)
    if step_size is not None and not (isinstance(step_size, (int, float)) and
                                      math.isfinite(step_size) and step_size > 0):
        raise ConfigError(f"step_size must be a positive number or None, got {step_size!r}")


def _log_mean_exp(log_w: torch.Tensor):
    """log mean_c w_c, its jackknife standard error and the ESS, per datapoint."""
    c = log_w.shape[0]
    value = torch.logsumexp(log_w, 0) - math.log(c)
    w = torch.softmax(log_w, 0)
    ess = 1.0 / w.pow(2).sum(0)
    return value, jackknife_stderr(log_w), ess


def jackknife_stderr(log_w: torch.Tensor) -> torch.Tensor:
    """The jackknife standard error of log mean_c w_c over the C chains (dim 0), per datapoint:

        sqrt((C - 1) / C  sum_i (theta_(i) - mean_i theta_(i))^2),
        theta_(i) = log mean_{c != i} w_c  (the estimate without chain i).

    Unlike the delta method's sqrt((C / ESS - 1) / (C - 1)), it sees how far the estimate
    moves when its heaviest chain is left out, which is the error AIS makes when a few chains
    carry the weight: on a linear-Gaussian (see docs/evaluation.md) 90% of the errors lie
    within two jackknife standard errors against 84% for the delta method. +inf where a
    leave-one-out estimate has no weight left, NaN for one chain.

    Each theta_(i) is log(S - w_i) with S = sum_c w_c in units of the largest weight, exact but
    for the largest chain itself, whose leave-one-out sum is taken afresh (S - 1 would lose
    the small weights to rounding).
    """
    c = log_w.shape[0]
    if c < 2:
        return torch.full_like(log_w[0], math.nan)
    top, arg = log_w.max(0)
    scaled = (log_w - top).exp()
    loo = (scaled.sum(0) - scaled).clamp(min=0).log() + top
    without_top = log_w.scatter(0, arg.unsqueeze(0), -math.inf)
    loo = loo.scatter(0, arg.unsqueeze(0), torch.logsumexp(without_top, 0).unsqueeze(0))
    loo = loo - math.log(c - 1)
    if not torch.isfinite(loo).all():
        bad = ~torch.isfinite(loo).all(0)
        loo = torch.where(bad, torch.zeros_like(loo), loo)
    else:
        bad = torch.zeros_like(top, dtype=torch.bool)
    var = (c - 1) / c * (loo - loo.mean(0)).pow(2).sum(0)
    return torch.where(bad, torch.full_like(var, math.inf), var.sqrt())


def _anneal(target, u, betas, hmc, reverse, bar, tune):
    """Run the chains through the schedule; returns log w, shape (C, N), float64.

    Forward:  for t = 1..T:  log w += (b_t - b_{t-1}) [log p - log q0](z);  z <- HMC_{b_t}(z)
    Reverse:  for t = T..1:  log w -= (b_t - b_{t-1}) [log p - log q0](z);  z <- HMC_{b_{t-1}}(z)
    (no transition at beta = 0 or 1: it would not change the weights).

    With ``tune``, the step sizes are first fitted (``HMC.tune``) to the start target, beta = 0
    forward (q0) and beta = 1 in reverse (the posterior), where the chains start as exact draws:
    transitions that leave that target invariant keep them exact draws, so no weight changes
    and nothing is discarded.
    """
    steps = len(betas) - 1
    state = target.evaluate(u)
    if tune:
        u, state = hmc.tune(u, state, float(betas[-1] if reverse else betas[0]))
    log_w = torch.zeros_like(state[0], dtype=torch.float64)
    for t in (range(steps, 0, -1) if reverse else range(1, steps + 1)):
        increment = float(betas[t] - betas[t - 1]) * (state[0].double() - state[1].double())
        log_w = log_w - increment if reverse else log_w + increment
        nxt = t - 1 if reverse else t
        if 0 < nxt < steps:
            u, state = hmc.transition(u, state, float(betas[nxt]))
        bar.update(1)
    return log_w


def _run_ais(model, guide, x, num_steps, num_chains, leapfrog_steps, step_size, seed, progress,
             batch_size, start=None, desc="AIS"):
    _check_x(x)
    _check_args(num_steps, num_chains, leapfrog_steps, step_size, batch_size)
    betas = sigmoid_schedule(num_steps)
    reverse = start is not None
    values, errs, weights, esss, accepts, steps, tuned = [], [], [], [], [], [], []
    plan = batches(guide, x, min(batch_size, x.shape[0]))
    if reverse and plan[0].subsample is not None:
        raise ConfigError("BDMC needs the data plate to follow x (no subsampled plate)")
    with torch.no_grad():
        nesting = max_plate_nesting(plan[0].wrap(model), plan[0].wrap(guide), plan[0].x)
    bar = tqdm(total=num_steps * len(plan), desc=desc, unit="step",
               disable=progress_disabled(progress),
               leave=False, dynamic_ncols=True)
    with bar:
        for i, batch in enumerate(plan):
            if seed is not None:  # one seed per fixed chunk of datapoints
                pyro.set_rng_seed(seed + i)
            xb = batch.x
            target = _Target(batch.wrap(model), batch.wrap(guide), xb, num_chains, nesting)
            if reverse:
                z = {k: v[batch.rows.start:batch.rows.stop] for k, v in start.items()}
                missing = set(target.sites) - set(z)
                if missing:
                    raise ConfigError(f"no start values for latent sites {sorted(missing)}")
                z = {k: z[k].unsqueeze(0).expand((num_chains,) + z[k].shape) for k in target.sites}
            else:
                z = target.start
            u = target.to_unconstrained(z)
            size = xb.shape[0] if batch.subsample is None else len(batch.subsample)
            hmc = HMC(target, size, INITIAL_STEP if step_size is None else float(step_size),
                      leapfrog_steps, x.device)
            # a leapfrog trajectory may leave the model's domain (its proposal is then
            # rejected); the data were checked once by max_plate_nesting
            with pyro.validation_enabled(False):
                log_w = _anneal(target, u, betas, hmc, reverse, bar, tune=step_size is None)
            value, stderr, ess = _log_mean_exp(log_w)
            if reverse:
                value = -value
            for out, item in zip((values, errs, weights, esss, accepts, steps, tuned),
                                 (value, stderr, log_w, ess, hmc.accept_sum / max(hmc.transitions, 1),
                                  hmc.step, hmc.tuned_step)):
                out.append(None if item is None else batch.keep(item))
    ess = torch.cat(esss)
    return AISEstimate(torch.cat(values), torch.cat(errs), num_chains,
                       log_weights=torch.cat(weights, 1), ess=ess,
                       acceptance=torch.cat(accepts), step_size=torch.cat(steps),
                       tuned_step_size=None if step_size is not None else torch.cat(tuned),
                       num_steps=num_steps)


def ais(model: Callable, guide: Callable, x: torch.Tensor, num_steps: int = NUM_STEPS,
        num_chains: int = NUM_CHAINS, leapfrog_steps: int = 10, step_size: Optional[float] = None,
        progress: Optional[bool] = None, seed: Optional[int] = None,
        batch_size: int = BATCH_SIZE) -> AISEstimate:
    """log p(x) per datapoint by annealed importance sampling from q0 = the guide to p(z|x).

    See the module docstring for the estimator. ``num_steps`` annealing steps (T) on a sigmoid
    schedule, ``num_chains`` independent chains per datapoint, HMC with ``leapfrog_steps``
    leapfrog steps of a per-datapoint size adapted towards acceptance 0.65. With ``step_size``
    None (the default) each datapoint's step is first fitted to q0 (``HMC.tune``, 12 extra
    transitions at beta = 0 that leave the chains exact draws of q0); a given ``step_size``
    is used from the first transition as it is (no fitting). Datapoints are processed ``batch_size`` at a time, each batch with
    its own seed ``seed + batch index`` (results do not depend on the rest of x).

    Cost: about num_steps * leapfrog_steps evaluations of the model and guide and their
    gradients on num_chains x batch_size rows.

    Args:
        model: a Pyro model ``model(x)`` whose latent sites are continuous and inside plate
            ``"data"`` over the first dimension of ``x``.
        guide: the start distribution q0(z|x), a Pyro guide of ``x`` that can score any z
            (``prior_guide(model)`` starts at p(z)).
        x: (N, ...) tensor of data.
        num_steps: T, annealing steps (intermediate distributions) from beta = 0 to 1.
        num_chains: C, independent chains per datapoint.
        leapfrog_steps: leapfrog steps per HMC transition.
        step_size: the initial leapfrog step size for every datapoint, used as given; None
            fits each datapoint's step to q0 first (``HMC.tune``).
        progress: show a tqdm bar over annealing steps (None: where a terminal is attached).
        seed: None draws from the global random streams; an int seeds the i-th batch of
            datapoints with ``seed + i``.
        batch_size: datapoints annealed together (C x batch_size chains per model call).

    Returns:
        an ``AISEstimate``: per-datapoint value (a stochastic lower bound on log p(x)), its
        jackknife stderr across chains, the chains' log-weights, ESS, the ``unreliable`` flags
        (chain ESS < ``MIN_CHAIN_ESS``) and acceptance rates.
    """
    return _run_ais(model, guide, x, num_steps, num_chains, leapfrog_steps, step_size, seed,
                    progress, batch_size)


def simulate(model: Callable, x: torch.Tensor, seed: Optional[int] = None):
    """(x_sim, z): one draw of the model's joint, with ``x`` only as a template for shapes.

    The model runs under ``poutine.uncondition``; it must have exactly one observed site,
    whose simulated value (reshaped like x) is x_sim. z maps latent site names to values.

    Args:
        model: a Pyro model ``model(x)`` with exactly one observed site, which observes x.
        x: (N, ...) tensor: the template of the simulated data.
        seed: seeds Pyro's random streams first (None: as they stand).

    Returns:
        (x_sim, z): x_sim shaped and typed like ``x``; z a dict {latent site: value}.
    """
    _check_x(x)
    if seed is not None:
        pyro.set_rng_seed(seed)
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(poutine.uncondition(model)).get_trace(x)
    sites = {n: s for n, s in trace.nodes.items() if s["type"] == "sample"}
    obs = [n for n, s in sites.items() if s["infer"].get("was_observed", s["is_observed"])]
    if len(obs) != 1:
        raise ConfigError(f"BDMC needs a model with exactly one observed site, found {obs}")
    value = trace.nodes[obs[0]]["value"]
    if value.numel() != x.numel():
        raise ConfigError(f"the observed site {obs[0]!r} has {value.numel()} values, x has "
                          f"{x.numel()}; BDMC needs the site to observe x itself")
    z = {n: s["value"] for n, s in sites.items() if n not in obs}
    return value.reshape(x.shape).to(x.dtype), z


def bdmc(model: Callable, guide: Callable, x: torch.Tensor, num_steps: int = NUM_STEPS,
         num_chains: int = NUM_CHAINS, leapfrog_steps: int = 10, step_size: Optional[float] = None,
         progress: Optional[bool] = None, seed: Optional[int] = None,
         batch_size: int = BATCH_SIZE) -> BDMCResult:
    """Bidirectional Monte Carlo: sandwich log p(x) on len(x) datapoints simulated from the model.

    (z, x_sim) ~ p(z) p(x|z), with x only a template (shape, dtype). Forward AIS from the guide
    gives a stochastic lower bound on log p(x_sim); reverse AIS, started at the exact posterior
    sample z and annealed back to the guide, a stochastic upper bound. The width
    upper - lower bounds the error of either estimate on such data: it tells how many steps
    a model needs before AIS on real data can be trusted.

    Args:
        model: a Pyro model ``model(x)`` whose latent sites are continuous and inside plate
            ``"data"`` over the first dimension of ``x``.
        guide: the start distribution q0(z|x), a Pyro guide of ``x`` that can score any z
            (``prior_guide(model)`` starts at p(z)).
        x: (N, ...) tensor: a template of the data (shape, dtype, device); N datapoints
            are simulated.
        num_steps: T, annealing steps (intermediate distributions) from beta = 0 to 1.
        num_chains: C, independent chains per datapoint.
        leapfrog_steps: leapfrog steps per HMC transition.
        step_size: the initial leapfrog step size for every datapoint, used as given; None
            fits each datapoint's step to q0 first (``HMC.tune``).
        progress: show a tqdm bar over annealing steps (None: where a terminal is attached).
        seed: None draws from the global random streams; an int seeds the simulation with
            ``seed``, forward AIS with ``seed + 1`` and reverse AIS with ``seed + 2`` (each
            batch i adds i).
        batch_size: datapoints annealed together (C x batch_size chains per model call).

    Returns:
        a ``BDMCResult``: the simulated x and z, and the forward (lower) and reverse (upper)
        ``AISEstimate`` in nats per datapoint.
    """
    x_sim, z = simulate(model, x, seed)
    lower = _run_ais(model, guide, x_sim, num_steps, num_chains, leapfrog_steps, step_size,
                     None if seed is None else seed + 1, progress, batch_size, desc="BDMC forward")
    upper = _run_ais(model, guide, x_sim, num_steps, num_chains, leapfrog_steps, step_size,
                     None if seed is None else seed + 2, progress, batch_size, start=z,
                     desc="BDMC reverse")
    return BDMCResult(x_sim, z, lower, upper)
