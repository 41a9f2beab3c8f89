"""The variational autoencoder: a generative model and a guide, written as Pyro functions.

    model:  z ~ p(z)                    (site "z", inside plate "data")
            x ~ p(x | decoder(z))       (site "x", observed)
    guide:  z ~ q(z | x)                (site "z", inside plate "data")

Training maximises the ELBO, E_q[log p(x, z) - log q(z|x)] <= log p(x); the distance between
the two is KL(q(z|x) || p(z|x)). The names "data", "z" and "x" are part of the public API:
``pyvae.evaluate`` and user code find the sites by them.
"""
from typing import Optional, Sequence

import torch
from torch import nn

import pyro

from ..errors import ConfigError
from .config import ModelConfig
from .guides import make_guide
from .likelihoods import make_likelihood
from .nets import MLP, ConvDecoder, ConvEncoder, check_input_dim, image_shape_for
from .priors import make_prior


class VAE(nn.Module):
    """A VAE with MLP or conv nets and swappable prior, likelihood and variational family.

    Args:
        x_dim: size of a flattened datapoint (784 for 28x28 images).
        z_dim: size of the latent code.
        hidden: hidden layer sizes of the encoder; the decoder mirrors them.
        activation: nonlinearity of both MLPs ("tanh", "relu", ...).
        likelihood: p(x|z), a name from ``pyvae.likelihoods.LIKELIHOODS`` or a ``Likelihood``.
        guide: q(z|x), a name from ``pyvae.guides.GUIDES`` or a ``GuideFamily``.
        prior: p(z), a name from ``pyvae.priors.PRIORS`` or a ``Prior``.
        arch: "mlp", or "conv": the decoder is a ``ConvDecoder`` (MLP ``hidden`` then transposed
            convolutions) and the encoder a ``ConvEncoder`` body whose flattened features are
            the input of the guide family (so the family's ``x_dim`` is the feature size).
        image_shape: (C, H, W) or (H, W) of a datapoint for ``arch="conv"``; by default
            784 -> (1, 28, 28) and 3072 -> (3, 32, 32).
        prior_components: K for the "mixture" and "vamp" priors (default: the prior's own).
        config: a built ``ModelConfig`` with ``x_dim`` set, instead of the keywords above
            (which are then ignored; ``guide_options`` with it are refused).
        **guide_options: passed to the guide family's constructor when ``guide`` is a name.
    """

    def __init__(self, x_dim: int = 784, z_dim: int = ModelConfig.z_dim,
                 hidden: Sequence[int] = ModelConfig.hidden,
                 activation: str = ModelConfig.activation, likelihood=ModelConfig.likelihood,
                 guide=ModelConfig.guide, prior=ModelConfig.prior, arch: str = ModelConfig.arch,
                 image_shape=None, prior_components=None, *, config: Optional[ModelConfig] = None,
                 **guide_options):
        super().__init__()
        if config is None:  # the keywords, checked once as a ModelConfig
            config = ModelConfig(x_dim=x_dim, z_dim=z_dim, hidden=hidden, activation=activation,
                                 likelihood=likelihood, guide=guide, prior=prior, arch=arch,
                                 image_shape=image_shape, prior_components=prior_components,
                                 guide_options=guide_options)
        elif not isinstance(config, ModelConfig):
            raise ConfigError(f"config must be a pyvae.config.ModelConfig, got {type(config).__name__}")
        elif config.x_dim is None:
            raise ConfigError("the model config needs x_dim (the size of a datapoint)")
        elif guide_options:
            raise ConfigError(f"guide options {', '.join(sorted(guide_options))} given with a "
                              "config; set them in its guide_options")
        x_dim, z_dim, hidden, activation = config.x_dim, config.z_dim, config.hidden, config.activation
        likelihood, guide, prior, arch = config.likelihood, config.guide, config.prior, config.arch
        image_shape, prior_components = config.image_shape, config.prior_components
        self.x_dim, self.z_dim = int(x_dim), int(z_dim)
        self.likelihood = make_likelihood(likelihood, self.x_dim)
        prior_options = {} if prior_components is None else {"components": int(prior_components)}
        self.prior = make_prior(prior, self.z_dim, x_dim=self.x_dim,
                                unit_interval=self.likelihood.binary_data is not None, **prior_options)
        if arch == "mlp":
            self.encoder_body = nn.Identity()
            self.decoder = MLP(self.z_dim, hidden[::-1], self.likelihood.param_dim(self.x_dim),
                               activation)
        else:
            image_shape = image_shape_for(self.x_dim, image_shape)
            self.encoder_body = ConvEncoder(image_shape, activation)
            self.decoder = ConvDecoder(self.z_dim, image_shape, hidden[::-1],
                                       self.likelihood.pixel_params, self.likelihood.extra_params,
                                       activation)
        # the guide family maps encoder-body features (x itself for the MLP) to q(z|x)
        feature_dim = self.x_dim if arch == "mlp" else self.encoder_body.out_dim
        self.encoder = make_guide(guide, feature_dim, self.z_dim, hidden=hidden,
                                  activation=activation, options=config.guide_options)
        if self.encoder.z_dim != self.z_dim or self.encoder.x_dim != feature_dim:
            raise ConfigError(
                f"guide has x_dim={self.encoder.x_dim}, z_dim={self.encoder.z_dim}; "
                f"the VAE needs x_dim={feature_dim}, z_dim={self.z_dim}"
            )
        if self.prior.needs_encoder:  # VampPrior: p(z) = 1/K sum_k q(z|u_k), with this encoder
            self.prior.attach_encoder(self.encode)
        if arch != "mlp":
            config = config.replace(image_shape=tuple(image_shape))
        self.model_config = config

    @property
    def config(self) -> Optional[dict]:
        """What it takes to build this VAE again (the "vae" entry of config.json, used by
        checkpoints): ``model_config.to_dict()``; None when an object was passed for a
        component, since objects cannot be stored as plain config."""
        return self.model_config.to_dict() if self.model_config.named else None

    @classmethod
    def from_config(cls, config) -> "VAE":
        """The VAE of a ``ModelConfig``, or of its dict.

        Args:
            config: a ``ModelConfig`` with ``x_dim`` set, or its ``to_dict()`` (the "vae"
                entry of a run's config.json).

        Returns:
            a new ``VAE`` with freshly initialised parameters.
        """
        if isinstance(config, dict):
            config = ModelConfig.from_dict(config)
        return cls(config=config)

    def model(self, x: torch.Tensor) -> None:
        """p(z) p(x|z) as a Pyro model: sites "z" and "x" (observed) in plate "data".

        Args:
            x: (batch, x_dim) tensor of data, any real dtype (cast to the nets' dtype).
        """
        pyro.module("decoder", self.decoder)
        pyro.module("prior", self.prior)
        pyro.module("likelihood", self.likelihood)
        x = self._as_input(x)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """q(z|x) as a Pyro guide: site "z" in plate "data".

        Args:
            x: (batch, x_dim) tensor of data, any real dtype (cast to the nets' dtype).
        """
        check_input_dim(x, self.x_dim)
        x = self._as_input(x)
        pyro.module("encoder_body", self.encoder_body)
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.encode(x))

    def log_weights(self, x: torch.Tensor, particles: int) -> torch.Tensor:
        """log w = log p(z) + log p(x|z) - log q(z|x) for ``particles`` draws z ~ q(z|x), shape
        (particles, batch), float64: the model and guide above, written out.

        The same draws and the same value as ``pyvae.infer.weights.log_weights(self.model,
        self.guide, x, particles)`` without Pyro's tracing of the two functions, which
        importance-weighted estimates (``pyvae.evaluate``, the IWAE objectives) take for an
        unwrapped VAE.

        Args:
            x: (batch, x_dim) tensor of data.
            particles: K, the draws z ~ q(z|x) per datapoint.

        Returns:
            (particles, batch) float64 tensor of log-weights in nats.
        """
        check_input_dim(x, self.x_dim)
        x = self._as_input(x)
        q = self.encode(x)
        z = q.rsample((particles,))  # (particles, batch, z_dim), as under a particle plate
        log_q = q.log_prob(z)
        log_pz = self.prior().log_prob(z)
        log_px = self.likelihood(self.decoder(z)).log_prob(x)
        return log_pz.double() + log_px.double() - log_q.double()

    def _as_input(self, x: torch.Tensor) -> torch.Tensor:
        """x in the dtype of the nets' weights (data of any real dtype: float64, ints, bools)."""
        dtype = next(self.decoder.parameters()).dtype
        return x if x.dtype == dtype else x.to(dtype)

    def encode(self, x: torch.Tensor):
        """q(z|x) as a distribution: the guide family applied to the encoder body's features.

        Args:
            x: (batch, x_dim) tensor in the nets' dtype.

        Returns:
            a torch distribution with batch shape (batch,) and event shape (z_dim,).
        """
        return self.encoder(self.encoder_body(x))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of p(x | z) at one z ~ q(z|x), without gradients.

        Args:
            x: (batch, x_dim) tensor in the nets' dtype.

        Returns:
            (batch, x_dim) tensor: E[x | z] under the likelihood.
        """
        z = self.encode(x).sample()
        return self.likelihood(self.decoder(z)).mean

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """Means of p(x | z) for n draws z ~ p(z), without gradients.

        Args:
            n: the number of draws.

        Returns:
            (n, x_dim) tensor: E[x | z] under the likelihood for each z.
        """
        z = self.prior().sample((n,))
        return self.likelihood(self.decoder(z)).mean
