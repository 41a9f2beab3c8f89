"""Non-amortized variational inference: one q_i per datapoint, refined from the user's guide.

An amortized guide shares one network over all x; its ELBO falls short of log p(x) by
KL(q(z|x) || p(z|x)), the inference gap. Cremer, Li & Duvenaud (2018) split it in two:

    approximation gap  log p(x) - max_{q in family} ELBO(q)        (the family's limit)
    amortization gap   max_{q in family} ELBO(q) - ELBO(q(z|x))    (the encoder's shortfall)

``refine`` estimates the max over the family for any Pyro model whose latent sites lie in
plate "data": every datapoint gets its own parameters, initialised from the user's guide, and
SVI with ``Trace_ELBO`` optimises them while the model stays fixed.

One joint family over all latent sites. The latent sites' values, mapped to unconstrained
space by u_s = biject_to(support_s)^-1(z_s), are flattened per datapoint and concatenated into
one vector u of length D = sum_s D_s; the family is a distribution q_i(u) over that vector,
and each site takes z_s = biject_to(support_s)(u_s). The density of the latents is then

    log q_i(z) = log q_i(u) - sum_s log|det dz_s/du_s|,

so Gamma, Beta, Dirichlet or any other supported latent is refined on its own support and
the ELBO is a bound on log p(x). A joint family rather than one family per site, because the
posterior couples the layers of a hierarchical model (z2 -> z -> x): a full-rank or flow
family over u captures those correlations, and a per-site family would add their KL to the
approximation gap, which is then no longer the family's limit but the factorisation's. (The
diagonal family is mean-field over every coordinate of every site either way.)

The refined guide is a Pyro guide of the same batch x. For a model with one latent site whose
support is the reals and whose value is a vector per datapoint (pyvae's ``VAE``, Pyro's VAE
example), it samples that site directly from q_i; otherwise it samples u at an auxiliary site
``AUXILIARY_SITE`` and each latent site from a ``Delta`` at z_s whose log-density is
-log|det dz_s/du_s|, as Pyro's ``AutoContinuous`` guides do. Every family of
``pyvae.guides.GUIDES`` can be refined:

    diagonal, full-rank, low-rank   per-datapoint loc and scale / Cholesky factor / (F, diag)
    flows (iaf, planar, radial,     per-datapoint base N(m_i, diag s_i^2) and per-datapoint
    householder, spline, sylvester) context c_i; the transforms are those of the encoder,
                                    conditioned on c_i instead of h(x_i), and their networks
                                    are fine-tuned on the refined batch

For a flow, q_i(u) = T_{c_i} # N(m_i, diag s_i^2): m_i, s_i and c_i start at the encoder's
values for x_i (so refinement starts at the amortized q(z|x_i)), and the transform networks'
weights, shared by the rows of the batch but by nothing else, are optimised with them. The
flow's parameters for row i (the planar u, w, b; the Sylvester Q, R, R~, b; the MADE outputs of
an IAF) are the networks' outputs at c_i, so they move freely per datapoint within the image of
the networks.

Families by name. The Gaussian families are this module's own; a flow family comes from a
registry that maps its name to its class: ``refine(families=...)``, by default ``FLOW_FAMILIES``,
which pyvae's top level binds to ``pyvae.guides.GUIDES`` itself. What refine needs of a
flow is the duck-typed ``FlowFamily``; an ``init`` that has its attributes is a flow, of the
family ``name`` when ``type(init) is families[name]``.
"""
import copy
import math
import warnings
from contextlib import ExitStack, contextmanager
from typing import Dict, List, Mapping, Optional, Protocol

import torch
from torch import nn
from torch.distributions import (Distribution, Independent, LowRankMultivariateNormal,
                                 MultivariateNormal, Normal)
from torch.distributions.transforms import ComposeTransform, IndependentTransform

import pyro
import pyro.distributions as dist
import pyro.optim
from pyro import poutine
from pyro.distributions.util import sum_rightmost
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from pyro.poutine.util import prune_subsample_sites

from ..config import choose
from ..errors import ConfigError, TrainingDiverged
from .ais import site_bijection as bijection
from .weights import DATA_PLATE, check_x, data_frame

