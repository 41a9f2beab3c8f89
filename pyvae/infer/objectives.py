"""Training objectives, chosen by name, and their gradient estimators.

Each objective is a Pyro ELBO object whose ``loss`` is minus a bound on log p(x). With
log w_i = log p(x, z_i) - log q(z_i|x), z_i ~ q(z|x) reparameterised (z_i = g_phi(eps_i)),
and w~ the weights normalised within their group of k:

    trace_elbo   ELBO         = E[ mean_i log w_i ]
    iwae         IWAE_k       = E[ log (1/k) sum_{i<=k} w_i ]                    (Burda et al. 2016)
    miwae        MIWAE_{M,k}  = (1/M) sum_{m<=M} IWAE_k(group m)                 (Rainforth et al. 2018)
    ciwae        CIWAE_beta   = beta ELBO + (1 - beta) IWAE_k, on the same k samples
    piwae        PIWAE_{M,k}: the model's parameters theta follow IWAE_{Mk} of all M k samples, the
                 guide's parameters phi follow MIWAE_{M,k} of the same samples

The gradient for theta is always the standard one. For phi, ``estimator`` picks (Tucker et al. 2018
for IWAE_k; each objective is a weighted sum of IWAE-type terms, and the weights below apply to
every term):

    reparam  sum_i w~_i d log w_i / d phi           (the path and the score term of log q)
    stl      sum_i w~_i   (d log w_i / d z_i)(d z_i / d phi)   "sticking the landing" (Roeder et
             al. 2017): the score term -d log q_phi(z)/d phi at fixed z, whose expectation is
             zero, is dropped
    dreg     sum_i w~_i^2 (d log w_i / d z_i)(d z_i / d phi)   doubly reparameterised: the score
             term is replaced by its reparameterised expectation, w~_i - w~_i^2 per particle

reparam and dreg are unbiased for the same gradient; stl is unbiased for the ELBO (k = 1) but
not for IWAE_k with k > 1, where the dropped score term is weighted by w~_i, which depends on
z_i. With q = p(z|x) every log w_i equals log p(x), so d log w_i / d z_i = 0 and the stl and dreg
gradients for phi are exactly zero.
"""
import math
from typing import Optional

import torch

import pyro
import pyro.infer
import pyro.poutine as poutine
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from torch.distributions import TransformedDistribution

from ..errors import ConfigError
from .weights import (PARTICLE_PLATE, enumerated, log_weights, max_plate_nesting,
                      model_log_density, site_log_density)

ESTIMATORS = ("reparam", "stl", "dreg")
#: the estimators of the objectives that take fewer than all of ``ESTIMATORS``
OBJECTIVE_ESTIMATORS = {"trace_elbo": ("reparam", "stl"), "tracemeanfield_elbo": ("reparam",)}


def estimators_of(loss: str):
    """The guide-gradient estimators the objective ``loss`` takes (``TrainConfig`` checks)."""
    return OBJECTIVE_ESTIMATORS.get(loss, ESTIMATORS)


def _trace_elbo(num_particles, estimator="reparam", **_):
    # ELBO = E_q[log p(x,z) - log q(z|x)], estimated with num_particles reparameterised draws
    if estimator == "stl":
        return ImportanceWeighted(num_particles=1, groups=num_particles, estimator="stl")
    return pyro.infer.Trace_ELBO(num_particles=num_particles,
                                 vectorize_particles=num_particles > 1)


def _mean_field_elbo(num_particles, estimator="reparam", **_):
    # the same ELBO with KL(q || p) computed in closed form where Pyro knows it
    return pyro.infer.TraceMeanField_ELBO(num_particles=num_particles,
                                          vectorize_particles=num_particles > 1)


