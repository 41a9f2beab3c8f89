"""``ModelConfig``: what p(z), p(x|z) and q(z|x) are, each option's default and check once.

The names it takes are checked against the registries of this package (``ACTIVATIONS``,
``LIKELIHOODS``, ``GUIDES``, ``PRIORS``, ``ARCHS``); the guide family's options are that
family's ``Options`` (``pyvae.models.guides``), built here once and trusted by the family.
"""
from dataclasses import dataclass, fields
from typing import Optional, Tuple

from ..config import Config, at_least_one, at_most, int_list, jsonable, one_of, option, positive_int
from ..limits import check_net_sizes
from .guides import GUIDES, options_for
from .likelihoods import LIKELIHOODS
from .nets import ACTIVATIONS, ARCHS
from .priors import PRIORS


@dataclass
class ModelConfig(Config):
    """p(z) p(x|z) and q(z|x). Components may also be objects (then the run stores no config).

    Args:
        x_dim: the size of a flattened datapoint (784 for 28x28 images); required by ``VAE``.
        z_dim: the size of the latent code z.
        hidden: the encoder's hidden widths, in order; the decoder uses them reversed.
        activation: the nonlinearity of the nets, a key of ``nets.ACTIVATIONS``.
        likelihood: p(x|z), a key of ``likelihoods.LIKELIHOODS`` or a ``Likelihood`` object.
        guide: q(z|x), a key of ``guides.GUIDES`` or a ``GuideFamily`` object.
        prior: p(z), a key of ``priors.PRIORS`` or a ``Prior`` object.
        prior_components: K, the components of the "mixture" prior or the pseudo-inputs of
            the "vamp" prior (None: 10 and 500).
        arch: "mlp", or "conv" for images of 28x28 or 32x32 pixels.
        image_shape: (C, H, W) of a datapoint for ``arch="conv"`` (None: from ``x_dim``).
        guide_options: the guide family's ``Options`` instance, or a dict of its fields (None:
            the family's defaults); built once here and trusted by the family.
    """
    x_dim: Optional[int] = option(None, "size of a flattened datapoint", positive_int, cli=False)
    z_dim: int = option(50, "latent size", positive_int, example=3)
    hidden: Tuple[int, ...] = option((200, 200), "hidden sizes of the encoder (the decoder "
                                     "mirrors them)", int_list, example=(7, 5))
    activation: str = option("tanh", "nonlinearity of the nets", one_of(ACTIVATIONS),
                             example="relu")
    likelihood: str = option("bernoulli", "p(x|z)", one_of(LIKELIHOODS))
    guide: str = option("diagonal", "q(z|x), the variational family", one_of(GUIDES))
    prior: str = option("normal", "p(z)", one_of(PRIORS))
    prior_components: Optional[int] = option(
        None, "components of the mixture (default 10) or vamp (default 500) prior",
        at_most(at_least_one, "prior_components"), metavar="K")
    arch: str = option("mlp", "encoder/decoder nets: conv for 28x28 or 32x32 images",
                       one_of(ARCHS, names_only=True), choices=True)
    image_shape: Optional[Tuple[int, ...]] = option(None, "(C, H, W) for arch conv", cli=False)
    guide_options: Config = option(None, cli=False)

    def __post_init__(self):
        if isinstance(self.image_shape, list):
            self.image_shape = tuple(self.image_shape)
        options = self.guide_options
        if options is None or isinstance(options, dict):
            self.guide_options = options_for(self.guide, options or {})
        super().__post_init__()
        check_net_sizes(self.x_dim or 1, self.z_dim, self.hidden)  # before any allocation

    def to_dict(self) -> dict:
        """The "vae" entry of config.json: the guide family's options sit beside the others, and
        arch, prior_components and image_shape only when they are not the defaults (as pyvae
        always wrote it)."""
        d = {f.name: jsonable(getattr(self, f.name))
             for f in fields(self) if f.name not in ("guide_options", "arch", "prior_components",
                                                     "image_shape")}
        d.update(self.guide_options.to_dict())
        if self.arch != "mlp" or self.prior_components is not None:
            d.update(arch=self.arch, prior_components=self.prior_components,
                     image_shape=jsonable(self.image_shape) if self.arch != "mlp" else None)
        return d

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "ModelConfig":
        """The config of a dict written by ``to_dict`` (the "vae" entry of config.json).

        Args:
            d: {option: value}, the guide family's options beside the others (None: {}).
        """
        d = dict(d or {})
        own = {f.name for f in fields(cls)} - {"guide_options"}
        options = {k: d.pop(k) for k in list(d) if k not in own}
        return cls(**d, guide_options=options)

    @property
    def named(self) -> bool:
        """Whether every component is named (then the config rebuilds the model)."""
        return all(isinstance(c, str) for c in (self.likelihood, self.guide, self.prior))
