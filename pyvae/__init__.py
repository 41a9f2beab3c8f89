"""pyvae: variational autoencoders in Pyro, and the gap between the ELBO and log p(x)."""
import os
import signal
import sys

from .errors import interrupted_while_starting

# Started as the ``pyvae`` command (the console script, or ``python -m pyvae``): Ctrl-C while
# torch and pyro are still being imported is one line, not a traceback; ``pyvae.cli.main``
# gives SIGINT back to Python once it runs. An import from Python keeps Python's handler.
_argv = getattr(sys, "orig_argv", sys.argv)
if os.path.basename(sys.argv[0] or "") == "pyvae" or any(
        a == "-m" and b == "pyvae" for a, b in zip(_argv, _argv[1:])):
    signal.signal(signal.SIGINT, interrupted_while_starting)

from .errors import ConfigError  # noqa: E402 (after the start-up handler)
from .models import flows, guides, likelihoods, linear_gaussian, nets, priors, vae
from .infer import beta, diagnostics, evaluate, objectives
from .infer import refine as _refine_module
from .training import checkpoint, distributed, optim
from .training import trainer as _trainer_module
from .reports import compare as _compare_module
from .reports import plots  # (matplotlib itself is loaded with the first figure)
from . import data
from .data import TensorData, load_dataset
from .infer.evaluate import active_units, gaps, iwae_bound, kl_per_dimension, log_likelihood
from .infer.ais import ais, bdmc, prior_guide
from .infer.refine import RefinedGuide, refine
from .models.likelihoods import bits_per_dim
from .models.linear_gaussian import LinearGaussian
from .models.vae import VAE
from .reports.compare import compare
from .training.trainer import Trainer
from .run import Run
from . import config
from .models import config as _model_config
from .models.guides import FlowOptions, LowRankOptions, SplineOptions, SylvesterOptions
from .training import config as _train_config

__version__ = "0.1.0"

# The modules lived directly under pyvae/ before the package was split into models/, infer/,
# training/ and reports/; their old import paths (``import pyvae.guides``, ``from pyvae.train
# import Trainer``) name the same module objects.
_OLD_PATHS = {
    "nets": nets, "likelihoods": likelihoods, "priors": priors, "guides": guides, "flows": flows,
    "vae": vae, "linear_gaussian": linear_gaussian, "beta": beta, "evaluate": evaluate,
    "objectives": objectives, "refine": _refine_module, "train": _trainer_module,
    "checkpoint": checkpoint, "distributed": distributed, "optim": optim,
    "compare": _compare_module, "plots": plots,
}
_OLD_PATHS["diagnostics"] = diagnostics  # (new, and short: pyvae.diagnostics.gradient_snr)
for _old, _module in _OLD_PATHS.items():
    sys.modules.setdefault(f"{__name__}.{_old}", _module)
    if _old not in ("refine", "compare"):  # pyvae.refine and pyvae.compare are the functions
        globals()[_old] = _module

# ``pyvae.config`` holds how options are declared and checked, and imports nothing above it; the
# config classes live beside what they configure and keep their old path ``pyvae.config.X``
for _name, _obj in {"ModelConfig": _model_config.ModelConfig, "TrainConfig": _train_config.TrainConfig,
                    "DataConfig": _train_config.DataConfig, "RunConfig": _train_config.RunConfig,
                    "JIT_MODES": _train_config.JIT_MODES, "LowRankOptions": LowRankOptions,
                    "FlowOptions": FlowOptions, "SplineOptions": SplineOptions,
                    "SylvesterOptions": SylvesterOptions, "options_for": guides.options_for,
                    "guide_option_fields": guides.guide_option_fields}.items():
    setattr(config, _name, _obj)

# ``pyvae.refine`` (in infer/, which imports no model) builds the flow families by name from its
# registry: the registry of pyvae's guide families itself (the same dict, so a family registered in
# ``GUIDES`` later is refinable by name too; refine skips the Gaussian names, which are its own)
_refine_module.FLOW_FAMILIES = guides.GUIDES

__all__ = ["VAE", "Trainer", "Run", "config", "ConfigError", "TensorData", "load_dataset", "guides",
           "likelihoods", "priors", "nets", "evaluate", "log_likelihood", "iwae_bound",
           "gaps", "ais", "bdmc", "prior_guide", "active_units", "kl_per_dimension", "bits_per_dim",
           "refine", "RefinedGuide", "LinearGaussian", "compare", "plots", "distributed", "diagnostics"]