class ImportanceWeighted(pyro.infer.ELBO):
    """M groups of k importance-weighted particles per datapoint; the bound and its surrogate.

    The M k particles are drawn vectorised: the guide and model run once inside a particle plate
    (as in ``pyvae.infer.weights.log_weights``), so the guide scores its own samples. ``loss`` is
    ``-sum_n s * bound(x_n)`` over the minibatch, where s = N / batch is the scale of a
    subsampled ``"data"`` plate (1 otherwise), applied *after* each datapoint's logsumexp (Pyro's
    ``RenyiELBO`` scales the log-weights before it, which biases the bound). Other scales
    (``poutine.scale``, e.g. KL annealing) stay inside the log-weights.

    ``differentiable_loss`` is a surrogate whose value is ``loss`` and whose gradient is the
    objective's gradient estimate: per datapoint, with theta-weights a_i and phi-weights b_i
    (``weights``),

        surrogate = bound + sum_i a_i (l_i - [l_i]) + sum_i b_i (r_i - [r_i])      ([.]: detached)

    l_i = log p(x, [z_i]) carries the gradient of the model's parameters (and of any guide
    parameter the model uses directly, as the VampPrior does); r_i carries the path through z_i:
    r_i = (d log w_i / d z_i)(z_i - [z_i]) for stl/dreg, and r_i = (d log p / d z_i)(z_i - [z_i])
    - log q(z_i|x) for reparam. d log q(z|x) / d z at fixed parameters is the gradient of
    ``q.log_prob`` at a detached copy of z; a flow that scores only its own samples (planar,
    radial, Sylvester) gives it as J^-T d log q(z(z0)) / d z0 with J = dz/dz0, from the base
    sample z0 recovered through the transforms' caches (public ``Transform.inv``).
    """

    # the estimator changes only phi's weights; a bound whose weights for theta and phi agree
    # under "reparam" backpropagates through log w directly
    shared_weights = True

    def __init__(self, num_particles: int = 50, estimator: str = "reparam", groups: int = 1):
        # the counts and the estimator are trusted: ``TrainConfig`` checks them, once
        super().__init__(num_particles=int(num_particles))
        self.groups, self.estimator = int(groups), estimator
        self._nesting = None

    # ---------------------------------------------------------------- the objective itself
    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        """The bound per datapoint from log-weights of shape (M k, batch): here MIWAE_{M,k}."""
        return _group_bound(log_w, self.groups, self.num_particles)

    def weights(self, log_w: torch.Tensor):
        """(a, b): d bound / d log w_i for theta and the estimator's weights for phi, (M k, batch)."""
        wt = _normalised(log_w, self.groups, self.num_particles) / self.groups
        return wt, (wt * wt * self.groups if self.estimator == "dreg" else wt)

    # ---------------------------------------------------------------- Pyro's ELBO interface
    def per_datapoint(self, model, guide, *args, **kwargs):
        """(bound, scale): the bound per datapoint, shape (batch,), and the data scale."""
        with torch.no_grad():
            log_w, scale = self._log_weights(model, guide, args, kwargs)
        return self.bound(log_w), scale

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """-sum_n s * surrogate(x_n): value -bound, gradient the chosen estimator (see the class)."""
        if self.estimator == "reparam" and self.shared_weights:
            log_w, scale = self._log_weights(model, guide, args, kwargs)
            a, _ = self.weights(log_w.detach())
            surrogate = self.bound(log_w.detach()) + (a * (log_w - log_w.detach())).sum(0)
        else:
            log_w, theta_term, phi_term, scale = self._streams(model, guide, args, kwargs)
            a, b = self.weights(log_w)
            surrogate = (self.bound(log_w) + (a * (theta_term - theta_term.detach())).sum(0)
                         + (b * (phi_term - phi_term.detach())).sum(0))
        return -(scale * surrogate).sum()

    def loss(self, model, guide, *args, **kwargs) -> float:
        bound, scale = self.per_datapoint(model, guide, *args, **kwargs)
        return float(-(scale * bound).sum())

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return float(loss.detach())

    def _get_trace(self, model, guide, args, kwargs):
        # Pyro's ELBO declares this hook abstract; the particles here are drawn vectorised
        # (``_log_weights``), never one trace at a time, so nothing calls it
        raise NotImplementedError("this objective draws its particles vectorised")

    # ---------------------------------------------------------------- log-weights
    def _prepare(self, model, guide, args, kwargs):
        if kwargs or len(args) != 1:
            raise ConfigError("importance-weighted objectives expect model(x) and guide(x) with "
                              "one argument x")
        if self._nesting is None:
            # these runs of model and guide check, they do not train: they leave the random
            # state as they found it, so a resumed run draws what the uninterrupted one drew
            x = args[0]
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                self._nesting = max_plate_nesting(model, guide, x)
                self._check_reparameterized(guide, x)
        return args[0]

    def _log_weights(self, model, guide, args, kwargs):
        x = self._prepare(model, guide, args, kwargs)
        return log_weights(model, guide, x, self.groups * self.num_particles, self._nesting,
                           scaled=True)

    def _streams(self, model, guide, args, kwargs):
        """(log w, l, r, data scale): the log-weights (detached) and the two gradient streams."""
        x = self._prepare(model, guide, args, kwargs)
        particles, nesting = self.groups * self.num_particles, self._nesting
        with pyro.plate(PARTICLE_PLATE, particles, dim=-(nesting + 1)):
            guide_trace = prune_subsample_sites(poutine.trace(guide).get_trace(x))
            latent = {name: site for name, site in guide_trace.nodes.items()
                      if site["type"] == "sample" and not site["is_observed"]}
            leaves = {name: site["value"].detach().requires_grad_() for name, site in latent.items()}
            conditioned = enumerated(poutine.condition(model, data=leaves), nesting)
            model_trace = prune_subsample_sites(poutine.trace(conditioned).get_trace(x))
            joint = None
            if self.estimator != "reparam" and len(latent) > 1:
                # log q of the leaves, the guide's sites depending on earlier leaves: its
                # gradient is the joint d log q(z) / dz at fixed parameters (see the class)
                joint = prune_subsample_sites(
                    poutine.trace(poutine.condition(guide, data=leaves)).get_trace(x))
        log_p, scale = model_log_density(model_trace, set(leaves), particles, nesting, scaled=True,
                                         log_prob=lambda site: site["fn"].log_prob(site["value"]))
        score_p = torch.autograd.grad(log_p.sum(), list(leaves.values()), retain_graph=True,
                                      allow_unused=True)
        score_q = [None] * len(latent)
        if joint is not None:
            log_q_leaves = 0.0
            for name in latent:
                site = joint.nodes[name]
                term, _ = site_log_density(name, site, _score(site), particles, nesting, scaled=True)
                log_q_leaves = log_q_leaves + term
            score_q = torch.autograd.grad(log_q_leaves.sum(), list(leaves.values()),
                                          allow_unused=True)
        log_q, phi_term = 0.0, 0.0
        for (name, site), s_p, s_q in zip(latent.items(), score_p, score_q):
            z, fn = site["value"], site["fn"]
            moved, events = z - z.detach(), tuple(range(-len(fn.event_shape), 0))
            term, _ = site_log_density(name, site, fn.log_prob(z), particles, nesting, scaled=True)
            log_q = log_q + term
            if s_p is not None:  # (already scaled and masked like log p)
                path, _ = site_log_density(name, site, (s_p * moved).sum(events), particles, nesting)
                phi_term = phi_term + path
            if self.estimator == "reparam":  # the whole derivative of log q, score term included
                phi_term = phi_term - term
            elif joint is not None:  # the joint path derivative, already scaled and masked
                if s_q is not None:
                    path, _ = site_log_density(name, site, (s_q * moved).sum(events), particles,
                                               nesting)
                    phi_term = phi_term - path
            else:  # only its path through z
                path = (path_score(fn, z) * moved).sum(events)
                path, _ = site_log_density(name, site, path, particles, nesting, scaled=True)
                phi_term = phi_term - path
        return (log_p - log_q).detach(), log_p, phi_term, scale

    @staticmethod
    def _check_reparameterized(guide, x):
        with torch.no_grad(), poutine.block():
            trace = poutine.trace(guide).get_trace(x)
        for name, site in trace.nodes.items():
            if site["type"] == "sample" and not site["is_observed"] and \
                    not site_is_subsample(site) and not site["fn"].has_rsample:
                raise ConfigError(f"importance-weighted objectives need reparameterised guide "
                                  f"sites; site {name!r} ({type(site['fn']).__name__}) has no rsample")


