"""Variational families q(z|x).

A guide family is an ``nn.Module`` whose ``forward(x)`` maps a batch ``x`` of shape
``(batch, x_dim)`` to a distribution over z with batch shape ``(batch,)`` and event shape
``(z_dim,)``, supporting ``rsample`` and ``log_prob``. ``VAE.guide`` samples site ``"z"`` from it.

Families, by name (``GUIDES``):

    diagonal     N(mu(x), diag sigma(x)^2)
    full-rank    N(mu(x), L(x) L(x)^T), L lower triangular with positive diagonal
    low-rank     N(mu(x), F(x) F(x)^T + diag sigma(x)^2), F of shape (z_dim, rank)
    iaf          diagonal base, then K conditional affine autoregressive layers (inverse AF)
    planar       diagonal base, then K conditional planar layers
    radial       diagonal base, then K conditional radial layers
    householder  diagonal base, then K conditional Householder reflections
    spline       diagonal base, then K conditional rational-quadratic spline autoregressive layers
    sylvester    diagonal base, then K conditional Sylvester layers (``pyvae.flows``)

The flows transform z0 ~ q0(z0|x) = N(mu(h), diag sigma(h)^2), where h = h(x) is the output of
the encoder's body, with transforms conditioned on the same h:
q(z_K|x) = q0(z0|x) - sum_k log|det dz_k/dz_{k-1}| (in log space). Planar, radial and Sylvester
layers have no closed-form inverse: such a q can score only the samples it drew itself, so code
that evaluates log q must pass the very tensor ``rsample`` returned to ``log_prob`` of the same
distribution object (Pyro's ELBOs do).
"""
import math
from dataclasses import Field, dataclass, fields
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

import pyro.distributions as dist
import pyro.distributions.transforms as T
from pyro.distributions.conditional import (ConditionalDistribution,
                                            ConditionalTransformedDistribution)

from ..config import (Config, NoOptions, at_least_one, at_most, choose, int_list, one_of, option,
                      positive_float, positive_int)
from ..errors import ConfigError
from .flows import SYLVESTER_KINDS, ConditionalSylvester
from .nets import MLP, activation_class
from .priors import SummedOverEvent, unit_normal_log_density

# the smallest knot derivative of Pyro's rational-quadratic spline (its default min_derivative)
SPLINE_MIN_DERIVATIVE = 1e-3


class SelfScoringNormal(dist.Normal):
    """N(loc, scale) that scores its own reparameterised sample z = loc + scale * eps from eps:

        log q(z) = log N(eps; 0, 1) - log scale = -eps^2 / 2 - log scale - log(2 pi) / 2,

    the value ``Normal.log_prob`` computes from (z - loc) / scale, and the same total derivative
    in loc and scale (along the sample path, (z - loc) / scale = eps does not move), with fewer
    operations in the training step's graph. Any other tensor, including a detached copy of
    the sample, is scored by ``Normal.log_prob``, so d log q / dz at fixed parameters (which
    the stl and dreg estimators need) is taken as usual."""

    def rsample(self, sample_shape=torch.Size()):
        # torch.randn draws from the generator as Normal.rsample's own noise does
        eps = torch.randn(self._extended_shape(sample_shape), dtype=self.loc.dtype,
                          device=self.loc.device)
        z = self.loc + eps * self.scale
        self._drawn = (z, eps)
        return z

    def _own_noise(self, value):
        """eps if ``value`` is the sample this distribution last drew, else None."""
        drawn = self.__dict__.get("_drawn")
        return drawn[1] if drawn is not None and value is drawn[0] else None

    def log_prob(self, value):
        eps = self._own_noise(value)
        if eps is None:
            return super().log_prob(value)
        if self._validate_args:
            self._validate_sample(value)
        return unit_normal_log_density(eps) - self.scale.log()

    def log_prob_summed(self, value):
        """log q(z) summed over the last dimension (``SummedOverEvent``); for its own sample
        log N(eps; 0, I) - sum log scale.

        Args:
            value: (..., z_dim) tensor of points z.

        Returns:
            (...) tensor of log-densities in nats.
        """
        eps = self._own_noise(value)
        if eps is None:
            return super().log_prob(value).sum(-1)
        return unit_normal_log_density(eps, summed=True) - self.scale.log().sum(-1)


