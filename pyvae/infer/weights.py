"""Importance weights of any Pyro model/guide pair, per datapoint: the one place where samples
of z are drawn for a whole batch of particles and scored under p and q.

With z_k ~ q(z|x), k = 1..K, the log importance weight is

    log w_k(x) = log p(x, z_k) - log q(z_k | x),

summed over every sample site of the model and the guide. Both the training objectives
(``pyvae.infer.objectives.IWAE``) and the evaluation (``pyvae.infer.evaluate``) use these
functions; every sample site must lie in a vectorized ``pyro.plate("data", ...)`` over the
first dimension of x.

Latent sites of the model that the guide does not sample: a discrete site marked for parallel
enumeration (``pyro.infer.config_enumerate``, ``infer={"enumerate": "parallel"}``) is summed
out exactly, as ``TraceEnum_ELBO`` does,

    log p(x, z) = log sum_y p(x, y, z),

by Pyro's enumeration (``poutine.enum`` puts the values of y in dimensions left of the
particle plate) and its tensor contraction (``pyro.ops.contract.contract_to_tensor``: a
logsumexp over y of the factors that depend on y, and products over any plates nested in the
data plate). Any other model-only latent site is refused: replayed against the guide, it would
be drawn from its prior while its log-prior stayed in the weight, which is then wrong.
"""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch

import pyro
import pyro.poutine as poutine
from opt_einsum import get_symbol
from pyro.distributions import Delta
from pyro.distributions.util import scale_and_mask
from pyro.ops.contract import contract_to_tensor
from pyro.ops.packed import pack, unpack
from pyro.ops.rings import LogRing
from pyro.poutine.util import prune_subsample_sites
from pyro.util import get_rng_state, set_rng_state

from ..errors import ConfigError

DATA_PLATE = "data"
PARTICLE_PLATE = "_iw_particles"


def max_plate_nesting(model: Callable, guide: Callable, *args, joint: bool = False, **kwargs) -> int:
    """How many plate dimensions the model and guide use (traced once, without gradients).

    Also checks (ConfigError if not) that every sample site (of the model only, with
    ``joint``: for ``joint_log_weights``) lies inside the ``"data"`` plate,
    that every latent site of the model is sampled by the guide or enumerated in the model
    (``check_latents``), and that the guide has a density (``check_guide_density``).

    Args:
        model: a Pyro model.
        guide: a Pyro guide of the same arguments.
        *args: the arguments both are called with (the data ``x``).
        joint: check only the model's sites against the ``"data"`` plate (a guide that draws
            all rows' latents at once, as for ``joint_log_weights``).
        **kwargs: keyword arguments both are called with.

    Returns:
        the depth of the deepest vectorized plate of either (1 for the ``"data"`` plate
        alone), as Pyro's inference classes take ``max_plate_nesting``.
    """
    with torch.no_grad(), poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    check_guide_density(guide_trace)
    check_latents(model_trace, guide_trace)
    for name, site in prune_subsample_sites(model_trace).nodes.items():  # e.g. grey pixels
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
                if not (joint and trace is not model_trace):
                    data_frame(name, site)  # every site must be per datapoint
                dims += [-frame.dim for frame in site["cond_indep_stack"] if frame.vectorized]
    return max(dims)


def check_latents(model_trace, guide_trace) -> None:
    """Every latent site of the model is sampled by the guide or marked for parallel enumeration
    (a discrete site, summed out by ``model_log_density``); ConfigError naming the site if not."""
    sampled = guide_sites(guide_trace)
    for name, site in prune_subsample_sites(model_trace).nodes.items():
        if site["type"] != "sample" or site["is_observed"] or name in sampled:
            continue
        how = site["infer"].get("enumerate")
        if how == "parallel" and site["fn"].has_enumerate_support:
            continue
        if how == "sequential":
            raise ConfigError(f"the model's site {name!r} is marked for sequential enumeration; "
                              "mark it {'enumerate': 'parallel'} (config_enumerate's default) to "
                              "have it summed out")
        kind = "discrete" if site["fn"].has_enumerate_support else "a continuous"
        fix = ("mark it for enumeration in the model (@pyro.infer.config_enumerate or "
               "infer={'enumerate': 'parallel'}) or sample it in the guide"
               if site["fn"].has_enumerate_support else "sample it in the guide")
        raise ConfigError(f"the model's latent site {name!r} ({kind} "
                          f"{type(site['fn']).__name__}) is not sampled by the guide, so it has "
                          f"no importance weight: {fix}")