class IWAE(ImportanceWeighted):
    """IWAE_k(x) = E[ logsumexp_{i<=k} (log p(x, z_i) - log q(z_i|x)) - log k ] (Burda et al.
    2016), with the gradient estimator ``estimator`` for the guide: "reparam" (the standard
    one), "stl" or "dreg" (see the module)."""

    def __init__(self, num_particles: int = 50, estimator: str = "reparam"):
        super().__init__(num_particles, estimator, groups=1)


class MIWAE(ImportanceWeighted):
    """MIWAE_{M,k}(x) = (1/M) sum_{m<=M} IWAE_k on the m-th group of k particles: M k samples,
    a looser bound than IWAE_{Mk} whose guide gradient has a better signal-to-noise ratio."""

    def __init__(self, groups: int, num_particles: int, estimator: str = "reparam"):
        super().__init__(num_particles, estimator, groups=groups)


class CIWAE(ImportanceWeighted):
    """CIWAE_beta(x) = beta ELBO + (1 - beta) IWAE_k, both estimated from the same k particles
    (the ELBO as the mean of their log w), 0 <= beta <= 1. Per particle the weight is
    beta / k + (1 - beta) w~_i; dreg replaces the IWAE part's w~_i by w~_i^2 and the ELBO part
    (a mean of 1-sample bounds) gets stl."""

    def __init__(self, num_particles: int, beta: float, estimator: str = "reparam"):
        super().__init__(num_particles, estimator, groups=1)
        self.beta = float(beta)

    def bound(self, log_w):
        return self.beta * log_w.mean(0) + (1 - self.beta) * _group_bound(log_w, 1, self.num_particles)

    def weights(self, log_w):
        wt = _normalised(log_w, 1, self.num_particles)
        uniform = self.beta / self.num_particles
        a = uniform + (1 - self.beta) * wt
        return a, (uniform + (1 - self.beta) * wt * wt if self.estimator == "dreg" else a)


