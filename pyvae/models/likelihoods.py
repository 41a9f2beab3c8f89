"""Observation models p(x|z): turn the decoder's output into a distribution over x.

A likelihood is a small ``nn.Module`` with two jobs:
``param_dim(x_dim)`` says how many numbers per datapoint the decoder must output, and
``forward(decoder_output)`` returns a Pyro distribution whose event shape is ``(x_dim,)``.

Decoder output layout: ``pixel_params`` blocks of ``x_dim`` values (block j is
``out[..., j*x_dim:(j+1)*x_dim]``: e.g. means, then log-scales), followed by ``extra_params``
per-datapoint values (e.g. one log-scale per image). Conv decoders produce the same layout.

Each likelihood declares what data it accepts (``binary_data``: True for {0, 1}, False for
[0, 1], None for any real) and whether it is a probability mass function over the data's values
(``discrete``), in which case ``bits_per_dim`` of its negative log-likelihood is a code length.

The distributions follow Pyro's validation switch (``pyro.enable_validation``, on by default
since Pyro 1.6 unless Python runs with ``-O``): validated, a Bernoulli refuses grey pixels with
Pyro's "Expected value argument ... to be within the support (Boolean())" error. ``pyvae.Trainer``
and ``Run.evaluate`` check their data once and then run unvalidated, for speed.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

import pyro.distributions as dist

from ..config import choose
from ..errors import ConfigError


class _BernoulliLogits(dist.Bernoulli):
    """Bernoulli whose log-density is ``bernoulli_log_density`` (the same value, cheaper)."""

    def log_prob(self, value):
        if self._validate_args:  # torch's own pattern for a Distribution's log_prob
            self._validate_sample(value)
        logits, value = torch.broadcast_tensors(self.logits, value)
        return bernoulli_log_density(logits, value)


def bernoulli_log_density(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x | logits) = x * logits - softplus(logits), elementwise (``logits`` and ``x`` of
    one shape): the value of ``-binary_cross_entropy_with_logits``.

    On the CPU, softplus(l) is computed as max(l, 0) + log(1 + exp(-|l|)): torch's
    ``softplus``, ``logsigmoid`` and ``log1p`` kernels cost about ten times its ``exp`` and
    ``log`` per element there, more than the decoder's output matmul. Against ``log1p(e)``, e in
    (0, 1], ``log(1 + e)`` adds only the rounding of 1 + e (below 6e-8); the result is within
    float32 rounding of the float64 value (tests/test_likelihoods.py).
    Where a gradient is taken, ``_BernoulliLogDensity`` gives it directly, d/dl = x - sigmoid(l),
    rather than autograd differentiating each of those ops. On other devices, torch's kernels.

    Args:
        logits: the Bernoulli logits l = log p(1) - log p(0).
        x: the values, in {0, 1} (any real value computes the same formula), shaped like
            ``logits``.

    Returns:
        the elementwise log-probabilities in nats, shaped like ``logits``.
    """
    tracked = torch.is_grad_enabled() and (logits.requires_grad or x.requires_grad)
    if logits.device.type != "cpu":
        if tracked:  # a traced softplus differentiates slowly
            return x * logits + F.logsigmoid(-logits)
        return x * logits - F.softplus(logits)
    return _BernoulliLogDensity.apply(logits, x) if tracked else _log_density(logits, x)


