"""Importance weights of any Pyro model/guide pair, per datapoint: the one place where samples
of z are drawn for a whole batch of particles and scored under p and q.

With z_k ~ q(z|x), k = 1..K, the log importance weight is

    log w_k(x) = log p(x, z_k) - log q(z_k | x),

summed over every sample site of the model and the guide. Both the training objectives
(``pyvae.infer.objectives.IWAE``) and the evaluation (``pyvae.infer.evaluate``) use these
functions; every sample site must lie in a vectorized ``pyro.plate("data", ...)`` over the
first dimension of x.
"""
from typing import Callable, Optional

import torch

import pyro
import pyro.poutine as poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import prune_subsample_sites

from ..errors import ConfigError

DATA_PLATE = "data"
PARTICLE_PLATE = "_iw_particles"


def max_plate_nesting(model: Callable, guide: Callable, *args, **kwargs) -> int:
    """How many plate dimensions the model and guide use (traced once, without gradients).

    Also checks that every sample site lies inside the ``"data"`` plate (ConfigError if not).
    """
    with torch.no_grad(), poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    for name, site in model_trace.nodes.items():  # e.g. grey pixels under a Bernoulli
        if site["type"] == "sample" and site["is_observed"]:
            if not bool(torch.as_tensor(site["fn"].support.check(site["value"])).all()):
                base = getattr(site["fn"], "base_dist", site["fn"])
                kind = next(c.__name__ for c in type(base).__mro__ if not c.__name__.startswith("_"))
                raise ConfigError(f"the observed site {name!r} has values outside the support of "
                                  f"its {kind} distribution ({site['fn'].support}); e.g. "
                                  "binarize the data for a Bernoulli likelihood")
    dims = [0]
    for trace in (prune_subsample_sites(guide_trace), prune_subsample_sites(model_trace)):
        for name, site in trace.nodes.items():
            if site["type"] == "sample":
                data_frame(name, site)  # every site must be per datapoint
                dims += [-frame.dim for frame in site["cond_indep_stack"] if frame.vectorized]
    return max(dims)


def data_frame(name, site):
    for frame in site["cond_indep_stack"]:
        if frame.name == DATA_PLATE:
            if not frame.vectorized:
                raise ConfigError(f"site {name!r}: the {DATA_PLATE!r} plate must be vectorized "
                                  "(pyro.plate used as a context manager, not an iterator)")
            return frame
    raise ConfigError(
        f"site {name!r} is outside the {DATA_PLATE!r} plate; per-datapoint importance weights "
        f"need every sample site of the model and guide inside pyro.plate({DATA_PLATE!r}, ...)")


def per_datapoint(log_prob: torch.Tensor, particle_dim: int, data_dim: int,
                   particles: int) -> torch.Tensor:
    """Sum a site's log-density over every batch dimension except the particle and data plates.

    ``log_prob`` has the site's batch shape (right-aligned plate dims, event dims already summed);
    returns shape (particles, datapoints).
    """
    rank = -particle_dim
    lp = log_prob.reshape((1,) * (rank - log_prob.dim()) + tuple(log_prob.shape))
    keep = {0, rank + data_dim}
    other = [d for d in range(rank) if d not in keep]
    if other:
        lp = lp.sum(other, keepdim=True)
    lp = lp.reshape(lp.shape[0], lp.shape[rank + data_dim])
    return lp.expand(particles, lp.shape[1])


