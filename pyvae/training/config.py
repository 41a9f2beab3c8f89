"""How a model is fitted and to what data: ``TrainConfig`` and ``DataConfig``, each option's
default and check once, and ``RunConfig``, a run's whole configuration (config.json is its
``to_dict()``).

``RunConfig.from_dict`` reads every config.json pyvae has written (keys added later take their
defaults). ``Trainer`` and ``compare`` take their defaults from these classes, and the ``pyvae``
command line builds its flags from their fields. The names they take are checked against the
registries they name (``OBJECTIVES``, ``ESTIMATORS``, ``OPTIMIZERS``, ``SCHEDULES``,
``BINARIZE``); an objective is built from a checked config and trusts it.
"""
from dataclasses import dataclass, field
from typing import Optional

from ..config import (Config, at_most, nonnegative_float, nonnegative_int, one_of, option,
                      positive_float, positive_int, unit_interval, valid_seed)
from ..data import BINARIZE, complete_data_config
from ..errors import ConfigError
from ..infer.objectives import ESTIMATORS, OBJECTIVES, estimators_of
from ..models.config import ModelConfig
from .schedules import OPTIMIZERS, SCHEDULES


# --------------------------------------------------------------------------- training
#: how ``TrainConfig.jit`` may be set
JIT_MODES = ("auto", "on", "off")
#: the losses with M groups of k samples (``TrainConfig.groups``)
GROUPED_LOSSES = ("miwae", "piwae")
#: the options only some losses take: option -> those losses (any other loss refuses it)
LOSS_ONLY_OPTIONS = {"groups": GROUPED_LOSSES, "ciwae_beta": ("ciwae",)}


@dataclass
class TrainConfig(Config):
    """How the parameters are fitted (see ``pyvae.Trainer``).

    Args:
        lr: the learning rate of the optimizer (the schedule multiplies it).
        batch_size: datapoints per optimizer step (the global batch in distributed training).
        epochs: the total number of passes over the training data (a resumed run continues up
            to it).
        loss: the objective, a key of ``infer.objectives.OBJECTIVES``: "trace_elbo",
            "tracemeanfield_elbo", "iwae", "miwae", "ciwae" or "piwae".
        particles: k, the samples of z per datapoint (per group for miwae and piwae).
        estimator: the gradient estimator for the guide's parameters: "reparam", "stl" or
            "dreg" (``docs/estimators.md``).
        groups: M, the groups of k samples of miwae and piwae (1 for the other losses).
        ciwae_beta: beta in CIWAE = beta ELBO + (1 - beta) IWAE_k, in [0, 1] (ciwae only).
        optimizer: a key of ``training.schedules.OPTIMIZERS`` ("adam", "clipped_adam").
        schedule: the learning-rate schedule, a key of ``SCHEDULES``: "constant", "burda"
            (Burda et al.'s 8 stages, 3,280 epochs) or "cosine" (to lr/100 over ``epochs``).
        clip_norm: clip the gradient of each parameter tensor to this L2 norm (None: no
            clipping, but clipped_adam's own 10).
        seed: seeds the initial weights, the training noise and the data order.
        num_threads: torch's CPU threads while training (None: torch's default); float
            results depend on it.
        beta: the weight of the KL term (of the "z" site) in the training loss: 1 is the
            ELBO, other values a beta-VAE; validation always reports the ELBO.
        kl_warmup: epochs over which the KL weight rises linearly from 0 to ``beta`` (0: none).
        jit: compile the training step with torch.jit: "auto" (where the compiled step
            computes the same as the plain one), "on" (an error where it does not apply) or
            "off".
    """
    lr: float = option(1e-3, "learning rate", positive_float, name="learning rate")
    batch_size: int = option(100, "datapoints per step", at_most(positive_int, "batch_size"),
                             name="batch size")
    epochs: int = option(10, "total epochs", at_most(nonnegative_int, "epochs"))
    loss: str = option("trace_elbo", "objective (iwae: the k-sample bound, k = --particles; "
                       "miwae, ciwae, piwae: see --groups, --ciwae-beta)",
                       one_of(OBJECTIVES, names_only=True))
    particles: int = option(1, "z samples per datapoint (k; per group for miwae/piwae)",
                            at_most(positive_int, "particles"))
    estimator: str = option("reparam", "gradient estimator for the guide: reparam, stl (sticking "
                            "the landing) or dreg (doubly reparameterized)",
                            one_of(ESTIMATORS, names_only=True), choices=True)
    groups: int = option(1, "miwae/piwae: M groups of --particles k samples", positive_int,
                         metavar="M")
    ciwae_beta: float = option(0.5, "ciwae: beta in beta*ELBO + (1-beta)*IWAE_k", unit_interval,
                               name="the ciwae beta")
    optimizer: str = option("adam", "the torch optimizer", one_of(OPTIMIZERS, names_only=True))
    schedule: str = option("constant", "learning-rate schedule: burda (Burda et al.'s 3,280 "
                           "epochs) or cosine (anneal to lr/100 over --epochs)",
                           one_of(SCHEDULES, names_only=True))
    clip_norm: Optional[float] = option(None, "clip each parameter's gradient to this norm",
                                        positive_float, name="clip norm")
    seed: int = option(0, "seeds initial weights, training noise, data order", valid_seed)
    num_threads: Optional[int] = option(None, "torch CPU threads", positive_int,
                                        name="num_threads", cli=False)
    beta: float = option(1.0, "weight of the KL term in the training loss (1: the ELBO; "
                         "validation always reports the ELBO)", nonnegative_float)
    kl_warmup: float = option(0.0, "raise the KL weight linearly from 0 to --beta over EPOCHS "
                              "(0: none)", nonnegative_float, metavar="EPOCHS")
    jit: str = option("auto", "compile the training step with torch.jit: auto (where the "
                      "compiled step computes the same as the plain one; docs/training.md), "
                      "on (also --jit alone; an error where it does not apply) or off",
                      one_of(JIT_MODES, names_only=True), choices=True, bare="on")

    @classmethod
    def from_dict(cls, d: Optional[dict]):
        """As ``Config.from_dict``; a run written before ``jit`` existed trained uncompiled.

        Args:
            d: {option: value} as ``to_dict`` writes it (the "trainer" entry of config.json);
                None or a missing option: the default.
        """
        d = dict(d or {})
        d.setdefault("jit", "off")
        return super().from_dict(d)

    def __post_init__(self):
        if self.jit is None or isinstance(self.jit, bool):  # runs written before "auto": bools
            self.jit = {None: "auto", True: "on", False: "off"}[self.jit]
        super().__post_init__()
        allowed = estimators_of(self.loss)
        if self.estimator not in allowed:
            raise ConfigError(f"the {self.loss} objective takes the estimator(s) "
                              f"{', '.join(allowed)}, not {self.estimator!r}"
                              + ("; with k = 1 dreg equals stl" if self.estimator == "dreg" else ""))
        # an option the loss does not take would be ignored silently: it is refused
        self.refuse_options_of_other_losses(
            {name for name in LOSS_ONLY_OPTIONS if getattr(self, name) != getattr(TrainConfig, name)})

    def refuse_options_of_other_losses(self, given) -> None:
        """One ConfigError naming the first option in ``given`` that ``loss`` does not take
        (``LOSS_ONLY_OPTIONS``): a value other than the default, or a flag given on the command
        line even at its default (``--groups 1`` with trace_elbo).

        Args:
            given: names of options (fields of this class) set by the user.
        """
        for name in sorted(set(given) & set(LOSS_ONLY_OPTIONS)):
            losses = LOSS_ONLY_OPTIONS[name]
            if self.loss not in losses:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)} applies to the "
                                  f"{' and '.join(losses)} loss{'es' if len(losses) > 1 else ''} "
                                  f"only, not {self.loss}")


