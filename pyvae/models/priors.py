"""Priors p(z). A prior is an ``nn.Module`` whose ``forward()`` returns a distribution over z
with batch shape ``()`` and event shape ``(z_dim,)``; the model's ``"data"`` plate expands it, and
its ``log_prob`` accepts z of shape ``(..., z_dim)`` (e.g. ``(particles, N, z_dim)``).

Learned priors keep their parameters as module parameters; ``VAE.model`` registers the prior with
``pyro.module("prior", ...)`` so that the trainer's optimizer trains them.
"""
import inspect
import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

import pyro.distributions as dist

from ..config import choose
from ..errors import ConfigError

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class Prior(nn.Module):
    """Base class of the priors: ``forward()`` returns p(z), a distribution with batch shape
    ``()`` and event shape ``(z_dim,)``.

    Args:
        z_dim: the size of z.
    """

    #: True for priors built from the VAE's encoder (VampPrior): the VAE calls
    #: ``attach_encoder(encode)`` with its ``encode(x) -> q(z|x)`` and passes ``x_dim``
    needs_encoder = False

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = int(z_dim)

    def forward(self):
        raise NotImplementedError


class StandardNormal(Prior):
    """p(z) = N(0, I), with no parameters.

    Args:
        z_dim: the size of z.
    """

    def __init__(self, z_dim: int):
        super().__init__(z_dim)
        # buffers, not parameters: they follow .to(device) and are saved, but are not learned
        self.register_buffer("loc", torch.zeros(self.z_dim))
        self.register_buffer("scale", torch.ones(self.z_dim))

    def forward(self):
        return SummedOverEvent(_UnitNormal(self.loc, self.scale), 1)


class SummedOverEvent(dist.Independent):
    """``Independent`` over the last dimension, scored by its base distribution's
    ``log_prob_summed(value)``: the log-density summed over the coordinates first, its
    constants added once per event rather than once per coordinate (fewer elementwise passes
    over the samples). The same value as ``Independent(base, 1).log_prob``; over more
    dimensions, ``Independent``'s own."""

    def log_prob(self, value):
        if self.reinterpreted_batch_ndims != 1:
            return super().log_prob(value)
        if self._validate_args:
            self._validate_sample(value)
        return self.base_dist.log_prob_summed(value)


def unit_normal_log_density(value: torch.Tensor, summed: bool = False) -> torch.Tensor:
    """log N(value; 0, 1) per coordinate, -v^2 / 2 - log(2 pi) / 2, or with ``summed`` over the
    last dimension, -|v|^2 / 2 - D log(2 pi) / 2 (the constant added once).

    Args:
        value: (..., D) tensor of points v.
        summed: sum over the last dimension.

    Returns:
        a tensor of shape (..., D), or (...) with ``summed``, in nats.
    """
    if summed:
        return -0.5 * value.square().sum(-1) - value.shape[-1] * HALF_LOG_2PI
    return -0.5 * value.square() - HALF_LOG_2PI


def _event_shaped(log_p: torch.Tensor, event_batch_shape: torch.Size) -> torch.Tensor:
    shape = torch.broadcast_shapes(log_p.shape, event_batch_shape)
    return log_p if shape == log_p.shape else log_p.expand(shape)


class _UnitNormal(dist.Normal):
    """N(0, 1) (``StandardNormal``'s buffers, which carry only its device and dtype), with the
    log-density written for those values: log p(z) = -z^2 / 2 - log(2 pi) / 2, fewer operations
    than ``Normal.log_prob``'s (z - loc)^2 / (2 scale^2) + log scale + log(2 pi) / 2."""

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return _event_shaped(unit_normal_log_density(value), self.batch_shape)

    def log_prob_summed(self, value):
        """log p(z) summed over the last dimension (``SummedOverEvent``)."""
        return _event_shaped(unit_normal_log_density(value, summed=True), self.batch_shape[:-1])


class MixtureOfGaussians(Prior):
    """A learned mixture of K diagonal Gaussians:

        p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2)),   pi = softmax(logits)

    Means start as draws from N(0, I) (the global torch seed), scales at 1, weights uniform.

    Args:
        z_dim: the size of z.
        components: K, the number of mixture components.
    """

    def __init__(self, z_dim: int, components: int = 10):
        super().__init__(z_dim)
        if int(components) < 1:
            raise ConfigError(f"prior components must be >= 1, got {components}")
        self.components = int(components)
        self.logits = nn.Parameter(torch.zeros(self.components))
        self.loc = nn.Parameter(torch.randn(self.components, self.z_dim))
        self.log_scale = nn.Parameter(torch.zeros(self.components, self.z_dim))

    def forward(self):
        return dist.MixtureSameFamily(
            dist.Categorical(logits=self.logits),
            dist.Normal(self.loc, self.log_scale.exp()).to_event(1),
        )


