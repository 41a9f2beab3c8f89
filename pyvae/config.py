"""The configuration of a run, as small dataclasses: each option's default and check live here once.

``ModelConfig`` (what p and q are, with one options dataclass per guide family), ``TrainConfig``
(how the parameters are fitted) and ``DataConfig`` (what the data are) make a ``RunConfig``, which
is what a run directory's config.json holds::

    {"vae": ModelConfig.to_dict(), "trainer": TrainConfig.to_dict(), "data": DataConfig.to_dict()}

``RunConfig.from_dict`` reads every config.json pyvae has written (keys added later take their
defaults). ``VAE``, ``Trainer`` and ``compare`` take their defaults from these classes, and the
``pyvae`` command line builds its flags from their fields (``flag_fields``): the flag's type,
default, check and choices all come from the field. A bad value raises ``ConfigError`` with one
line for the user.

This module imports no other part of pyvae but ``errors`` (the registries behind ``choices`` are
looked up when asked), so every layer may use it.
"""
import dataclasses
import importlib
import math
from dataclasses import dataclass, field, fields
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .errors import ConfigError


# --------------------------------------------------------------------------- checks and parsers
def positive_int(value, name: str) -> int:
    """An integer >= 1 ("z_dim must be positive, got 0")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    return int(value)


def at_least_one(value, name: str) -> int:
    """An integer >= 1 ("flow_length must be >= 1, got 0")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value \
            or value < 1:
        raise ConfigError(f"{name} must be >= 1, got {value!r} (a count must be positive)")
    return int(value)


def nonnegative_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 0:
        raise ConfigError(f"{name} must be >= 0, got {value!r}")
    return int(value)