def check_guide_density(guide_trace) -> None:
    """A guide whose latent sites are point masses (``Delta`` without a ``log_density``, as
    ``AutoDelta`` and MAP guides sample) has no density q(z|x), hence no importance weights:
    ConfigError. A Delta that carries its draw's log-density, or follows an auxiliary site
    (``infer={"is_auxiliary": True}``: a deterministic map of that site's draw, whose density
    the auxiliary site and the Delta's log-Jacobian carry, as in ``AutoNormal``), is allowed."""
    sites = [(n, s) for n, s in prune_subsample_sites(guide_trace).nodes.items()
             if s["type"] == "sample" and not s["is_observed"]]
    if any(s["infer"].get("is_auxiliary") for _, s in sites):
        return
    for name, site in sites:
        base = site["fn"]
        while hasattr(base, "base_dist"):
            base = base.base_dist
        if isinstance(base, Delta) and not bool(torch.as_tensor(base.log_density).ne(0).any()):
            raise ConfigError(f"the guide's site {name!r} is a point mass (Delta, as AutoDelta "
                              "draws): a guide without a density gives no importance weights, "
                              "ELBO or AIS start; fit a guide with a density (e.g. AutoNormal) "
                              "to evaluate the model")


def guide_sites(guide_trace) -> set:
    """The names of the guide's sample sites (subsample sites of plates excluded)."""
    return {name for name, site in prune_subsample_sites(guide_trace).nodes.items()
            if site["type"] == "sample"}


def enumerated(model: Callable, nesting: int) -> Callable:
    """The model with its sites marked ``{"enumerate": "parallel"}`` enumerated, in dimensions
    left of the particle plate at ``-(nesting + 1)``. Sites replayed from a guide trace keep the
    guide's value: wrap ``poutine.replay(model, ...)`` (replay then acts first)."""
    return poutine.enum(model, first_available_dim=-(nesting + 2))


def model_log_density(model_trace, sampled: set, particles: int, nesting: int,
                      scaled: bool = False, log_prob: Optional[Callable] = None):
    """log p(x, z) per datapoint from a trace of ``enumerated(model)`` taken inside the particle
    plate (or any plate at dim ``-(nesting + 1)``, as AIS's chains), its plates' subsample sites
    pruned (``prune_subsample_sites``), with the enumerated sites summed out (see the module
    docstring).

    Args:
        sampled: names of the sites whose values come from the guide (never summed out).
        log_prob: ``log_prob(site)`` gives the tensor to use for a site (default: its
            ``unscaled_log_prob``, after ``compute_log_prob``).
        scaled: as in ``site_log_density``; the factors of a sum over enumerated values must
            share one scale (applied outside the log of the sum, as ``TraceEnum_ELBO`` does).

    Returns:
        ``(log_p, data_scale)``: float64 of shape (particles, batch), and the data plate's scale.
    """
    particle_dim = -(nesting + 1)
    summed = {name for name, site in model_trace.nodes.items()
              if site["type"] == "sample" and not site["is_observed"] and name not in sampled
              and site["infer"].get("enumerate") == "parallel"}
    total, data_scale, factors = 0.0, None, []
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        lp = site["unscaled_log_prob"] if log_prob is None else log_prob(site)
        if summed and (name in summed or enum_dims(lp, particle_dim)):
            factors.append((name, site, lp))
            continue
        term, data_scale = site_log_density(name, site, lp, particles, nesting, scaled)
        total = total + term
    if factors:
        term, data_scale = _sum_out(factors, particles, nesting, scaled)
        total = total + term
    if data_scale is None:
        raise ConfigError("the model has no sample sites")
    return total, data_scale


def enum_dims(log_prob: torch.Tensor, particle_dim: int) -> list:
    """The dimensions of a site's log-density left of the particle plate with more than one
    entry: those of the values of enumerated sites it depends on."""
    return [d for d in range(-log_prob.dim(), particle_dim) if log_prob.shape[d] > 1]