class PIWAE(ImportanceWeighted):
    """PIWAE_{M,k}: M k particles per datapoint; the model's parameters ascend IWAE_{Mk} of all
    of them, the guide's ascend MIWAE_{M,k} (M groups of k) of the same particles. ``loss`` is
    -IWAE_{Mk}, the bound the model is trained on."""

    shared_weights = False

    def __init__(self, groups: int, num_particles: int, estimator: str = "reparam"):
        super().__init__(num_particles, estimator, groups=groups)

    def bound(self, log_w):
        return _group_bound(log_w, 1, self.groups * self.num_particles)

    def weights(self, log_w):
        a = _normalised(log_w, 1, self.groups * self.num_particles)
        _, b = super().weights(log_w)
        return a, b


def _score(site) -> torch.Tensor:
    """log q of a guide site at the value it was conditioned on (ConfigError if q cannot score
    a point it did not draw, as a flow without an inverse)."""
    try:
        return site["fn"].log_prob(site["value"])
    except (NotImplementedError, KeyError):  # (Pyro's planar/radial raise KeyError)
        raise ConfigError(f"stl and dreg with several latent sites need log q at any z; the "
                          f"guide's site {site['name']!r} ({type(site['fn']).__name__}) scores "
                          "only its own draws") from None


def _group_bound(log_w, groups, k):
    """(1/M) sum_m [logsumexp over group m of log w - log k]; log_w of shape (M k, batch)."""
    grouped = log_w.reshape(groups, k, *log_w.shape[1:])
    return (torch.logsumexp(grouped, dim=1) - math.log(k)).mean(0)


def _normalised(log_w, groups, k):
    """w~: the weights normalised within each group of k, shape (M k, batch)."""
    grouped = log_w.reshape(groups, k, *log_w.shape[1:])
    return torch.softmax(grouped, dim=1).reshape(log_w.shape)


def path_score(q, z: torch.Tensor) -> torch.Tensor:
    """d log q(z) / d z with q's parameters held fixed, detached, for a sample z that q drew.

    A distribution that can score any point gives it as the gradient of ``q.log_prob`` at a
    detached copy of z. A ``TransformedDistribution`` z = f(z0) may have no inverse (planar,
    radial, Sylvester): the base sample z0 comes back through the transforms' caches, the flow
    is run again from a detached z0, and with J = dz/dz0 (one backward pass per dimension),

        d log q(z) / d z = J^-T d log q(f(z0)) / d z0.
    """
    with torch.enable_grad():
        if not isinstance(q, TransformedDistribution):
            leaf = z.detach().requires_grad_()
            try:
                log_q = q.log_prob(leaf)
            except NotImplementedError:
                raise ConfigError(f"{type(q).__name__} cannot score a copy of its sample; stl "
                                  "and dreg need d log q(z)/dz") from None
            return torch.autograd.grad(log_q.sum(), leaf)[0]
        if len(q.event_shape) != 1:
            raise ConfigError(f"stl and dreg support flows over vectors, not event shape "
                              f"{tuple(q.event_shape)}")
        base = z
        try:
            for t in reversed(q.transforms):
                base = t.inv(base)
        except NotImplementedError:
            raise ConfigError("a flow without an inverse must cache its last sample (cache_size=1) "
                              "for stl and dreg") from None
        z0 = base.detach().requires_grad_()
        y = z0
        for t in q.transforms:
            y = t(y)
        grad0 = torch.autograd.grad(q.log_prob(y).sum(), z0, retain_graph=True)[0]
        rows = [torch.autograd.grad(y[..., j].sum(), z0, retain_graph=True)[0]
                for j in range(y.shape[-1])]
        jacobian = torch.stack(rows, dim=-2)  # [..., j, :] = d y_j / d z0
        return torch.linalg.solve(jacobian.transpose(-1, -2), grad0.unsqueeze(-1)).squeeze(-1)


