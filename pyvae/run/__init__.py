"""A run directory, opened one way: ``pyvae.Run(path)``.

``pyvae train`` (``pyvae.Trainer``) writes a run directory; ``Run`` reads it::

    run = pyvae.Run("runs/mnist")
    run.config.model.z_dim          # the dataclasses of pyvae.config (run.config.to_dict())
    run.metrics()[-1]["valid_elbo"] # one dict per epoch
    vae = run.load_vae()            # the trained VAE, in eval mode
    run.evaluate(num_samples=5000)  # log p(x), ELBO, gap, active units, ... as in eval.json

Reading the directory is ``pyvae.run.directory``; its evaluation ``pyvae.run.evaluation``, BDMC
``pyvae.run.bdmc`` and gradient SNR ``pyvae.run.snr``. The file names are those of
``pyvae.training.checkpoint`` (``CHECKPOINT``, ``CONFIG``, ...).
"""
from ..training.checkpoint import (BDMC, CHECKPOINT, CONFIG, EVAL, FIGURES, METRICS, SNR,
                                   TENSORBOARD)
from .directory import Run, good_records
from .evaluation import evaluate_vae

__all__ = ["Run", "evaluate_vae", "good_records", "CHECKPOINT", "CONFIG", "METRICS", "EVAL",
           "SNR", "BDMC", "TENSORBOARD", "FIGURES"]