# ------------------------------------------------------------------------- the families' options
# Each family's options are a dataclass beside it (its ``Options``): every option's default,
# check, help and command-line flag, once. ``ModelConfig`` builds them, and a family trusts the
# ``options`` object it is given.
def at_least_two(value, name: str) -> int:
    value = positive_int(value, name)
    if value < 2:
        raise ConfigError(f"need {name} >= 2, got {value}")
    return value


@dataclass
class LowRankOptions(Config):
    """The options of the ``low-rank`` family.

    Args:
        rank: the number of columns of the covariance factor F (1 <= rank <= z_dim).
    """

    rank: int = option(2, "low-rank guide: rank of the covariance factor",
                       at_most(positive_int, "rank"), example=1)


@dataclass
class FlowOptions(Config):
    """Normalizing-flow families: q(z|x) = base pushed through ``flow_length`` transforms.

    Args:
        flow_length: K, the number of transforms.
        flow_hidden: the hidden widths of each transform's parameter network (None: one layer
            of 10 * z_dim units; for Sylvester none, i.e. linear maps of h(x)).
    """
    flow_length: int = option(2, "flow guides: number of transforms",
                              at_most(at_least_one, "flow_length"), metavar="K", example=3)
    flow_hidden: Optional[Tuple[int, ...]] = option(
        None, "flow guides: hidden sizes of each transform's network (default 10*z_dim; "
              "sylvester: none)", at_most(int_list, "flow_hidden"), example=(6,))


@dataclass
class SplineOptions(FlowOptions):
    """The options of the ``spline`` family.

    Args:
        flow_length: K, the number of spline layers.
        flow_hidden: the hidden widths of each layer's autoregressive network (None: one layer
            of 10 * z_dim units, each >= z_dim).
        count_bins: the spline segments per dimension (>= 2).
        bound: B: each spline maps [-B, B] to itself and is the identity outside.
    """

    count_bins: int = option(8, "spline guide: segments per dimension", at_least_two, example=3)
    bound: float = option(5.0, "spline guide: half-width of the spline's box",
                          positive_float, example=2.5)


@dataclass
class SylvesterOptions(FlowOptions):
    """The options of the ``sylvester`` family.

    Args:
        flow_length: K, the number of Sylvester layers.
        flow_hidden: the hidden widths of the networks that map h(x) to each layer's Q, R, R~
            and b (None: none, linear maps).
        sylvester_kind: how the orthogonal Q is built: "orthogonal", "householder" or
            "triangular" (``pyvae.flows``).
        householders: reflections per layer for the "householder" kind.
    """

    sylvester_kind: str = option("orthogonal", "sylvester guide: how Q is built",
                                 one_of(SYLVESTER_KINDS, names_only=True), choices=True,
                                 example="triangular")
    householders: int = option(4, "sylvester guide, householder kind: reflections per layer",
                               positive_int, example=3)


class GuideFamily(nn.Module):
    """Base class: an amortized q(z|x).

    A family with options names their dataclass in ``Options`` and is built with an instance
    of it (``options=``, as ``ModelConfig`` holds them) or with their values as keywords.

    Args:
        x_dim: the size of the encoder's input: a flattened datapoint, or the features of a
            conv encoder body.
        z_dim: the size of z.
        options: an instance of the family's ``Options`` (None: built from
            ``option_values``); not together with ``option_values``.
        **option_values: the fields of ``Options`` as keywords.
    """

    #: a training step through this family can be traced by torch.jit (``TrainConfig.jit``)
    traceable = True
    #: the family's options (a ``pyvae.config.Config`` dataclass)
    Options = NoOptions

    def __init__(self, x_dim: int, z_dim: int, options: Optional[Config] = None,
                 **option_values):
        super().__init__()
        self.x_dim, self.z_dim = int(x_dim), int(z_dim)
        if options is not None and option_values:
            raise ConfigError(f"give the options of {type(self).__name__} as options= or as "
                              "keywords, not both")
        self.options = self.Options(**option_values) if options is None else options

    def forward(self, x):
        raise NotImplementedError


