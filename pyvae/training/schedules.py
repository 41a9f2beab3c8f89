"""Learning-rate schedules and optimizers, by name.

A schedule is a multiplier f(epoch, epochs) of the base learning rate, epoch counted from 0; the
trainer applies it through ``torch.optim.lr_scheduler.LambdaLR``.
"""
import math

import pyro.optim.clipped_adam
import torch

# torch optimizer classes; ClippedAdam is Pyro's Adam with per-parameter norm clipping and lr decay
OPTIMIZERS = {"adam": torch.optim.Adam, "clipped_adam": pyro.optim.clipped_adam.ClippedAdam}


def _burda(epoch: int, epochs: int = 0) -> float:
    """Burda et al. (2016): stage i = 0..7 lasts 3^i epochs at lr 1e-3 * 10^(-i/7) (3,280 epochs)."""
    start = 0
    for i in range(8):
        start += 3 ** i
        if epoch < start:
            return 10 ** (-i / 7)
    return 10 ** (-1)


def _cosine(epoch: int, epochs: int) -> float:
    """Half a cosine from 1 down to 0.01 over the run's epochs: lr_e = lr (0.01 + 0.99 (1 + cos(pi e / E)) / 2).

    Burda's schedule spends most of its 3,280 epochs at small learning rates; a run of a few
    hundred epochs gets most of the same benefit by annealing smoothly over its own length.
    """
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))


def _constant(epoch: int, epochs: int) -> float:
    return 1.0


# learning-rate multipliers f(epoch, total_epochs), epoch counted from 0
SCHEDULES = {"constant": _constant, "burda": _burda, "cosine": _cosine}