def _sum_out(factors, particles, nesting, scaled):
    """log sum_y prod_f exp(f) per datapoint over the enumerated values y, for the factors f
    (site, log-density) that depend on y: ``contract_to_tensor`` in Pyro's log ring, with each
    plate and each enumeration dimension named by a symbol, down to the particle and data
    plates (the plates nested inside the data plate are product-contracted)."""
    particle_dim = -(nesting + 1)
    plate_symbol, enum_symbol, tree, scales = {}, {}, OrderedDict(), set()
    data, data_scale, p_sym = None, 1.0, None

    def symbol():
        return get_symbol(len(plate_symbol) + len(enum_symbol))

    for name, site, lp in factors:
        data = data_frame(name, site)
        data_scale = data.full_size / data.size if data.full_size else 1.0
        dim_to_symbol = {}
        for frame in site["cond_indep_stack"]:
            if frame.vectorized:
                if frame.name not in plate_symbol:
                    plate_symbol[frame.name] = symbol()
                dim_to_symbol[frame.dim] = plate_symbol[frame.name]
                if frame.dim == particle_dim:  # the particle (or AIS chain) plate
                    p_sym = plate_symbol[frame.name]
        ordinal = frozenset(dim_to_symbol.values())
        for d in enum_dims(lp, particle_dim):
            if d not in enum_symbol:
                enum_symbol[d] = symbol()
            dim_to_symbol[d] = enum_symbol[d]
        scale = site["scale"] / data_scale if scaled else 1.0
        if torch.is_tensor(scale) and scale.numel() != 1:
            raise ConfigError(f"site {name!r} depends on an enumerated site and has a "
                              "non-scalar scale; the sum over enumerated values needs one scale")
        scales.add(float(scale))
        masked = scale_and_mask(lp.to(torch.float64), 1.0, site["mask"])
        tree.setdefault(ordinal, []).append(pack(masked, dim_to_symbol))
    if len(scales) > 1:
        raise ConfigError(f"the sites that depend on an enumerated site have different scales "
                          f"{sorted(scales)}; the sum over enumerated values needs one scale")
    d_sym = plate_symbol[DATA_PLATE]
    ring = LogRing(dim_to_size={p_sym: particles, d_sym: data.size})
    term = contract_to_tensor(tree, set(enum_symbol.values()), target_ordinal=frozenset({p_sym, d_sym}),
                              ring=ring)
    term = unpack(term, {p_sym: particle_dim, d_sym: data.dim})
    return scales.pop() * per_datapoint(term, particle_dim, data.dim, particles), data_scale


def data_frame(name, site):
    for frame in site["cond_indep_stack"]:
        if frame.name == DATA_PLATE:
            if not frame.vectorized:
                raise ConfigError(f"site {name!r}: the {DATA_PLATE!r} plate must be vectorized "
                                  "(pyro.plate used as a context manager, not an iterator)")
            return frame
    if site["infer"].get("is_auxiliary"):
        raise ConfigError(
            f"the guide's site {name!r} holds the latents of all datapoints in one draw outside "
            f"the {DATA_PLATE!r} plate (an AutoContinuous guide: AutoDiagonalNormal, "
            "AutoMultivariateNormal, AutoLowRankMultivariateNormal, AutoIAFNormal): its q is one "
            "joint distribution over all rows, so there is no per-datapoint q(z|x), ELBO or "
            "log p(x); fit AutoNormal (one factor per datapoint) or an amortised guide, or estimate "
            "log p(x_1..N) of the rows together with pyvae.evaluate.joint_log_likelihood")
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
        model: a Pyro model of ``x`` with a ``"data"`` plate over its first dimension.
        guide: a Pyro guide of ``x`` with the same plate.
        x: (N, ...) tensor of data (one batch).
        particles: K, the draws z ~ q(z|x) per datapoint.
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
    model_trace, guide_trace = particle_traces(model, guide, x, particles, nesting)
    log_w, data_scale = model_log_density(model_trace, guide_sites(guide_trace), particles,
                                          nesting, scaled)
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"]:
            lq, _ = site_log_density(name, site, site["unscaled_log_prob"], particles, nesting,
                                     scaled)
            log_w = log_w - lq
    return log_w, data_scale


def particle_traces(model: Callable, guide: Callable, x: torch.Tensor, particles: int,
                    nesting: int):
    """(model trace, guide trace) of ``particles`` draws z ~ q(z|x) in one guide call, inside
    the particle plate at dim ``-(nesting + 1)``; the model replayed on them with its
    enumerated sites enumerated; subsample sites pruned, log-densities computed."""
    with pyro.plate(PARTICLE_PLATE, particles, dim=-(nesting + 1)):
        guide_trace = poutine.trace(guide).get_trace(x)
        replayed = enumerated(poutine.replay(model, trace=guide_trace), nesting)
        model_trace = poutine.trace(replayed).get_trace(x)
    guide_trace = prune_subsample_sites(guide_trace)
    model_trace = prune_subsample_sites(model_trace)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    return model_trace, guide_trace