# infer/ imports no model: refine owns the Gaussian families and takes the flow families as a
# registry (name -> class), so pyvae's guides reach it from above and any other flow as an argument
GAUSSIAN_FAMILIES = ("diagonal", "full-rank", "low-rank")
#: the flow families refine builds by name (name -> class, see ``FlowFamily``); pyvae's top level
#: binds it to ``pyvae.guides.GUIDES`` (the Gaussian names in it are skipped)
FLOW_FAMILIES: Dict[str, type] = {}
#: the sample site of the joint unconstrained vector u (models with several or constrained latents)
AUXILIARY_SITE = "refined_latents"
#: draws of the user's guide whose moments start the refinement (when q has none in closed form)
INIT_SAMPLES = 256


class FlowFamily(Protocol):
    """What refine needs of a member of a flow family (duck-typed; pyvae's ``Flow`` is one).

    Attributes:
        body: ``body(features)`` -> the context h(x), shape (N, context_dim).
        base: ``base.condition(context)`` -> the base N(m, diag s^2) over u, an ``Independent``
            of a distribution with ``loc`` and ``scale`` of shape (N, D).
        transforms: an ``nn.ModuleList`` of conditional transforms (``t.condition(context)``).

    Calling the member on features gives q(u | x), a distribution with batch shape (N,). Its
    class, called as ``cls(context_dim, latent_dim, hidden=())``, builds a fresh member whose
    body is the identity (the context is the features); where its transforms start as the
    identity, as pyvae's do, refinement from a Gaussian ``init`` starts at that Gaussian.
    """

    body: nn.Module
    base: nn.Module
    transforms: nn.ModuleList


def _is_flow(init) -> bool:
    """Whether ``init`` has what refine needs of a flow (``FlowFamily``'s attributes)."""
    return all(hasattr(init, name) for name in ("body", "base", "transforms"))


def _flow_families(families: Optional[Mapping[str, type]]) -> Dict[str, type]:
    """The flow families by name: ``families`` (default ``FLOW_FAMILIES``) without the names of
    the Gaussian families, which are refine's own (so a registry of all guide families serves).

    Args:
        families: a mapping from a flow family's name to its class, or None.
    """
    if families is None:
        families = FLOW_FAMILIES
    if not isinstance(families, Mapping):
        raise ConfigError(f"families must map a flow family's name to its class, got "
                          f"{type(families).__name__}")
    return {name: cls for name, cls in families.items() if name not in GAUSSIAN_FAMILIES}


class LatentSite:
    """One latent site of the model, as the refined guide rebuilds it from its slice of u.

    Attributes:
        name: the site's name.
        transform: biject_to(support): u_s -> z_s.
        event_dim: the model distribution's event dimensions at the site.
        frames: the site's vectorized plates, (name, size, dim), outermost first.
        data_axis: the axis of the data plate in u_s, counted from the right (negative).
        shape: u_s's shape right of the data axis (one datapoint's unconstrained value).
        size: the number of coordinates in ``shape``.
    """

    def __init__(self, name, site):
        self.name = name
        self.transform = bijection(name, site["fn"].support)
        self.event_dim = site["fn"].event_dim
        frame = data_frame(name, site)
        if frame.dim != -1:
            raise ConfigError(f"site {name!r}: refine needs plate {DATA_PLATE!r} at dim=-1, the "
                              f"outermost plate (it is at dim={frame.dim})")
        if frame.full_size is not None and frame.full_size != frame.size:
            raise ConfigError(f"site {name!r}: refine needs the whole batch in plate "
                              f"{DATA_PLATE!r} (it subsamples {frame.size} of {frame.full_size} "
                              f"rows); refine the rows a subsample draws by passing them as x")
        self.frames = [(f.name, f.size, f.dim) for f in reversed(site["cond_indep_stack"])
                       if f.vectorized]
        with torch.no_grad():
            u = self.transform.inv(site["value"])
        self.data_axis = frame.dim - self.transform.domain.event_dim
        if -self.data_axis > u.dim() or u.shape[self.data_axis] != frame.size:
            raise ConfigError(f"site {name!r} has shape {tuple(site['value'].shape)}, which has "
                              f"no axis for plate {DATA_PLATE!r} at dim {frame.dim}")
        if any(s != 1 for s in u.shape[:u.dim() + self.data_axis]):
            raise ConfigError(f"site {name!r} has batch shape {tuple(site['fn'].batch_shape)}: "
                              f"refine needs plate {DATA_PLATE!r} to be the only plate of a latent "
                              "site (declare per-datapoint dimensions with .to_event(...) instead "
                              "of a nested plate)")
        self.value_shape = tuple(site["value"].shape)
        self.shape = tuple(u.shape[u.dim() + self.data_axis + 1:])
        self.size = math.prod(self.shape)
        self.is_real_vector = (self.event_dim == 1 and self.transform.domain.event_dim == 1 and
                               len(self.shape) == 1 and frame.dim == -1 and
                               _is_identity(self.transform))

    def pack(self, z):
        """(..., N, size): a value of the site (with any leading sample dims) as unconstrained
        coordinates per datapoint."""
        u = self.transform.inv(z)
        u = u.movedim(self.data_axis, -1)
        u = u.reshape(u.shape[:u.dim() - len(self.shape) - 1] + (self.size, u.shape[-1]))
        return u.transpose(-1, -2)

    def unpack(self, u):
        """(..., N, size) -> u_s with the data axis in place (the inverse of ``pack``, before
        the bijection)."""
        u = u.transpose(-1, -2)
        u = u.reshape(u.shape[:-2] + self.shape + (u.shape[-1],))
        return u.movedim(-1, self.data_axis)