class VampPrior(Prior):
    """The VampPrior (Tomczak & Welling 2018): the aggregate posterior of K learned pseudo-inputs,

        p(z) = 1/K sum_k q(z | u_k),

    where q is the VAE's own encoder (so it changes as the encoder trains) and u_1..u_K are
    parameters in data space (K = 500 on MNIST in the paper). As in the paper, the pseudo-inputs
    start at N(0.05, 0.01^2) and, for data in [0, 1], pass through hardtanh(0, 1).

    The VAE wires the encoder in with ``attach_encoder``; the encoder is held as a plain
    reference, not a submodule, so that its parameters are registered (with Pyro and in the
    state dict) once, under "encoder", and not a second time under "prior".

    Args:
        z_dim: the size of z.
        x_dim: the size of a datapoint, and of each pseudo-input.
        components: K, the number of pseudo-inputs.
        unit_interval: pass the pseudo-inputs through hardtanh(0, 1) (data in [0, 1]).
        init_mean: the mean of the pseudo-inputs' Gaussian initialisation.
        init_std: the standard deviation of that initialisation.
    """

    needs_encoder = True

    def __init__(self, z_dim: int, x_dim: int, components: int = 500, unit_interval: bool = True,
                 init_mean: float = 0.05, init_std: float = 0.01):
        super().__init__(z_dim)
        if int(components) < 1:
            raise ConfigError(f"prior components must be >= 1, got {components}")
        self.components, self.x_dim = int(components), int(x_dim)
        self.unit_interval = bool(unit_interval)
        self.pseudo_inputs_raw = nn.Parameter(init_mean + init_std * torch.randn(self.components, self.x_dim))
        self.__dict__["_encode"] = None  # bypasses nn.Module.__setattr__: see the class docstring

    def attach_encoder(self, encode: Callable[[torch.Tensor], "dist.Distribution"]) -> None:
        """Set the encoder whose q(z|u_k) make the mixture (``VAE`` calls it).

        Args:
            encode: a function ``encode(x)`` returning q(z|x) with batch shape ``x.shape[:-1]``
                and event shape (z_dim,), held as a plain reference.
        """
        self.__dict__["_encode"] = encode

    def pseudo_inputs(self) -> torch.Tensor:
        """The K pseudo-inputs u_k, shape (K, x_dim)."""
        u = self.pseudo_inputs_raw
        return F.hardtanh(u, 0.0, 1.0) if self.unit_interval else u

    def forward(self):
        if self._encode is None:
            raise ConfigError("VampPrior has no encoder: build it through pyvae.VAE(prior='vamp') "
                              "or call attach_encoder(encode) first")
        q = self._encode(self.pseudo_inputs())  # batch shape (K,): one component per pseudo-input
        uniform = torch.zeros(self.components, device=self.pseudo_inputs_raw.device,
                              dtype=self.pseudo_inputs_raw.dtype)
        return dist.MixtureSameFamily(dist.Categorical(logits=uniform), q)


PRIORS = {"normal": StandardNormal, "mixture": MixtureOfGaussians, "vamp": VampPrior}


def make_prior(spec, z_dim: int, x_dim: Optional[int] = None, unit_interval: bool = True,
               **options) -> Prior:
    """A prior from its name (see ``PRIORS``) or a ``Prior`` instance.

    ``x_dim`` and ``unit_interval`` (data in [0, 1]) reach only priors that live in data space
    (``needs_encoder``); ``options`` (e.g. ``components``) go to the constructor.

    Args:
        spec: a key of ``PRIORS`` ("normal", "mixture", "vamp") or a ``Prior``, returned as it
            is.
        z_dim: the size of z.
        x_dim: the size of a datapoint (required by "vamp").
        unit_interval: whether the data lie in [0, 1] (for "vamp").
        **options: keyword arguments of the prior's constructor (``components``); an unknown
            one raises ``ConfigError``.

    Returns:
        the ``Prior`` module.
    """
    if isinstance(spec, Prior):
        return spec
    cls = PRIORS[choose(spec, list(PRIORS), "prior")]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "z_dim"}
    for key in options:
        if key not in accepted:
            takes = ", ".join(sorted(accepted - {"x_dim", "unit_interval"})) or "none"
            raise ConfigError(f"prior {spec!r} takes no option {key!r} (its options: {takes})")
    if cls.needs_encoder:
        if x_dim is None:
            raise ConfigError(f"prior {spec!r} needs x_dim")
        options.update(x_dim=x_dim, unit_interval=unit_interval)
    return cls(z_dim, **options)