class Diagonal(GuideFamily):
    """Mean-field Gaussian: q(z|x) = N(mu(x), diag(sigma(x)^2)).

    One MLP outputs [mu, log sigma]; sigma = exp(log sigma).

    Args:
        x_dim: the size of the encoder's input: a flattened datapoint, or the features of a
            conv encoder body.
        z_dim: the size of z.
        hidden: the widths of the encoder MLP's hidden layers.
        activation: the nonlinearity after each hidden layer, a key of ``nets.ACTIVATIONS``.
        options: the family's ``Options``, a ``NoOptions`` (the family takes none).
    """

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int] = (200, 200),
                 activation: str = "tanh", options: Optional[NoOptions] = None):
        super().__init__(x_dim, z_dim, options)
        self.net = MLP(x_dim, hidden, 2 * self.z_dim, activation)

    def loc_scale(self, x):
        loc, log_scale = self.net(x).chunk(2, dim=-1)
        return loc, log_scale.exp()

    def forward(self, x):
        return SummedOverEvent(SelfScoringNormal(*self.loc_scale(x)), 1)


class FullRank(GuideFamily):
    """Full-covariance Gaussian: q(z|x) = N(mu(x), L(x) L(x)^T).

    One MLP outputs mu and the z_dim (z_dim + 1) / 2 entries of the lower triangle of L; the
    diagonal of L is exp(.) of its entry, so L is a valid Cholesky factor. With the off-diagonal
    entries at zero this is the ``diagonal`` family.

    Args:
        x_dim: the size of the encoder's input: a flattened datapoint, or the features of a
            conv encoder body.
        z_dim: the size of z.
        hidden: the widths of the encoder MLP's hidden layers.
        activation: the nonlinearity after each hidden layer, a key of ``nets.ACTIVATIONS``.
        options: the family's ``Options``, a ``NoOptions`` (the family takes none).
    """

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int] = (200, 200),
                 activation: str = "tanh", options: Optional[NoOptions] = None):
        super().__init__(x_dim, z_dim, options)
        d = self.z_dim
        self.n_tril = d * (d + 1) // 2
        self.net = MLP(x_dim, hidden, d + self.n_tril, activation)
        self.register_buffer("tril_index", torch.tril_indices(d, d), persistent=False)
        # start as the diagonal family: with default init the d (d - 1) / 2 off-diagonal entries
        # of L would be O(1) each, so z would start with variance O(d) (on MNIST, d = 50, this
        # costs tens of nats after two epochs); their gradient at zero is not zero, so they learn
        rows, cols = self.tril_index
        off_diagonal = d + torch.nonzero(rows != cols).squeeze(-1)
        with torch.no_grad():
            self.net[-1].weight[off_diagonal] = 0
            self.net[-1].bias[off_diagonal] = 0

    def loc_scale_tril(self, x):
        d = self.z_dim
        loc, flat = self.net(x).split([d, self.n_tril], dim=-1)
        raw = flat.new_zeros(flat.shape[:-1] + (d, d))
        raw[..., self.tril_index[0], self.tril_index[1]] = flat
        scale_tril = raw.tril(-1) + torch.diag_embed(raw.diagonal(dim1=-2, dim2=-1).exp())
        return loc, scale_tril

    def forward(self, x):
        loc, scale_tril = self.loc_scale_tril(x)
        return dist.MultivariateNormal(loc, scale_tril=scale_tril)


class LowRank(GuideFamily):
    """Low-rank plus diagonal Gaussian: q(z|x) = N(mu(x), F(x) F(x)^T + diag(sigma(x)^2)).

    F has shape (z_dim, rank); cost O(z_dim rank^2) per datapoint instead of O(z_dim^3).

    Args:
        x_dim: the size of the encoder's input: a flattened datapoint, or the features of a
            conv encoder body.
        z_dim: the size of z.
        hidden: the widths of the encoder MLP's hidden layers.
        activation: the nonlinearity after each hidden layer, a key of ``nets.ACTIVATIONS``.
        options: the family's ``Options`` as ``ModelConfig`` builds and checks them (trusted);
            None: built from ``option_values``.
        **option_values: the fields of ``Options`` as keywords, when ``options`` is None:
            ``rank``, the number of columns of F (1 <= rank <= z_dim).
    """

    Options = LowRankOptions
    # its compiled step gives another loss than the plain one from the same random numbers
    # (tests/test_compiled.py); until that is understood it trains uncompiled
    traceable = False

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int] = (200, 200),
                 activation: str = "tanh", options: Optional[LowRankOptions] = None,
                 **option_values):
        super().__init__(x_dim, z_dim, options, **option_values)
        rank = self.options.rank
        if not 1 <= rank <= self.z_dim:
            raise ConfigError(f"rank must be between 1 and z_dim={self.z_dim}, got {rank}")
        self.rank = rank
        d = self.z_dim
        self.net = MLP(x_dim, hidden, 2 * d + d * self.rank, activation)

    def forward(self, x):
        d = self.z_dim
        loc, log_scale, factor = self.net(x).split([d, d, d * self.rank], dim=-1)
        return dist.LowRankMultivariateNormal(
            loc, factor.reshape(factor.shape[:-1] + (d, self.rank)), (2 * log_scale).exp())