def _is_identity(transform):
    while isinstance(transform, IndependentTransform):
        transform = transform.base_transform
    return isinstance(transform, ComposeTransform) and not transform.parts


class Latents:
    """The latent sites of a model on a batch of N rows, and the joint vector u over them.

    Built from one trace of the model (latents drawn from the prior). Sites that the model
    enumerates (discrete, ``infer={"enumerate": "parallel"}``) are summed out by
    ``TraceEnum_ELBO`` and not refined; any other discrete latent site is refused.
    """

    def __init__(self, model_trace, n):
        self.n, self.sites, self.enumerated = n, [], []
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            if site["fn"].support.is_discrete:
                if site["infer"].get("enumerate") == "parallel":
                    self.enumerated.append(name)
                    continue
                raise ConfigError(f"latent site {name!r} is discrete; refine fits continuous "
                                  "latents (mark the site for enumeration, e.g. with "
                                  "pyro.infer.config_enumerate, to have it summed out)")
            self.sites.append(LatentSite(name, site))
        if not self.sites:
            raise ConfigError("the model has no continuous latent sample sites to refine")
        self.dim = sum(s.size for s in self.sites)
        self.direct = len(self.sites) == 1 and self.sites[0].is_real_vector

    @property
    def names(self) -> List[str]:
        return [s.name for s in self.sites]

    def pack(self, values):
        """{name: z_s} -> u of shape (..., N, D)."""
        return torch.cat([s.pack(values[s.name]) for s in self.sites], -1)

    def sample(self, q, n=None):
        """Sample every latent site from q over u (batch (n,), event (D,)), in a Pyro guide of
        n rows (default N)."""
        # each plate once (entering the same plate object again adds no second subsample site)
        plates = {DATA_PLATE: pyro.plate(DATA_PLATE, self.n if n is None else n, dim=-1)}
        for site in self.sites:
            for name, size, dim in site.frames:
                if name not in plates:
                    plates[name] = pyro.plate(name, size, dim=dim)
        if self.direct:
            with plates[DATA_PLATE]:
                pyro.sample(self.sites[0].name, q)
            return
        with plates[DATA_PLATE]:
            u = pyro.sample(AUXILIARY_SITE, q, infer={"is_auxiliary": True})
        offset = 0
        for site in self.sites:
            u_s = site.unpack(u[..., offset:offset + site.size])
            offset += site.size
            z = site.transform(u_s)
            # log q(z_s | u) = -log|det dz_s/du_s| (the density of u is q's, at the auxiliary site)
            log_det = site.transform.log_abs_det_jacobian(u_s, z)
            log_det = sum_rightmost(log_det, log_det.dim() - (z.dim() - site.event_dim))
            with ExitStack() as stack:
                for name, _, _ in site.frames:
                    stack.enter_context(plates[name])
                pyro.sample(site.name, dist.Delta(z, log_density=-log_det,
                                                  event_dim=site.event_dim))