def _log_density(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x * l - max(l, 0) - log(1 + exp(-|l|)), untracked, with one temporary written in place."""
    softplus = logits.abs().neg_().exp_().add_(1).log_().add_(logits.clamp(min=0))
    return torch.addcmul(softplus.neg_(), x, logits)


class _BernoulliLogDensity(torch.autograd.Function):
    """x * l - softplus(l) with its derivatives written out: d/dl = x - sigmoid(l), d/dx = l."""

    @staticmethod
    def forward(ctx, logits, x):
        ctx.save_for_backward(logits, x)
        return _log_density(logits, x)

    @staticmethod
    def backward(ctx, grad):
        logits, x = ctx.saved_tensors
        grad_logits = grad * (x - torch.sigmoid(logits)) if ctx.needs_input_grad[0] else None
        grad_x = grad * logits if ctx.needs_input_grad[1] else None
        return grad_logits, grad_x


class Likelihood(nn.Module):
    """Base class: decoder output -> p(x|z) with event shape ``(x_dim,)``."""

    #: data must lie in {0, 1} (True) or in [0, 1] (False); None means any real value
    binary_data = None
    #: True when p(x|z) is a probability mass function (Bernoulli, discretized), False for a density
    discrete = False
    #: data must be multiples of 1/(levels - 1) in [0, 1] (None: no grid)
    levels: Optional[int] = None
    #: decoder outputs per pixel, and per datapoint after the per-pixel blocks
    pixel_params = 1
    extra_params = 0

    def param_dim(self, x_dim: int) -> int:
        """How many numbers per datapoint the decoder must output.

        Args:
            x_dim: the size of a flattened datapoint.

        Returns:
            ``pixel_params * x_dim + extra_params``.
        """
        return self.pixel_params * int(x_dim) + self.extra_params

    def forward(self, decoder_output: torch.Tensor):
        raise NotImplementedError


class Bernoulli(Likelihood):
    """x_i ~ Bernoulli(sigmoid(logit_i)) independently per pixel. Needs binary data."""

    binary_data = True
    discrete = True

    def forward(self, logits):
        return _BernoulliLogits(logits=logits).to_event(1)


class ContinuousBernoulli(Likelihood):
    """x_i ~ ContinuousBernoulli(sigmoid(logit_i)) on [0, 1] (Loaiza-Ganem & Cunningham 2019):
    p(x | l) = C(l) sigmoid(l)^x (1 - sigmoid(l))^(1-x), with the normaliser C(l) that makes the
    Bernoulli form a density on [0, 1]. For grey pixels, which a Bernoulli does not model."""

    binary_data = False

    def forward(self, logits):
        return dist.ContinuousBernoulli(logits=logits).to_event(1)


def _log_scale(raw: torch.Tensor, min_scale: float) -> torch.Tensor:
    # a floor on the scale: on pixels that are constant in the data (MNIST's borders) a learned
    # Gaussian scale would otherwise shrink to 0 and the density grow without bound
    return raw.clamp(min=math.log(min_scale))


class Gaussian(Likelihood):
    """x_i ~ N(mu_i(z), sigma_i^2) with a learned per-pixel scale: log sigma is a parameter vector
    of length x_dim shared by all datapoints (floored at ``min_scale``). The decoder outputs mu.

    Args:
        x_dim: the size of a datapoint (the length of the scale vector).
        min_scale: the smallest sigma_i, in the data's units (> 0).
    """

    binary_data = None

    def __init__(self, x_dim: int, min_scale: float = 1e-3):
        super().__init__()
        if not min_scale > 0:
            raise ConfigError(f"min_scale must be positive, got {min_scale}")
        self.min_scale = float(min_scale)
        self.log_scale = nn.Parameter(torch.zeros(int(x_dim)))

    def forward(self, loc):
        scale = _log_scale(self.log_scale, self.min_scale).exp()
        return dist.Normal(loc, scale.expand_as(loc)).to_event(1)


class GaussianPerImage(Likelihood):
    """x_i ~ N(mu_i(z), sigma(z)^2): one scale per datapoint; the decoder outputs mu (x_dim values)
    and one log sigma after them (floored at ``min_scale``).

    Args:
        min_scale: the smallest sigma, in the data's units (> 0).
    """

    binary_data = None
    extra_params = 1

    def __init__(self, min_scale: float = 1e-3):
        super().__init__()
        if not min_scale > 0:
            raise ConfigError(f"min_scale must be positive, got {min_scale}")
        self.min_scale = float(min_scale)

    def forward(self, out):
        loc, log_scale = out[..., :-1], out[..., -1:]
        scale = _log_scale(log_scale, self.min_scale).exp()
        return dist.Normal(loc, scale.expand_as(loc)).to_event(1)


class DiscretizedLogisticDistribution(dist.TorchDistribution):
    """A logistic(loc, scale) rounded to the grid {0, 1/(L-1), ..., 1} of L levels (L = 256 for
    8-bit images), elementwise (event shape ``()``), as in PixelCNN++ (Salimans et al. 2017).

    With half-bin width h = 1/(2(L-1)) and F the logistic CDF:
        P(0)   = F(h)                      (the bin reaches down to -inf)
        P(x)   = F(x + h) - F(x - h)       for 0 < x < 1
        P(1)   = 1 - F(1 - h)              (the bin reaches up to +inf)
    so the L probabilities sum to 1. Neither torch nor Pyro has this distribution, hence our own.
    The middle bins use an exact, cancellation-free form: with a = (x + h - loc)/scale and
    b = (x - h - loc)/scale, F(a) - F(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a)), so
        log P(x) = logsigmoid(a) + logsigmoid(-b) + log(-expm1(-2h/scale)).

    Args:
        loc: the logistic's location, on the [0, 1] scale of the data.
        scale: its scale (> 0), broadcast with ``loc``.
        levels: L, the number of grid values.
        validate_args: torch's argument validation switch (None: the global setting).
    """

    arg_constraints = {"loc": dist.constraints.real, "scale": dist.constraints.positive}
    support = dist.constraints.unit_interval
    has_rsample = False

    def __init__(self, loc, scale, levels: int = 256, validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(torch.as_tensor(loc), torch.as_tensor(scale))
        self.levels = int(levels)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return DiscretizedLogisticDistribution(self.loc.expand(batch_shape), self.scale.expand(batch_shape),
                                               self.levels, validate_args=self._validate_args)

    def log_prob(self, value):
        if self._validate_args:  # torch's own pattern for a Distribution's log_prob
            self._validate_sample(value)
        half = 0.5 / (self.levels - 1)
        a = (value + half - self.loc) / self.scale
        b = (value - half - self.loc) / self.scale
        F_ = torch.nn.functional
        middle = F_.logsigmoid(a) + F_.logsigmoid(-b) + torch.log(-torch.expm1(-2 * half / self.scale))
        # the edge bins: log F(a) at 0 and log(1 - F(b)) = logsigmoid(-b) at 1
        return torch.where(value < half, F_.logsigmoid(a),
                           torch.where(value > 1 - half, F_.logsigmoid(-b), middle))

    def sample(self, sample_shape=torch.Size()):
        # a logistic draw rounded to the nearest level; values beyond [0, 1] fall in the edge bins
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(1e-7, 1 - 1e-7)
            x = self.loc.expand(shape) + self.scale.expand(shape) * (u.log() - (-u).log1p())
            steps = self.levels - 1
            return (x.clamp(0, 1) * steps).round() / steps

    @property
    def mean(self):
        # E[x] = sum_{k=1}^{L-1} P(x >= k/(L-1)) / (L-1), with P(x >= x_k) = 1 - F(x_k - h)
        steps = self.levels - 1
        total = torch.zeros_like(self.loc)
        for k in range(1, self.levels):
            total = total + torch.sigmoid(-((k - 0.5) / steps - self.loc) / self.scale)
        return total / steps


class DiscretizedLogistic(Likelihood):
    """8-bit images: x_i ~ DiscretizedLogistic(mu_i(z), s_i(z)) over the 256 levels k/255 of [0, 1].
    The decoder outputs mu (x_dim values) then log s (x_dim values, floored at exp(-7) as in
    PixelCNN++). A probability mass function: its negative log-likelihood in bits/dim is a code
    length for the 8-bit pixels, with no log(256) correction.

    Args:
        min_log_scale: the floor on log s.
    """

    binary_data = False
    discrete = True
    levels = 256
    pixel_params = 2

    def __init__(self, min_log_scale: float = -7.0):
        super().__init__()
        self.min_log_scale = float(min_log_scale)

    def forward(self, out):
        loc, log_scale = out.chunk(2, dim=-1)
        scale = log_scale.clamp(min=self.min_log_scale).exp()
        return DiscretizedLogisticDistribution(loc, scale, self.levels).to_event(1)


LIKELIHOODS = {
    "bernoulli": Bernoulli,
    "continuous_bernoulli": ContinuousBernoulli,
    "gaussian": Gaussian,
    "gaussian_image": GaussianPerImage,
    "discretized_logistic": DiscretizedLogistic,
}


def make_likelihood(spec, x_dim: Optional[int] = None, **options) -> Likelihood:
    """A likelihood from its name (see ``LIKELIHOODS``) or a ``Likelihood`` instance.

    ``x_dim`` is needed by likelihoods with per-pixel parameters ("gaussian"); ``options`` go to
    the constructor (e.g. ``min_scale``).

    Args:
        spec: a key of ``LIKELIHOODS`` or a ``Likelihood``, returned as it is.
        x_dim: the size of a datapoint (required by "gaussian").
        **options: keyword arguments of the likelihood's constructor.

    Returns:
        the ``Likelihood`` module.
    """
    if isinstance(spec, Likelihood):
        return spec
    cls = LIKELIHOODS[choose(spec, list(LIKELIHOODS), "likelihood")]
    if cls is Gaussian:
        if x_dim is None:
            raise ConfigError("the gaussian likelihood needs x_dim (its per-pixel scales)")
        return cls(x_dim, **options)
    return cls(**options)


def bits_per_dim(nats_per_datapoint: float, x_dim: int, levels: Optional[int] = None) -> float:
    """Bits per dimension of a negative log-likelihood (or negative ELBO) in nats per datapoint.

    ``bits/dim = nats / (x_dim * log 2)``. That is a code length when the likelihood is a mass
    function over the data's values (Bernoulli on binary pixels, discretized logistic on 8-bit
    pixels scaled to [0, 1]): pass no ``levels``. For a *density* on 8-bit data scaled to [0, 1]
    by 1/(levels) (uniformly dequantized, x = (k + u)/levels), the density of the integer pixels
    is levels^-D times that of the scaled ones, so pass ``levels=256`` to add D*log(256) nats:
    ``bits/dim = (nats + D log 256) / (D log 2) = nats / (D log 2) + 8``.

    Args:
        nats_per_datapoint: -log p(x) (or -ELBO) in nats per datapoint, positive for a mass
            function.
        x_dim: D, the values per datapoint.
        levels: the number of levels the data were scaled down from (256 for 8-bit pixels
            divided by 256), for a density on dequantized data; None for a mass function.

    Returns:
        bits per dimension, a float.
    """
    if int(x_dim) <= 0:
        raise ConfigError(f"x_dim must be positive, got {x_dim}")
    nats = float(nats_per_datapoint)
    if levels is not None:
        nats += int(x_dim) * math.log(int(levels))
    return nats / (int(x_dim) * math.log(2))