# ------------------------------------------------------------------------------------ flows
class _DiagonalBase(ConditionalDistribution, nn.Module):
    """A flow's base q0(z0|x) = N(mu(h), diag sigma(h)^2): one linear head on the feature h(x)."""

    def __init__(self, context_dim: int, z_dim: int):
        super().__init__()
        self.head = nn.Linear(context_dim, 2 * z_dim)

    def condition(self, context):
        loc, log_scale = self.head(context).chunk(2, dim=-1)
        return SummedOverEvent(SelfScoringNormal(loc, log_scale.exp()), 1)


class Flow(GuideFamily):
    """A diagonal Gaussian base followed by K transforms, all conditioned on h(x).

    The encoder body is the MLP ``x_dim -> hidden`` with the activation after every layer; its
    output h(x) is the context of both the base q0(z0|x) and every transform (with no hidden
    layers, h(x) = x). Subclasses name the transforms in ``make_transform``.

    Args:
        x_dim: the size of the encoder's input: a flattened datapoint, or the features of a
            conv encoder body.
        z_dim: the size of z.
        hidden: the widths of the encoder MLP's hidden layers.
        activation: the nonlinearity after each hidden layer, a key of ``nets.ACTIVATIONS``.
        options: the family's ``Options`` as ``ModelConfig`` builds and checks them (trusted);
            None: built from ``option_values``.
        **option_values: the fields of ``Options`` as keywords, when ``options`` is None:
            ``flow_length`` (K, the number of transforms) and ``flow_hidden`` (the hidden
            widths of each transform's parameter network; None: one layer of 10 * z_dim
            units, for Sylvester none, i.e. linear maps of h(x)).
    """

    Options = FlowOptions

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int] = (200, 200),
                 activation: str = "tanh", options: Optional[FlowOptions] = None,
                 **option_values):
        super().__init__(x_dim, z_dim, options, **option_values)
        hidden = [int(h) for h in hidden]
        self.flow_length = self.options.flow_length
        flow_hidden = self.options.flow_hidden
        flow_hidden = self.default_flow_hidden() if flow_hidden is None else list(flow_hidden)
        if self.needs_flow_hidden and not flow_hidden:
            raise ConfigError(f"flow_hidden needs {'one or more ' if self.needs_flow_hidden else ''}"
                              f"positive sizes, got {flow_hidden}")
        self.flow_hidden = flow_hidden
        if hidden:
            self.body = nn.Sequential(MLP(x_dim, hidden[:-1], hidden[-1], activation),
                                      activation_class(activation)())
            self.context_dim = hidden[-1]
        else:
            self.body = nn.Identity()
            self.context_dim = self.x_dim
        self.base = _DiagonalBase(self.context_dim, self.z_dim)
        self.transforms = nn.ModuleList(self.make_transforms(activation))
        with torch.no_grad():
            self.start_as_identity()
        self.flow = ConditionalTransformedDistribution(self.base, list(self.transforms))

    needs_flow_hidden = True  # Pyro's parameter networks need a hidden layer

    def default_flow_hidden(self):
        return [10 * self.z_dim]

    def make_transforms(self, activation):
        return [self.make_transform(k) for k in range(self.flow_length)]

    def make_transform(self, k: int):
        raise NotImplementedError

    def start_as_identity(self):
        """Set the transforms' output layers so that every layer is the identity map for every
        context: a fresh flow is its Gaussian base, q(z|x) = q0(z|x), and training (or
        refinement) starts at that Gaussian. Only the last linear layer of each parameter
        network is set (its weights to zero, its biases to the values below), so the gradients
        with respect to it are not zero and the flow leaves the identity at the first step."""

    def forward(self, x):
        return self.flow.condition(self.body(x))