class RefinedGuide(nn.Module):
    """Per-datapoint Gaussians q_i(u) for one fixed batch x of N datapoints.

    ``guide(x)`` is a Pyro guide: inside plate "data" of size N it samples the model's latent
    sites, with their unconstrained values u ~ N(loc_i, diag scale_i^2) ("diagonal"),
    N(loc_i, L_i L_i^T) ("full-rank") or N(loc_i, F_i F_i^T + diag d_i) ("low-rank"). It must be
    called with the batch it was refined on (the parameters belong to those rows).

    Args:
        x: the batch (N, ...) the guide belongs to.
        family: "diagonal", "full-rank" or "low-rank".
        loc: (N, D) initial means.
        cov: (N, D, D) initial covariances (the diagonal family takes their diagonals).
        rank: for "low-rank" without ``factor``, the number of factor columns (the top
            eigenvectors of ``cov``).
        factor: for "low-rank", an initial factor F of shape (N, D, rank).
        latents: the model's latent sites (``Latents``).

    Attributes:
        latents: the model's latent sites and how u maps onto them (``Latents``).
        history: ELBO per datapoint (nats, one Monte-Carlo estimate) after each SVI step.
    """

    def __init__(self, x: torch.Tensor, family: str, loc: torch.Tensor, cov: torch.Tensor,
                 rank: int = 2, factor: Optional[torch.Tensor] = None,
                 latents: Optional[Latents] = None):
        super().__init__()
        choose(family, GAUSSIAN_FAMILIES, "Gaussian refinement family")
        self.family, self.latents = family, latents
        self.register_buffer("x", x.detach())
        self.loc = nn.Parameter(loc.detach().clone())
        if family == "low-rank":
            # cov = F F^T + diag(d): F from the initial q's own factor, else the top eigenvectors
            # of its covariance; d = what the factor leaves of the variances (kept positive)
            if factor is None:
                evals, evecs = torch.linalg.eigh(cov.detach())
                factor = evecs[..., -rank:] * evals[..., -rank:].clamp(min=0).sqrt().unsqueeze(-2)
            variance = cov.diagonal(dim1=-2, dim2=-1).detach()
            rest = (variance - factor.pow(2).sum(-1)).clamp(min=1e-3 * variance)
            self.factor = nn.Parameter(factor.detach().clone())
            self.log_diag = nn.Parameter(0.5 * rest.log())
        elif family == "diagonal":
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

    def distribution(self, path_gradient: bool = False, rows: slice = slice(None)) -> Distribution:
        """q_i(u) for the rows ``rows`` (default all): batch shape (N,), event shape (D,).

        With ``path_gradient``, ``log_prob`` sees the parameters detached (see ``_PathGradient``).

        Args:
            path_gradient: score draws with the parameters detached (the gradient keeps only
                the path through u: "sticking the landing").
            rows: the datapoints, as a slice of the N rows.

        Returns:
            a Gaussian over u with batch shape (rows,) and event shape (D,).
        """
        params = [getattr(self, name, None) for name in ("loc", "log_scale", "scale_raw",
                                                          "factor", "log_diag")]
        params = [None if p is None else p[rows] for p in params]
        q = self._gaussian(*params)
        if not path_gradient:
            return q
        detached = self._gaussian(*(None if p is None else p.detach() for p in params))
        return _PathGradient(q, detached)

    def _gaussian(self, loc, log_scale, scale_raw, factor=None, log_diag=None):
        if self.family == "low-rank":
            return dist.LowRankMultivariateNormal(loc, factor, (2 * log_diag).exp())
        if self.family == "diagonal":
            return dist.Normal(loc, log_scale.exp()).to_event(1)
        scale = scale_raw.diagonal(dim1=-2, dim2=-1).exp()
        eye = torch.eye(scale.shape[-1], dtype=scale.dtype, device=scale.device)
        scale_tril = scale.unsqueeze(-1) * (scale_raw.tril(-1) + eye)
        return dist.MultivariateNormal(loc, scale_tril=scale_tril)

    def forward(self, x: torch.Tensor, path_gradient: bool = False) -> None:
        rows = _rows(self.x, x)
        self.latents.sample(self.distribution(path_gradient, rows), x.shape[0])


