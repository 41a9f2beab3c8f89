"""pyvae: variational autoencoders in Pyro, and the gap between the ELBO and log p(x)."""
from . import distributed, evaluate, guides, likelihoods, nets, priors
from .compare import compare
from .data import TensorData, load_dataset
from .errors import ConfigError
from .evaluate import active_units, gaps, iwae_bound, kl_per_dimension, log_likelihood
from .annealing import ais, bdmc, prior_guide
from .likelihoods import bits_per_dim
from .linear_gaussian import LinearGaussian
from .refine import RefinedGuide, refine
from .train import Trainer
from .vae import VAE

__version__ = "0.1.0"


def __getattr__(name):
    # pyvae.plots loads matplotlib, so it is imported on first use rather than with pyvae
    if name == "plots":
        import importlib

        return importlib.import_module(".plots", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["VAE", "Trainer", "ConfigError", "TensorData", "load_dataset", "guides",
           "likelihoods", "priors", "nets", "evaluate", "log_likelihood", "iwae_bound",
           "gaps", "ais", "bdmc", "prior_guide", "active_units", "kl_per_dimension", "bits_per_dim", "refine",
           "RefinedGuide", "LinearGaussian", "compare", "plots", "distributed"]