def _set_output_rows(layer: nn.Linear, rows: slice, bias) -> None:
    """Output rows ``rows`` of ``layer`` become the constant ``bias``: zero weights, set bias."""
    layer.weight[rows] = 0
    layer.bias[rows] = bias


class IAF(Flow):
    """Inverse autoregressive flow: ``z_k = mu_k(z_{k-1}, h) + sigma_k(z_{k-1}, h) * z_{k-1}``,
    with ``(mu_k, log sigma_k)_i`` depending on the ``z_{k-1, j}`` before i (Pyro's
    ``conditional_affine_autoregressive``, a MADE network per layer, each with its own random
    order of the variables). Sampling and scoring own samples take one pass per layer."""

    def make_transform(self, k):
        if min(self.flow_hidden) < self.z_dim:
            raise ConfigError(f"iaf needs flow_hidden sizes >= z_dim={self.z_dim}, got {self.flow_hidden}")
        return T.conditional_affine_autoregressive(self.z_dim, self.context_dim, self.flow_hidden)

    def start_as_identity(self):
        # mu = 0 and log sigma = 0: z_k = z_{k-1}
        for t in self.transforms:
            _set_output_rows(t.nn.layers[-1], slice(None), 0.0)


class Planar(Flow):
    """Planar flow (Rezende & Mohamed 2015): z_k = z + u tanh(w^T z + b), u, w, b from h(x)
    (Pyro's ``conditional_planar``); log|det J| = log|1 + u^T tanh'(.) w|. No inverse."""

    def make_transform(self, k):
        return T.conditional_planar(self.z_dim, self.context_dim, self.flow_hidden)

    def start_as_identity(self):
        # Pyro's planar layer uses u^ = u + (m(w.u) - w.u) w / |w|^2 with m(a) = softplus(a) - 1
        # (so that w.u^ > -1); u^ = 0, the identity, when u = a w / |w|^2 with m(a) = 0, i.e.
        # a = log(e - 1). The network's outputs are (b, u, w): w keeps its random bias w0 and
        # u = a w0 / |w0|^2, both for every context.
        d = self.z_dim
        for t in self.transforms:
            out = t.nn.layers[-1]
            w0 = out.bias[1 + d:].clone()
            _set_output_rows(out, slice(1 + d, None), w0)
            _set_output_rows(out, slice(1, 1 + d), math.log(math.e - 1) * w0 / w0.pow(2).sum())


class Radial(Flow):
    """Radial flow: z_k = z + beta (z - z_ref) / (alpha + |z - z_ref|), with z_ref, alpha, beta
    from h(x) (Pyro's ``conditional_radial``). No inverse."""

    def make_transform(self, k):
        return T.conditional_radial(self.z_dim, self.context_dim, self.flow_hidden)

    def start_as_identity(self):
        # Pyro's radial layer: alpha = softplus(alpha'), beta = softplus(beta') - alpha, outputs
        # (z_ref, alpha', beta'); beta = 0, the identity, when beta' = alpha'
        d = self.z_dim
        for t in self.transforms:
            out = t.nn.layers[-1]
            _set_output_rows(out, slice(d, d + 2), out.bias[d].clone())


class Householder(Flow):
    """Householder flow (Tomczak & Welling 2016): ``z_K = H_K ... H_1 z0``, H = I - 2 v v^T/|v|^2
    with the v_k from h(x) (Pyro's ``conditional_householder``): a rotation of the diagonal
    Gaussian, so q stays Gaussian with covariance Q diag(sigma^2) Q^T; volume preserving.
    Unlike the other flows it does not start as the identity: a product of reflections is the
    identity only for equal pairs, from which training recovers a correlated posterior far more
    slowly (the pair's rotation angle starts at zero); the reflections keep their random start."""

    def make_transforms(self, activation):
        return [T.conditional_householder(self.z_dim, self.context_dim, self.flow_hidden,
                                          count_transforms=self.flow_length)]