def _rows(own, x):
    """The slice of the refined batch ``own`` that x is: all of it, or consecutive rows of it
    (as ``pyvae.evaluate`` calls a guide, ``batch_size`` rows at a time)."""
    if x.shape == own.shape and torch.equal(x, own):
        return slice(None)
    if x.dim() == own.dim() and x.shape[1:] == own.shape[1:] and 0 < x.shape[0] <= own.shape[0]:
        first = (own.flatten(1) == x[0].flatten()).all(1).nonzero().flatten().tolist()
        for lo in first:
            if torch.equal(own[lo:lo + x.shape[0]], x):
                return slice(lo, lo + x.shape[0])
    raise ConfigError(f"this refined guide belongs to the batch of {own.shape[0]} datapoints it "
                      f"was refined on; call it with that batch or consecutive rows of it")


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


class RefinedFlow(nn.Module):
    """Per-datapoint flows q_i(u) = T_{c_i} # N(m_i, diag s_i^2) for one fixed batch x.

    Args:
        x: the batch (N, x_dim) the guide belongs to.
        family: the flow family's name (kept as ``family``).
        flow: a member of that family (``FlowFamily``, e.g. a ``pyvae.guides.Flow``) whose
            transforms are copied (and then fine-tuned).
        loc: (N, D) initial base means m_i.
        log_scale: (N, D) initial base log-scales log s_i.
        context: (N, context_dim) initial per-datapoint contexts c_i.
        latents: the model's latent sites (``Latents``).

    ``path_gradient`` is not available: a flow without an inverse can only score the very
    samples it drew, which a copy with detached parameters cannot do.
    """

    def __init__(self, x, family: str, flow: FlowFamily, loc, log_scale, context,
                 latents: Optional[Latents] = None):
        super().__init__()
        self.family = family
        self.latents = latents
        self.register_buffer("x", x.detach())
        self.loc = nn.Parameter(loc.detach().clone())
        self.log_scale = nn.Parameter(log_scale.detach().clone())
        self.context = nn.Parameter(context.detach().clone())
        self.transforms = copy.deepcopy(flow.transforms)
        for p in self.transforms.parameters():
            p.requires_grad_(True)
        self.history = []

    def distribution(self, path_gradient: bool = False, rows: slice = slice(None)) -> Distribution:
        base = dist.Normal(self.loc[rows], self.log_scale[rows].exp()).to_event(1)
        context = self.context[rows]
        return dist.TransformedDistribution(base, [t.condition(context) for t in self.transforms])

    def forward(self, x: torch.Tensor, path_gradient: bool = False) -> None:
        rows = _rows(self.x, x)
        self.latents.sample(self.distribution(rows=rows), x.shape[0])