# --------------------------------------------------------------------------- data
@dataclass
class DataConfig(Config):
    """Where the data come from and how they are binarized (see ``pyvae.data``).

    Args:
        dataset: a name ``pyvae.load_dataset`` knows: "mnist", "fashion-mnist", "kmnist",
            "emnist[-SPLIT]", "cifar10" or "linear-gaussian".
        data_file: a .pt, .npy or .npz array of datapoints to use instead of ``dataset``.
        binarize: "dynamic" (a fresh Bernoulli draw per batch), "fixed" (one draw, seeded) or
            "none"; None: "dynamic" for a likelihood that needs binary data, else "none".
        valid_size: datapoints held out from the training split for validation (None: 10,000
            for a named data set, a tenth of a ``data_file``'s rows).
        seed: seeds the "fixed" binarization, and the one-off binarization of the held-out
            splits under "dynamic".
        data_dir: the directory the data set was found in.
        fingerprint: the sha256 of the data, checked when a run resumes.
    """
    dataset: str = option("mnist", "mnist, fashion-mnist, kmnist, emnist[-SPLIT], cifar10, "
                          "linear-gaussian")
    data_file: Optional[str] = option(None, "train on a .pt/.npy/.npz array instead of --dataset")
    binarize: Optional[str] = option(None, "dynamic, fixed or none (default: dynamic for the "
                                     "bernoulli likelihood, else none)",
                                     one_of(BINARIZE))
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
        """The defaults that depend on the likelihood filled in (binarize) or on the source.

        Args:
            binary_data: the likelihood's ``binary_data``: True (it needs {0, 1} data) makes
                an open ``binarize`` "dynamic", anything else "none".

        Returns:
            a new ``DataConfig`` with ``binarize`` (and a ``data_file``'s ``valid_size``) set.
        """
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