class Spline(Flow):
    """Neural spline flow (Durkan et al. 2019): each layer maps z_i by a monotone rational-
    quadratic spline on [-bound, bound] (identity outside) whose knots depend on z_{<i} and h(x)
    (Pyro's ``conditional_spline_autoregressive``, linear order).

    Args:
        x_dim: the size of the encoder's input: a flattened datapoint, or the features of a
            conv encoder body.
        z_dim: the size of z.
        hidden: the widths of the encoder MLP's hidden layers.
        activation: the nonlinearity after each hidden layer, a key of ``nets.ACTIVATIONS``.
        options: the family's ``Options`` as ``ModelConfig`` builds and checks them (trusted);
            None: built from ``option_values``.
        **option_values: the fields of ``Options`` as keywords, when ``options`` is None:
            ``flow_length`` and ``flow_hidden`` as for ``Flow``, ``count_bins`` (spline
            segments per dimension) and ``bound`` (the half-width of the spline's box).
    """

    Options = SplineOptions
    # the spline's bin search indexes with data-dependent shapes, which a trace cannot replay
    traceable = False

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int] = (200, 200),
                 activation: str = "tanh", options: Optional[SplineOptions] = None,
                 **option_values):
        options = self.Options(**option_values) if options is None else options
        self.count_bins, self.bound = options.count_bins, options.bound
        super().__init__(x_dim, z_dim, hidden, activation, options)

    def make_transform(self, k):
        if min(self.flow_hidden) < self.z_dim:
            raise ConfigError(f"spline needs flow_hidden sizes >= z_dim={self.z_dim}, got {self.flow_hidden}")
        return T.conditional_spline_autoregressive(self.z_dim, self.context_dim, self.flow_hidden,
                                                   count_bins=self.count_bins, bound=self.bound)

    def start_as_identity(self):
        # Pyro's spline network outputs, per dimension, (widths, heights, derivatives, lambdas)
        # of sizes (B, B, B - 1, B) as blocks of z_dim rows; equal widths and heights (softmax of
        # zeros) and knot derivatives 1 (min_derivative + softplus(r) = 1) give the identity
        d, b = self.z_dim, self.count_bins
        raw_one = math.log(math.expm1(1.0 - SPLINE_MIN_DERIVATIVE))
        for t in self.transforms:
            out = t.nn.layers[-1]
            _set_output_rows(out, slice(None), 0.0)
            _set_output_rows(out, slice(2 * b * d, (3 * b - 1) * d), raw_one)


class Sylvester(Flow):
    """Sylvester flow (van den Berg et al. 2018): z_k = z + Q R tanh(R~ Q^T z + b) with Q
    orthogonal and R, R~ upper triangular, all linear maps of h(x) by default (``flow_hidden``
    adds hidden layers); see ``pyvae.flows``. No inverse.

    Args:
        x_dim: the size of the encoder's input: a flattened datapoint, or the features of a
            conv encoder body.
        z_dim: the size of z.
        hidden: the widths of the encoder MLP's hidden layers.
        activation: the nonlinearity after each hidden layer, a key of ``nets.ACTIVATIONS``.
        options: the family's ``Options`` as ``ModelConfig`` builds and checks them (trusted);
            None: built from ``option_values``.
        **option_values: the fields of ``Options`` as keywords, when ``options`` is None:
            ``flow_length`` and ``flow_hidden`` as for ``Flow``, ``sylvester_kind``
            ("orthogonal", "householder" or "triangular": how Q is built) and
            ``householders`` (reflections per layer for the "householder" kind).
    """

    Options = SylvesterOptions

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int] = (200, 200),
                 activation: str = "tanh", options: Optional[SylvesterOptions] = None,
                 **option_values):
        options = self.Options(**option_values) if options is None else options
        self.sylvester_kind, self.householders = options.sylvester_kind, options.householders
        super().__init__(x_dim, z_dim, hidden, activation, options)

    needs_flow_hidden = False

    def default_flow_hidden(self):
        # as in van den Berg et al.: the flow's parameters are linear maps of the encoder's h(x)
        return []

    def start_as_identity(self):
        for t in self.transforms:
            t.start_as_identity()

    def make_transforms(self, activation):
        return [ConditionalSylvester(self.z_dim, self.context_dim, self.flow_hidden,
                                     kind=self.sylvester_kind, householders=self.householders,
                                     reverse=k % 2 == 1, activation=activation)
                for k in range(self.flow_length)]