def refine(model, x: torch.Tensor, init=None, family: str = "diagonal", steps: int = 500,
           lr: float = 1e-2, lr_final: Optional[float] = None, particles: int = 1,
           path_gradient: bool = True, seed: Optional[int] = None,
           validate: bool = False, features: Optional[torch.Tensor] = None,
           rank: Optional[int] = None, families: Optional[Mapping[str, type]] = None):
    """Fit per-datapoint q_i to the posterior of a fixed model by SVI (Trace_ELBO).

    One joint family over the unconstrained values of all the model's latent sites (see the
    module docstring): any site names, any number of sites, any support that
    ``torch.distributions.biject_to`` maps to the reals. Sites the model enumerates are summed
    out (``TraceEnum_ELBO``); other discrete latents are refused.

    Args:
        model: a Pyro model ``model(x)`` whose sample sites lie in plate "data" over x's rows
            (dim -1), the only plate of every latent site (e.g. ``vae.model``). Its parameters
            (``pyro.module``, ``pyro.param``, with the values the caller's param store holds)
            are held fixed: they are hidden from the optimiser and do not require gradients
            during refinement.
        x: the batch, shape (N, ...).
        init: where to start:

            * a Pyro guide ``guide(x)`` of the model (e.g. ``vae.guide``, an autoguide, your
              own): q starts at the mean and covariance of the unconstrained values of
              ``INIT_SAMPLES`` of its draws per datapoint (in closed form for a Gaussian
              guide of one real latent site); sites the guide does not sample start at the
              moments of the model's prior draws given the guide's;
            * for a model with one latent site, a callable ``x -> q(z|x)`` (``vae.encoder``,
              ``vae.encode``) or a distribution with batch shape (N,) over that site;
            * None: N(0, I) on the unconstrained values.

            A flow family starts from a flow of that family (e.g. ``vae.encoder``) as it is;
            from any other ``init`` as a fresh flow with no hidden layers whose base starts at
            that start's mean and variances; from None as a fresh flow.
        family: "diagonal", "full-rank", "low-rank" or the name of a flow family in
            ``families`` (by default any name in ``pyvae.guides.GUIDES``).
        features: what a callable ``init`` returning a distribution is applied to (default
            x), e.g. ``vae.encoder_body(x)``.
        rank: for "low-rank", the number of factor columns (default: the initial q's, else 2).
        steps: SVI steps.
        lr: Adam learning rate, decayed exponentially to ``lr_final`` (default ``lr / 100``).
            Adam's steps stay about ``lr`` in size however noisy the gradient, so without the
            decay the per-datapoint parameters jitter around the optimum instead of settling.
        lr_final: the learning rate of the last step (None: ``lr / 100``).
        particles: samples of z per datapoint per step (vectorised).
        path_gradient: drop the zero-mean score term from the gradient estimate ("sticking the
            landing"): same ELBO and expected gradient, much less noise near the optimum.
        seed: if given, seeds Pyro/torch before the first step.
        validate: keep Pyro's distribution argument checks on (slow; off by default, as in
            ``Trainer``).
        families: the flow families by name, each name mapped to the family's class (see
            ``FlowFamily``); names of the Gaussian families in it are ignored (they are
            refine's own). Default ``FLOW_FAMILIES``: ``pyvae.guides.GUIDES``.

    Returns:
        A ``RefinedGuide`` (Gaussian families) or ``RefinedFlow``: call it as a Pyro guide with
        the same x. ``path_gradient`` applies to the Gaussian families only.

    Raises:
        TrainingDiverged: the loss became NaN or infinite; the message names the sites whose
            log-density is not finite at the refined guide's draws, if any.
    """
    flows = _flow_families(families)
    choose(family, GAUSSIAN_FAMILIES + tuple(flows), "refinement family")
    if int(steps) < 0 or int(particles) < 1:
        raise ConfigError(f"need steps >= 0 and particles >= 1, got {steps} and {particles}")
    lr_final = lr / 100 if lr_final is None else lr_final
    if not (lr > 0 and lr_final > 0 and math.isfinite(lr) and math.isfinite(lr_final)):
        raise ConfigError(f"learning rates must be positive, got lr={lr}, lr_final={lr_final}")
    x = check_x(x)
    if seed is not None:
        pyro.set_rng_seed(seed)
    n = x.shape[0]
    store = pyro.get_param_store()
    # a private copy of the parameter store: the model's pyro.param/pyro.module calls find the
    # caller's values there, and the refined guide's parameters leave the caller's store as it was
    with store.scope(state=store.get_state()):
        with torch.no_grad(), pyro.validation_enabled(validate):
            trace = poutine.trace(model).get_trace(x)
        latents = Latents(prune_subsample_sites(trace), n)
        features = x if features is None else features
        start = _start(init, model, x, features, latents)
        if family in GAUSSIAN_FAMILIES:
            guide = _gaussian_guide(start, x, family, latents, rank)
        else:
            guide = _flow_guide(start, x, features, family, flows[family], latents)
            path_gradient = False
        frozen = [site["value"].unconstrained() for site in trace.nodes.values()
                  if site["type"] == "param"]
        fixed_model = poutine.block(model, hide_types=["param"])

        def train_guide(x):
            pyro.module("refined", guide)
            guide(x, path_gradient)

        # ClippedAdam's lrd multiplies the learning rate by lrd after every step
        decay = (lr_final / lr) ** (1.0 / max(int(steps), 1))
        optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": decay})
        vectorize = int(particles) > 1
        if latents.enumerated:
            loss = TraceEnum_ELBO(num_particles=int(particles), vectorize_particles=vectorize,
                                  max_plate_nesting=_plate_nesting(trace))
        else:
            loss = Trace_ELBO(num_particles=int(particles), vectorize_particles=vectorize)
        svi = SVI(fixed_model, train_guide, optim, loss)
        with _no_grad_for(frozen), pyro.validation_enabled(validate), warnings.catch_warnings():
            # pyro.module warns about every frozen parameter it skips: expected here
            warnings.filterwarnings("ignore", message=".*was not registered in the param store")
            for step in range(int(steps)):
                value = svi.step(x)
                if not math.isfinite(value):
                    raise TrainingDiverged(f"refinement loss became {value} at step {step + 1}"
                                           f"{_why_not_finite(fixed_model, guide, x)}")
                guide.history.append(-value / n)
    return guide