def joint_log_weights(model: Callable, guide: Callable, x: torch.Tensor, particles: int,
                      nesting: int) -> torch.Tensor:
    """log w = log p(X, Z) - log q(Z | X) for the rows X of x as a whole, shape (particles,),
    float64: for a guide whose q couples the datapoints (an ``AutoContinuous`` guide draws one
    vector holding every row's latents, outside the data plate), which has no per-datapoint
    weights. Drawn as ``log_weights`` draws (one guide call for all particles); the model's
    log-density is ``model_log_density`` summed over the rows, the guide's every site summed
    over all dimensions but the particles'. Unscaled by any subsampling."""
    model_trace, guide_trace = particle_traces(model, guide, x, particles, nesting)
    log_p, _ = model_log_density(model_trace, guide_sites(guide_trace), particles, nesting)
    log_w = log_p.sum(1)
    for site in guide_trace.nodes.values():
        if site["type"] == "sample" and not site["is_observed"]:
            lq = scale_and_mask(site["unscaled_log_prob"], 1.0, site["mask"]).to(torch.float64)
            lq = lq.reshape((1,) * (nesting + 1 - lq.dim()) + tuple(lq.shape))
            right = list(range(lq.dim() - nesting, lq.dim()))  # the plates' dims, right of the particles'
            log_w = log_w - (lq.sum(right) if right else lq).reshape(-1).expand(particles)
    return log_w


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


@dataclass
class Batch:
    """One call's worth of datapoints: the model and guide run on ``x``, with the data plate's
    subsample fixed to ``subsample`` (None: the plate covers the rows of ``x``); the results
    for rows ``rows`` of the evaluated x are the last ``len(rows)`` of the call's."""

    x: torch.Tensor
    subsample: Optional[torch.Tensor]
    rows: range

    def wrap(self, fn: Callable) -> Callable:
        """``fn`` (model or guide) with the data plate's subsample fixed to this batch's."""
        if self.subsample is None:
            return fn
        return poutine.condition(fn, data={DATA_PLATE: self.subsample})

    def keep(self, values: torch.Tensor) -> torch.Tensor:
        """The columns (datapoints, last dimension) of a call's results that are new."""
        return values[..., values.shape[-1] - len(self.rows):]


def batches(guide: Callable, x: torch.Tensor, batch_size: int) -> List[Batch]:
    """How x reaches the model and guide, ``batch_size`` rows at a time where the guide's
    ``"data"`` plate follows x; else as its plate requires:

    - a plate as large as the rows it is given (``pyro.plate("data", len(x))`` in an amortised
      guide, or a minibatch plate ``pyro.plate("data", N, subsample=rows of x)``): consecutive
      slices of x;
    - a plate of fixed size N = len(x), not subsampled (``AutoNormal`` fitted to x: parameters
      per datapoint of all of x): the whole of x in one call;
    - a subsampled plate (``subsample_size=B``, in the guide as in the model): the model and
      guide get all of x, and the plate's subsample is fixed to rows 0..B-1, B..2B-1, ... (the
      last batch is the last B rows, of which the new ones are kept).

    The guide is traced once on the first rows (and once on x) to see its plate; ConfigError
    if its size is not len(x).
    """
    n = x.shape[0]
    frame = _guide_data_frame(guide, x[:batch_size])
    if frame is None or frame.size == min(batch_size, n):
        return [Batch(x[lo:lo + batch_size], None, range(lo, min(lo + batch_size, n)))
                for lo in range(0, n, batch_size)]
    frame = _guide_data_frame(guide, x)
    full = frame.full_size or frame.size
    if full != n:
        raise ConfigError(f"the guide's {DATA_PLATE!r} plate has {full} datapoints and x has {n}: "
                          "the guide holds parameters for each datapoint it was fitted to (as "
                          "AutoNormal does); evaluate it on that data, all rows in their order")
    if frame.size == full:
        return [Batch(x, None, range(n))]
    size = frame.size
    return [Batch(x, torch.arange(min(lo, n - size), min(lo, n - size) + size, device=x.device),
                  range(lo, min(lo + size, n))) for lo in range(0, n, size)]


def _guide_data_frame(guide, x):
    """The ``"data"`` plate frame of the guide's first sample site in that plate, or None.
    The random streams are left as they were: looking at the plate draws no numbers of the
    evaluation's."""
    rng = get_rng_state()
    with torch.no_grad(), poutine.block():
        try:
            trace = poutine.trace(guide).get_trace(x)
        except (RuntimeError, ValueError):  # reported by the checks that trace model and guide
            return None
        finally:
            set_rng_state(rng)
    for site in prune_subsample_sites(trace).nodes.values():
        if site["type"] == "sample":
            for frame in site["cond_indep_stack"]:
                if frame.name == DATA_PLATE:
                    return frame
    return None
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