def positive_float(value, name: str) -> float:
    """A finite number > 0 ("learning rate must be a positive number, got 0")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number, got {value}")
    return float(value)


def nonnegative_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be a number >= 0, got {value}")
    return float(value)


def unit_interval(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"{name} must lie in [0, 1], got {value}")
    return float(value)


def int_list(value, name: str, noun: Optional[str] = "layer sizes") -> Tuple[int, ...]:
    """Sizes such as hidden layers: a sequence of positive integers (or "200,200" on the CLI).
    A non-positive entry is "NAME: NOUN must be positive" ("NAME must be positive" without a
    noun)."""
    if isinstance(value, str):
        try:
            value = [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"expected comma-separated integers, got {value!r}") from None
    try:
        sizes = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a list of integers, got {value!r}") from None
    if any(s <= 0 for s in sizes):
        what = f"{name}: {noun}" if noun else name
        raise ConfigError(f"{what} must be positive, got {list(sizes)}")
    return sizes


def one_of(choices: Callable[[], Sequence[str]], names_only: bool = False):
    """A check that a name is one of ``choices()`` (a registry, looked up when called); other
    values pass (component objects) unless ``names_only``."""
    def check(value, name):
        if (isinstance(value, str) or names_only) and value not in choices():
            raise ConfigError(f"unknown {name} {value!r}; choose one of: {', '.join(choices())}")
        return value
    check.choices = choices
    return check


def _registry(module: str, name: str) -> Callable[[], List[str]]:
    def names():
        return list(getattr(importlib.import_module(module, __package__), name))
    return names


def option(default=None, help: str = "", check=None, name: Optional[str] = None,
           flag: Optional[str] = None, cli: bool = True, metavar: Optional[str] = None,
           choices: bool = False, bare=None):
    """A dataclass field with its check (``check(value, name) -> value``) and its CLI flag.

    ``name`` is how messages call the option (default: the field name); ``flag`` its command-line
    flag (default ``--field-name``); ``cli=False`` leaves it off the command line;
    ``choices=True`` has argparse refuse a value outside the check's registry (for fixed lists;
    names from open registries are checked when the config is built); ``bare`` is the value
    the flag means when given without one.
    """
    return field(default=default, metadata=dict(help=help, check=check, name=name, flag=flag,
                                                cli=cli, metavar=metavar, choices=choices,
                                                bare=bare))


def _check_fields(obj) -> None:
    for f in fields(obj):
        value = getattr(obj, f.name)
        check = f.metadata.get("check")
        if check is not None and value is not None:
            object.__setattr__(obj, f.name, check(value, f.metadata.get("name") or f.name))


class _Config:
    """Shared behaviour: checks run on construction; ``to_dict``/``from_dict`` as JSON."""

    def __post_init__(self):
        _check_fields(self)

    def to_dict(self) -> dict:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Optional[dict]):
        """The config from a dict that may lack options added since it was written."""
        d = dict(d or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} option {', '.join(unknown)}; "
                              f"options are: {', '.join(sorted(names))}")
        return cls(**d)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, _Config):
        return value.to_dict()
    return value


# --------------------------------------------------------------------------- guide families
@dataclass
class NoOptions(_Config):
    """Families without options of their own (diagonal, full-rank)."""


@dataclass
class LowRankOptions(_Config):
    rank: int = option(2, "low-rank guide: rank of the covariance factor", positive_int)


@dataclass
class FlowOptions(_Config):
    """Normalizing-flow families: q(z|x) = base pushed through ``flow_length`` transforms."""
    flow_length: int = option(2, "flow guides: number of transforms", at_least_one,
                              metavar="K")
    flow_hidden: Optional[Tuple[int, ...]] = option(
        None, "flow guides: hidden sizes of each transform's network (default 10*z_dim; "
              "sylvester: none)", int_list)


@dataclass
class SplineOptions(FlowOptions):
    count_bins: int = option(8, "spline guide: segments per dimension", positive_int)
    bound: float = option(5.0, "spline guide: half-width of the spline's box",
                          positive_float)


@dataclass
class SylvesterOptions(FlowOptions):
    sylvester_kind: str = option("orthogonal", "sylvester guide: how Q is built",
                                 one_of(_registry(".models.flows", "SYLVESTER_KINDS")),
                                 choices=True)
    householders: int = option(4, "sylvester guide, householder kind: reflections per layer", positive_int)


def guide_options_class(guide) -> type:
    """The options dataclass of a guide family, by name (``NoOptions`` for an object)."""
    from .models.guides import GUIDES

    family = GUIDES.get(guide) if isinstance(guide, str) else None
    return getattr(family, "Options", NoOptions)


ALL_GUIDE_OPTIONS = (LowRankOptions, FlowOptions, SplineOptions, SylvesterOptions)


def guide_option_fields() -> Dict[str, dataclasses.Field]:
    """Every option of every guide family, by name (one flag each on the command line)."""
    out = {}
    for cls in ALL_GUIDE_OPTIONS:
        for f in fields(cls):
            out.setdefault(f.name, f)
    return out


# --------------------------------------------------------------------------- model
@dataclass
class ModelConfig(_Config):
    """p(z) p(x|z) and q(z|x). Components may also be objects (then the run stores no config)."""
    x_dim: Optional[int] = option(None, "size of a flattened datapoint", positive_int, cli=False)
    z_dim: int = option(50, "latent size", positive_int)
    hidden: Tuple[int, ...] = option((200, 200), "hidden sizes of the encoder (the decoder "
                                     "mirrors them)", int_list)
    activation: str = option("tanh", "nonlinearity of the nets",
                             one_of(_registry(".models.nets", "ACTIVATIONS")))
    likelihood: str = option("bernoulli", "p(x|z)",
                             one_of(_registry(".models.likelihoods", "LIKELIHOODS")))
    guide: str = option("diagonal", "q(z|x), the variational family",
                        one_of(_registry(".models.guides", "GUIDES")))
    prior: str = option("normal", "p(z)",
                        one_of(_registry(".models.priors", "PRIORS")))
    prior_components: Optional[int] = option(
        None, "components of the mixture (default 10) or vamp (default 500) prior", at_least_one,
        metavar="K")
    arch: str = option("mlp", "encoder/decoder nets: conv for 28x28 or 32x32 images",
                       one_of(_registry(".models.nets", "ARCHS")), choices=True)
    image_shape: Optional[Tuple[int, ...]] = option(None, "(C, H, W) for arch conv", cli=False)
    guide_options: _Config = option(None, cli=False)

    def __post_init__(self):
        if isinstance(self.image_shape, list):
            self.image_shape = tuple(self.image_shape)
        options = self.guide_options
        if options is None or isinstance(options, dict):
            self.guide_options = options_for(self.guide, options or {})
        super().__post_init__()
        from .limits import check_at_most, check_net_sizes  # sane sizes, before any allocation

        check_net_sizes(self.x_dim or 1, self.z_dim, self.hidden)
        check_at_most("prior_components", self.prior_components)
        opts = self.guide_options.to_dict()
        for name in ("flow_length", "rank"):
            check_at_most(name, opts.get(name))
        for h in opts.get("flow_hidden") or ():
            check_at_most("flow_hidden", h)

    def to_dict(self) -> dict:
        """The "vae" entry of config.json: the guide family's options sit beside the others, and
        arch, prior_components and image_shape only when they are not the defaults (as pyvae
        always wrote it)."""
        d = {f.name: _jsonable(getattr(self, f.name))
             for f in fields(self) if f.name not in ("guide_options", "arch", "prior_components",
                                                     "image_shape")}
        d.update(self.guide_options.to_dict())
        if self.arch != "mlp" or self.prior_components is not None:
            d.update(arch=self.arch, prior_components=self.prior_components,
                     image_shape=_jsonable(self.image_shape) if self.arch != "mlp" else None)
        return d

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "ModelConfig":
        d = dict(d or {})
        own = {f.name for f in fields(cls)} - {"guide_options"}
        options = {k: d.pop(k) for k in list(d) if k not in own}
        return cls(**d, guide_options=options)


def options_for(guide, options: dict, strict: bool = True) -> _Config:
    """The options dataclass of ``guide`` from a dict: None means the default; with ``strict``
    an option the family does not take is an error, without it an option of another family is
    dropped (one set of options can serve a comparison)."""
    options = {k: v for k, v in options.items() if v is not None}
    known = guide_option_fields()
    unknown = sorted(set(options) - set(known))
    if unknown and strict:
        raise ConfigError(f"unknown guide option {', '.join(unknown)}; guide options are: "
                          f"{', '.join(sorted(known))}")
    cls = guide_options_class(guide)
    taken = {f.name for f in fields(cls)}
    foreign = sorted(set(options) - taken)
    if foreign and strict and isinstance(guide, str):
        raise ConfigError(f"the {guide} guide takes no {', '.join(foreign)} (its options: "
                          f"{', '.join(sorted(taken)) or 'none'})")
    return cls(**{k: v for k, v in options.items() if k in taken})


# --------------------------------------------------------------------------- training
#: how ``TrainConfig.jit`` may be set
JIT_MODES = ("auto", "on", "off")
#: the losses with M groups of k samples (``TrainConfig.groups``)
GROUPED_LOSSES = ("miwae", "piwae")


@dataclass
class TrainConfig(_Config):
    """How the parameters are fitted (see ``pyvae.Trainer``)."""
    lr: float = option(1e-3, "learning rate", positive_float, name="learning rate")
    batch_size: int = option(100, "datapoints per step", positive_int,
                             name="batch size")
    epochs: int = option(10, "total epochs", nonnegative_int)
    loss: str = option("trace_elbo", "objective (iwae: the k-sample bound, k = --particles; "
                       "miwae, ciwae, piwae: see --groups, --ciwae-beta)",
                       one_of(_registry(".infer.objectives", "OBJECTIVES")))
    particles: int = option(1, "z samples per datapoint (k; per group for miwae/piwae)", positive_int)
    estimator: str = option("reparam", "gradient estimator for the guide: reparam, stl (sticking "
                            "the landing) or dreg (doubly reparameterized)",
                            one_of(_registry(".infer.objectives", "ESTIMATORS")), choices=True)
    groups: int = option(1, "miwae/piwae: M groups of --particles k samples", positive_int,
                         metavar="M")
    ciwae_beta: float = option(0.5, "ciwae: beta in beta*ELBO + (1-beta)*IWAE_k", unit_interval,
                               name="the ciwae beta")
    optimizer: str = option("adam", "the torch optimizer",
                            one_of(_registry(".training.schedules", "OPTIMIZERS")))
    schedule: str = option("constant", "learning-rate schedule: burda (Burda et al.'s 3,280 "
                           "epochs) or cosine (anneal to lr/100 over --epochs)",
                           one_of(_registry(".training.schedules", "SCHEDULES")))
    clip_norm: Optional[float] = option(None, "clip each parameter's gradient to this norm",
                                        positive_float, name="clip norm")
    seed: int = option(0, "seeds initial weights, training noise, data order")
    num_threads: Optional[int] = option(None, "torch CPU threads", positive_int,
                                        name="num_threads", cli=False)
    beta: float = option(1.0, "weight of the KL term in the training loss (1: the ELBO; "
                         "validation always reports the ELBO)", nonnegative_float)
    kl_warmup: float = option(0.0, "raise the KL weight linearly from 0 to --beta over EPOCHS "
                              "(0: none)", nonnegative_float, metavar="EPOCHS")
    jit: str = option("auto", "compile the training step with torch.jit: auto (where the "
                      "compiled step computes the same as the plain one; docs/training.md), "
                      "on (also --jit alone; an error where it does not apply) or off",
                      one_of(lambda: JIT_MODES, names_only=True), choices=True, bare="on")

    @classmethod
    def from_dict(cls, d: Optional[dict]):
        """As ``_Config.from_dict``; a run written before ``jit`` existed trained uncompiled."""
        d = dict(d or {})
        d.setdefault("jit", "off")
        return super().from_dict(d)

    def __post_init__(self):
        from .limits import check_at_most, check_seed

        check_seed(self.seed)
        if self.jit is None or isinstance(self.jit, bool):  # runs written before "auto": bools
            self.jit = {None: "auto", True: "on", False: "off"}[self.jit]
        super().__post_init__()
        for name in ("epochs", "batch_size", "particles"):
            check_at_most(name, getattr(self, name))
        from .infer.objectives import make_objective

        make_objective(self.loss, self.particles, self.estimator, self.groups, self.ciwae_beta)
        # an option the loss does not take would be ignored silently: it is refused
        if self.groups != TrainConfig.groups and self.loss not in GROUPED_LOSSES:
            raise ConfigError(f"--groups {self.groups} applies to the "
                              f"{' and '.join(GROUPED_LOSSES)} losses only, not {self.loss}")
        if self.ciwae_beta != TrainConfig.ciwae_beta and self.loss != "ciwae":
            raise ConfigError(f"--ciwae-beta {self.ciwae_beta} applies to the ciwae loss only, "
                              f"not {self.loss}")


# --------------------------------------------------------------------------- data
@dataclass
class DataConfig(_Config):
    """Where the data come from and how they are binarized (see ``pyvae.data``)."""
    dataset: str = option("mnist", "mnist, fashion-mnist, kmnist, emnist[-SPLIT], cifar10, "
                          "linear-gaussian")
    data_file: Optional[str] = option(None, "train on a .pt/.npy/.npz array instead of --dataset")
    binarize: Optional[str] = option(None, "dynamic, fixed or none (default: dynamic for the "
                                     "bernoulli likelihood, else none)",
                                     one_of(_registry(".data", "BINARIZE")))
    valid_size: Optional[int] = option(None, "held out from train (default 10000; a tenth of a "
                                       "--data-file)")
    seed: int = option(0, cli=False)
    data_dir: Optional[str] = option(None, cli=False)       # where the data set was found
    fingerprint: Optional[dict] = option(None, cli=False)   # sha256 of the data, checked on resume

    def to_dict(self) -> dict:
        """data_dir and fingerprint only when set (as configs without them were written)."""
        d = super().to_dict()
        return {k: v for k, v in d.items() if v is not None or k not in ("data_dir", "fingerprint")}

    def completed(self, binary_data=True) -> "DataConfig":
        """The defaults that depend on the likelihood filled in (binarize) or on the source."""
        from .data import complete_data_config

        return DataConfig(**complete_data_config(self.to_dict(), binary_data))


# --------------------------------------------------------------------------- a run
@dataclass
class RunConfig:
    """A run's whole configuration: config.json is ``to_dict()``."""
    model: Optional[ModelConfig] = None
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict:
        return {"vae": None if self.model is None else self.model.to_dict(),
                "trainer": self.train.to_dict(), "data": self.data.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """Reads config.json as any version of pyvae wrote it. ``vae`` is None for a run built
        from component objects."""
        if not isinstance(d, dict):
            raise ConfigError(f"a run config is a JSON object, got {type(d).__name__}")
        model = d.get("vae")
        return cls(model=None if model is None else ModelConfig.from_dict(model),
                   train=TrainConfig.from_dict(d.get("trainer")),
                   data=DataConfig.from_dict(d.get("data")))


def flag_fields(cls) -> List[dataclasses.Field]:
    """The fields of a config dataclass that are command-line flags."""
    return [f for f in fields(cls) if f.metadata.get("cli", True)]