def _plate_nesting(trace):
    dims = [-f.dim for site in trace.nodes.values() if site["type"] == "sample"
            for f in site["cond_indep_stack"] if f.vectorized]
    return max(dims, default=0)


@torch.no_grad()
def _why_not_finite(model, guide, x):
    """Which sites have a non-finite log-density at one draw of the refined guide, as the end
    of the divergence message (a lower lr does not help there: the model's distributions get
    arguments outside their domain)."""
    with poutine.block():
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    bad = []
    for where, tr in (("model", model_trace), ("guide", guide_trace)):
        for name, site in prune_subsample_sites(tr).nodes.items():
            if site["type"] != "sample":
                continue
            try:
                finite = bool(torch.isfinite(site["fn"].log_prob(site["value"])).all())
            except (ValueError, RuntimeError):  # e.g. an invalid argument under validation
                finite = False
            if not finite:
                bad.append(f"{name!r} ({where})")
    if bad:
        return (f": the log-density of site {', '.join(bad)} is not finite at the refined "
                "guide's draws; check that site's distribution arguments (refine(validate=True) "
                "names an invalid one)")
    return "; every site's log-density is finite at a fresh draw, so the steps overshoot: " \
           "try a lower lr"


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


class _Start:
    """Where the refinement starts: loc (N, D) and cov (N, D, D) of the initial q over u (None
    for N(0, I)), the initial q itself where it is one distribution, and the initial flow
    encoder where ``init`` is one (a flow family then starts from it as it is)."""

    def __init__(self, loc=None, cov=None, q=None, flow=None):
        self.loc, self.cov, self.q, self.flow = loc, cov, q, flow


@torch.no_grad()
def _start(init, model, x, features, latents):
    """Where the refinement starts (``_Start``), from ``init``.

    Args:
        init: ``refine``'s ``init`` (a Pyro guide, a callable x -> distribution, a
            distribution, or None).
        model: the Pyro model.
        x: the batch (N, ...).
        features: what a callable ``init`` returning a distribution is applied to.
        latents: the model's latent sites (``Latents``).
    """
    n, dtype = x.shape[0], x.dtype
    if init is None:
        return _Start()
    if isinstance(init, Distribution):
        return _from_distribution(init, latents, n, dtype)
    if not callable(init):
        raise ConfigError(f"init must be a Pyro guide, a callable x -> distribution or a "
                          f"distribution, got {type(init).__name__}")
    with poutine.block():
        guide_trace = poutine.trace(init).get_trace(features)
    returned = guide_trace.nodes["_RETURN"]["value"]
    if isinstance(returned, Distribution):
        start = _from_distribution(returned, latents, n, dtype)
        start.flow = init if _is_flow(init) else None
        return start
    if features is not x:
        raise ConfigError("features= applies to an init that returns a distribution; a Pyro "
                          "guide is called with x")
    if not any(site["type"] == "sample" for site in guide_trace.nodes.values()):
        raise ConfigError(f"init {type(init).__name__} is neither a Pyro guide (it samples no "
                          "site) nor a callable that returns a distribution")
    site = guide_trace.nodes.get(latents.names[0])
    if latents.direct and site is not None and _is_gaussian(site["fn"]):
        return _from_distribution(site["fn"], latents, n, dtype)
    draws = []
    with poutine.block():
        for _ in range(INIT_SAMPLES):
            guide_trace = poutine.trace(init).get_trace(x)
            values = {name: guide_trace.nodes[name]["value"] for name in latents.names
                      if name in guide_trace.nodes}
            if len(values) < len(latents.names):  # sites the guide leaves to the model's prior
                model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
                values = {name: model_trace.nodes[name]["value"] for name in latents.names}
            draws.append(latents.pack(values))
    return _Start(*_moments(torch.stack(draws).to(dtype), latents))