GUIDES = {
    "diagonal": Diagonal,
    "full-rank": FullRank,
    "low-rank": LowRank,
    "iaf": IAF,
    "planar": Planar,
    "radial": Radial,
    "householder": Householder,
    "spline": Spline,
    "sylvester": Sylvester,
}


def guide_options(name: str):
    """The keyword options (beyond hidden and activation) that the family ``name`` accepts: the
    fields of its ``Options`` dataclass.

    Args:
        name: a key of ``GUIDES``.

    Returns:
        the option names, in the order of the fields.
    """
    return [f.name for f in fields(GUIDES[name].Options)]


def guide_option_fields() -> Dict[str, Field]:
    """Every option of every registered family, by name (one flag each on the command line):
    the fields of the families' ``Options``, in the order of ``GUIDES``."""
    out = {}
    for family in GUIDES.values():
        for f in fields(family.Options):
            out.setdefault(f.name, f)
    return out


def options_for(guide, options: dict, strict: bool = True) -> Config:
    """The options dataclass of ``guide`` (a name, or a ``GuideFamily`` object) from a dict:
    None means the default; a name no family takes is an error; with ``strict`` an option the
    family does not take is an error, without it an option of another family is dropped (one
    set of options can serve a comparison).

    Args:
        guide: a key of ``GUIDES``, or a ``GuideFamily`` object (which takes no options here:
            its constructor had them).
        options: {option name: value}; a None value means the family's default.
        strict: refuse an option of another family (else drop it).

    Returns:
        the family's ``Options`` instance (``NoOptions`` for a guide object).
    """
    options = {k: v for k, v in options.items() if v is not None}
    known = guide_option_fields()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"unknown guide option {', '.join(unknown)}; guide options are: "
                          f"{', '.join(sorted(known))}")
    if not isinstance(guide, str):
        if options:
            raise ConfigError(f"guide options {', '.join(sorted(options))} given with a guide "
                              "object; pass them to its constructor instead")
        return NoOptions()
    cls = GUIDES[choose(guide, list(GUIDES), "guide")].Options
    taken = {f.name for f in fields(cls)}
    foreign = sorted(set(options) - taken)
    if foreign and strict:
        raise ConfigError(f"the {guide} guide takes no {', '.join(foreign)} (its options: "
                          f"{', '.join(sorted(taken)) or 'none'})")
    return cls(**{k: v for k, v in options.items() if k in taken})


def resolved_guide_options(name: str, options: dict) -> dict:
    """The options family ``name`` is built with: those given (not None), else its defaults.

    Stored in run configs so that a run rebuilds the same guide even if a default changes.

    Args:
        name: a key of ``GUIDES``.
        options: {option name: value}; None values and other families' options are dropped.

    Returns:
        {option name: value} for every field of the family's ``Options``, as JSON values.
    """
    return options_for(name, options, strict=False).to_dict()


def make_guide(spec, x_dim: int, z_dim: int, hidden=(200, 200), activation="tanh",
               options: Optional[Config] = None, **option_values) -> GuideFamily:
    """A guide family from its name (see ``GUIDES``) or a ``GuideFamily`` instance.

    ``options``: the family's ``Options`` as a config holds them (trusted); or their values as
    keywords (``flow_length``, ``flow_hidden``, ``rank``, ``sylvester_kind``, ...), where None
    means "the family's default", an option of another family is ignored (so one set of
    options can serve several families, as in a comparison) and a name no family takes is an
    error.

    Args:
        spec: a key of ``GUIDES``, or a ``GuideFamily``, returned as it is.
        x_dim: the size of the encoder's input.
        z_dim: the size of z.
        hidden: the widths of the encoder MLP's hidden layers.
        activation: the nonlinearity after each hidden layer.
        options: the family's ``Options`` instance (trusted; None: from ``option_values``).
        **option_values: option values as keywords, used when ``options`` is None.

    Returns:
        the ``GuideFamily`` module.
    """
    if options is None:
        options = options_for(spec, option_values, strict=False)
    if isinstance(spec, GuideFamily):
        return spec
    return GUIDES[spec](x_dim, z_dim, hidden=hidden, activation=activation, options=options)