OBJECTIVES = {"trace_elbo": _trace_elbo, "tracemeanfield_elbo": _mean_field_elbo,
              "iwae": lambda k, estimator="reparam", **_: IWAE(k, estimator),
              "miwae": lambda k, estimator="reparam", groups=1, **_: MIWAE(groups, k, estimator),
              "ciwae": lambda k, estimator="reparam", ciwae_beta=0.5, **_: CIWAE(k, ciwae_beta, estimator),
              "piwae": lambda k, estimator="reparam", groups=1, **_: PIWAE(groups, k, estimator)}


def bound_name(config: dict) -> str:
    """What the objective of a training config (loss, particles, groups, ciwae_beta) reports:
    "ELBO", "IWAE_k", "MIWAE_M,k", "CIWAE_beta", or for piwae "IWAE_Mk", its model's bound."""
    k, m = config["particles"], config.get("groups", 1)
    return {"iwae": f"IWAE_{k}", "miwae": f"MIWAE_{m},{k}", "piwae": f"IWAE_{m * k}",
            "ciwae": f"CIWAE_{config.get('ciwae_beta', 0.5)}"}.get(config["loss"], "ELBO")


def make_objective(name: str, num_particles: int = 1, estimator: str = "reparam",
                   groups: int = 1, ciwae_beta: float = 0.5):
    """The objective ``name`` with k = ``num_particles`` (per group), M = ``groups`` (miwae,
    piwae) and beta = ``ciwae_beta`` (ciwae), trained with the guide-gradient ``estimator``.

    The arguments are trusted, as Pyro's ELBOs trust theirs: they are the fields of a
    ``TrainConfig``, which checks each of them (and the estimator against the objective) once;
    ``TrainConfig(loss=..., ...)`` is the way to check values from elsewhere."""
    return OBJECTIVES[name](int(num_particles), estimator=estimator, groups=int(groups),
                            ciwae_beta=float(ciwae_beta))


class JitTrace_ELBO(pyro.infer.JitTrace_ELBO):
    """Pyro's compiled ``Trace_ELBO`` whose ``differentiable_loss`` carries the gradient of the
    surrogate loss only, as its ``loss_and_grads`` does. (Pyro's own returns
    ``loss + (surrogate - surrogate.detach())`` with a ``loss`` that is itself differentiable
    under the JIT, which doubles the gradient of reparameterized sites.)"""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss, surrogate = self.loss_and_surrogate_loss(model, guide, *args, **kwargs)
        return loss.detach() + (surrogate - surrogate.detach())


# Pyro's compiled (torch.jit-traced) ELBO. (Not its JitTraceMeanField_ELBO: from the same random
# numbers it gives another loss than TraceMeanField_ELBO, tests/test_compiled.py.)
JIT_OBJECTIVES = {"trace_elbo": JitTrace_ELBO}


def compile_refusal(loss: str, estimator: str) -> Optional[str]:
    """Why the objective ``loss`` with ``estimator`` is not compiled (None: it is). The
    importance-weighted bounds are not: for pyvae's own VAE their weights come from
    ``VAE.log_weights``, untraced, which ran faster than a trace of them (benchmarks/README.md)."""
    if estimator != "reparam" or loss not in JIT_OBJECTIVES:
        return (f"--jit works with the losses {', '.join(JIT_OBJECTIVES)} and the reparam "
                f"estimator, not {loss!r} with {estimator!r}; the others train uncompiled: "
                "leave --jit out")
    return None


def compiled_objective(loss: str, num_particles: int):
    """The compiled form of the objective ``loss`` (one ``compile_refusal`` accepts)."""
    return JIT_OBJECTIVES[loss](num_particles=num_particles,
                                vectorize_particles=num_particles > 1, ignore_jit_warnings=True)