def _is_gaussian(q):
    return (isinstance(q, Independent) and isinstance(q.base_dist, Normal)
            and q.reinterpreted_batch_ndims == 1) or isinstance(
                q, (MultivariateNormal, LowRankMultivariateNormal))


def _from_distribution(q, latents, n, dtype):
    """The start from a distribution over the model's only latent site (its batch over rows)."""
    if len(latents.sites) != 1:
        raise ConfigError(f"init gives one distribution, but the model has latent sites "
                          f"{', '.join(map(repr, latents.names))}; pass a Pyro guide of the "
                          "model as init (e.g. init=guide)")
    site = latents.sites[0]
    if tuple(q.batch_shape) + tuple(q.event_shape) != site.value_shape:
        raise ConfigError(f"init distribution has batch {tuple(q.batch_shape)}, event "
                          f"{tuple(q.event_shape)}; expected ({n},), {site.value_shape[1:]} "
                          f"(site {site.name!r})")
    if latents.direct and _is_gaussian(q):
        cov = torch.diag_embed(q.variance) if isinstance(q, Independent) else q.covariance_matrix
        return _Start(q.mean.to(dtype), cov.to(dtype), q)
    return _Start(*_moments(latents.pack({site.name: q.sample((INIT_SAMPLES,))}).to(dtype),
                            latents), q)


def _moments(u, latents):
    """Mean (N, D) and covariance (N, D, D) of draws u of shape (S, N, D)."""
    if not bool(torch.isfinite(u).all()):
        raise ConfigError(f"the initial guide's draws of {', '.join(map(repr, latents.names))} "
                          "lie on the edge of the support (infinite unconstrained values)")
    loc = u.mean(0)
    centred = u - loc
    return loc, torch.einsum("sni,snj->nij", centred, centred) / (u.shape[0] - 1)


def _gaussian_guide(start, x, family, latents, rank):
    loc, cov = start.loc, start.cov
    if loc is None:  # N(0, I) on u
        n, d = x.shape[0], latents.dim
        loc = torch.zeros(n, d, dtype=x.dtype, device=x.device)
        cov = torch.eye(d, dtype=x.dtype, device=x.device).expand(n, d, d)
    factor = None
    if family == "low-rank":
        q = start.q
        if isinstance(q, LowRankMultivariateNormal) and rank in (None, q.cov_factor.shape[-1]):
            factor = q.cov_factor
        rank = factor.shape[-1] if factor is not None else int(rank or 2)
        if not 1 <= rank <= latents.dim:
            raise ConfigError(f"rank must be between 1 and z_dim={latents.dim}, got {rank}")
    return RefinedGuide(x, family, loc, cov, rank=rank or 2,
                        factor=None if factor is None else factor.to(loc.dtype), latents=latents)


@torch.no_grad()
def _flow_guide(start, x, features, family, cls, latents):
    """The per-datapoint flows of family ``family``, from the start's flow or a fresh one.

    Args:
        start: where the refinement starts (``_Start``).
        x: the batch (N, ...).
        features: what the flow's body is applied to (N, F).
        family: the flow family's name.
        cls: its class (``FlowFamily``); a fresh member is ``cls(F, D, hidden=())``.
        latents: the model's latent sites (``Latents``).
    """
    init = start.flow
    if init is None:
        init = cls(features.shape[-1], latents.dim, hidden=()).to(features)
    if type(init) is not cls:
        raise ConfigError(f"refining the {family!r} family needs init to be a {family!r} guide "
                          f"family (e.g. vae.encoder), got {type(init).__name__}")
    context = init.body(features)
    if start.flow is None and start.loc is not None:
        # a fresh flow whose base starts at the start's mean and variances
        return RefinedFlow(x, family, init, start.loc,
                           0.5 * start.cov.diagonal(dim1=-2, dim2=-1).log(), context, latents)
    base = init.base.condition(context)
    while isinstance(base, Independent):
        base = base.base_dist
    return RefinedFlow(x, family, init, base.loc, base.scale.log(), context, latents)


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