def log_weights(model: Callable, guide: Callable, x: torch.Tensor, particles: int,
                nesting: Optional[int] = None, scaled: bool = False):
    """log w = log p(x, z) - log q(z|x) for ``particles`` draws z ~ q(z|x), per datapoint.

    Model and guide run once, inside ``pyro.plate(particles)`` placed left of all their plates
    (as Pyro's ``vectorize_particles`` does), so one guide call draws all particles and the
    log q of each draw is the density of the guide's own sample (no inverse needed for flows).

    Each site's *unscaled* log-density is summed over its non-data plate dimensions, so the
    result is the log-weight of each datapoint, not scaled by a subsampled plate's N / batch
    (Pyro's RenyiELBO applies that scale before its logsumexp, which biases the bound).

    Args:
        nesting: the model's ``max_plate_nesting`` (found by tracing when None).
        scaled: multiply each site's log-density by its scale divided by the data plate's
            subsampling scale (keeps ``poutine.scale`` factors such as KL annealing inside the
            weights; the data scale itself is returned, to be applied after the logsumexp).

    Returns:
        ``(log_w, data_scale)``: ``log_w`` of shape (particles, batch) in float64, and the
        data plate's ``size / subsample_size`` (1.0 without subsampling).
    """
    if nesting is None:
        nesting = max_plate_nesting(model, guide, x)
    owner = own_weights(model, guide)
    if owner is not None:  # no subsampled plate, no poutine.scale: the data scale is 1
        return owner.log_weights(x, particles), 1.0
    particle_dim = -(nesting + 1)
    with pyro.plate(PARTICLE_PLATE, particles, dim=particle_dim):
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    guide_trace = prune_subsample_sites(guide_trace)
    model_trace = prune_subsample_sites(model_trace)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    log_w, data_scale = 0.0, None
    for sign, trace in ((1.0, model_trace), (-1.0, guide_trace)):
        for name, site in trace.nodes.items():
            if site["type"] != "sample":
                continue
            if trace is guide_trace and site["is_observed"]:
                continue
            lp, data_scale = site_log_density(name, site, site["unscaled_log_prob"], particles,
                                              nesting, scaled)
            log_w = log_w + sign * lp
    if data_scale is None:
        raise ConfigError("the model and guide have no sample sites")
    return log_w, data_scale


def own_weights(model: Callable, guide: Callable):
    """The object whose own ``model`` and ``guide`` methods these are and which offers
    ``log_weights(x, particles)`` for them (as ``pyvae.VAE`` does), called with no Pyro handler
    around them; or None. Then ``owner.log_weights`` computes their weights without tracing.

    ``log_weights`` must come from the class that defines ``model`` and ``guide`` (a subclass
    that overrides one of them without its own ``log_weights`` keeps the traced path)."""
    owner = getattr(model, "__self__", None)
    if owner is None or getattr(guide, "__self__", None) is not owner \
            or model != getattr(owner, "model", None) or guide != getattr(owner, "guide", None):
        return None
    home = _defined_in(type(owner), "log_weights")
    if home is None or any(_defined_in(type(owner), name) is not home for name in ("model", "guide")):
        return None
    return None if poutine.runtime.am_i_wrapped() else owner


def _defined_in(cls: type, name: str):
    """The class of ``cls``'s method resolution order that defines ``name`` (None: none)."""
    return next((c for c in cls.__mro__ if name in vars(c)), None)


def site_log_density(name: str, site: dict, log_prob: torch.Tensor, particles: int,
                     nesting: int, scaled: bool = False):
    """A sample site's contribution to log w per datapoint, and the data plate's scale.

    ``log_prob`` is a tensor of the site's batch shape (its unscaled log-density, or any other
    per-sample quantity to be reduced the same way, such as a gradient estimator's surrogate
    term), in a trace taken inside the particle plate at dim ``-(nesting + 1)``. It is masked
    as the site is, multiplied by the site's scale divided by the data plate's subsampling
    scale when ``scaled``, and summed over every plate dimension except the particle and data
    plates.

    Returns:
        ``(value, data_scale)``: float64 of shape (particles, batch), and ``size / subsample_size``.
    """
    frame = data_frame(name, site)
    data_scale = frame.full_size / frame.size if frame.full_size else 1.0
    factor = site["scale"] / data_scale if scaled else 1.0
    lp = scale_and_mask(log_prob, factor, site["mask"])
    return per_datapoint(lp.to(torch.float64), -(nesting + 1), frame.dim, particles), data_scale


def check_x(x) -> torch.Tensor:
    """x as (N, ...) real data, one datapoint per row: ints and bools become floats; complex,
    1-D and empty x are refused (ConfigError)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] == 0:
        raise ConfigError(f"x must be a tensor of shape (N, x_dim) with datapoints along its first "
                          f"dimension (one datapoint: x[None]), got "
                          f"{type(x).__name__}{tuple(getattr(x, 'shape', ()))}")
    if x.is_complex():
        raise ConfigError("x is complex; pass x.real or x.abs()")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    return x
