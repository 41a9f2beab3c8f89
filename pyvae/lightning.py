"""Train a Pyro model/guide pair with Lightning: a LightningModule whose step is pyvae's objective.

    module = pyvae.lightning.ObjectiveModule.from_vae(vae)           # or (model, guide, params)
    lightning.Trainer(max_epochs=10, logger=CSVLogger("logs")).fit(module, train_loader)

Each training step is the step of ``pyvae.Trainer``,

    loss = objective.differentiable_loss(model, guide, x)     # -ELBO (or -IWAE_k), summed over x

and Lightning does the rest: ``loss.backward()``, the optimizer step, devices and strategies,
checkpoints, loggers, callbacks. The objective is any of ``pyvae.infer.objectives`` (by name, as
``Trainer(loss=...)``), so the IWAE-type bounds and their gradient estimators train the same way.
What is logged, per datapoint in nats (higher is better): ``train_elbo`` (minus the training loss
over the batch size: the ELBO, or the bound being trained) and, with validation data,
``valid_elbo`` (the single-sample ELBO, as ``Trainer`` reports it).

Lightning is an optional extra (``pip install -e ".[lightning]"``) and heavy to import:
``import pyvae`` does not load this module, and this module loads Lightning.
"""
from typing import Callable

import torch

import pyro
import pyro.infer

from .config import TrainConfig
from .errors import ConfigError
from .infer.objectives import make_objective

try:
    import lightning
except ImportError as error:  # the extra is not installed: say which one
    raise ImportError("pyvae.lightning needs Lightning: pip install lightning "
                      "(or pip install -e \".[lightning]\")") from error


def batch_tensor(batch) -> torch.Tensor:
    """The data of a DataLoader batch: the tensor itself, or the first item of a (x, label, ...)
    tuple such as a ``TensorDataset`` yields."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"a batch must be a tensor or a (tensor, ...) tuple, got {type(x).__name__}")
    return x


class ObjectiveModule(lightning.LightningModule):
    """A Pyro model and guide as a LightningModule, trained on pyvae's objective.

    Args:
        model: a Pyro model ``model(x)``, e.g. ``vae.model``.
        guide: its guide ``guide(x)``, e.g. ``vae.guide``.
        params: a ``torch.nn.Module`` holding every trainable parameter of the model and the
            guide (a ``pyvae.VAE``, a ``pyro.nn.PyroModule``, or an ``nn.ModuleDict`` of the
            networks they register with ``pyro.module``). Lightning optimises and moves its
            parameters; a parameter created only by ``pyro.param`` is not seen.
        loss: the objective's name (``pyvae.infer.objectives.OBJECTIVES``), as ``Trainer(loss=)``.
        particles: k, samples of z per datapoint and step.
        estimator: the guide-gradient estimator ("reparam", "stl", "dreg").
        groups: M, for "miwae" and "piwae".
        ciwae_beta: beta, for "ciwae".
        lr: the learning rate of the Adam optimizer (``configure_optimizers``).
    """

    def __init__(self, model: Callable, guide: Callable, params: torch.nn.Module, *,
                 loss: str = TrainConfig.loss, particles: int = TrainConfig.particles,
                 estimator: str = TrainConfig.estimator, groups: int = TrainConfig.groups,
                 ciwae_beta: float = TrainConfig.ciwae_beta, lr: float = TrainConfig.lr):
        super().__init__()
        if not isinstance(params, torch.nn.Module):
            raise ConfigError(f"params must be a torch.nn.Module holding the parameters, "
                              f"got {type(params).__name__}")
        # TrainConfig checks each option, and the estimator against the objective, once
        cfg = TrainConfig(loss=loss, particles=particles, estimator=estimator, groups=groups,
                          ciwae_beta=ciwae_beta, lr=lr)
        self.pyro_model, self.pyro_guide, self.params = model, guide, params
        self.objective = make_objective(cfg.loss, cfg.particles, cfg.estimator, cfg.groups,
                                        cfg.ciwae_beta)
        self.lr = cfg.lr

    @classmethod
    def from_vae(cls, vae, **options) -> "ObjectiveModule":
        """The module of a ``pyvae.VAE``: its model, its guide and its parameters."""
        return cls(vae.model, vae.guide, vae, **options)

    def on_fit_start(self) -> None:
        # Pyro's param store is global: the names pyro.module registers are this model's, as in
        # pyvae.Trainer (the parameters themselves live in ``params``)
        pyro.clear_param_store()

    def training_step(self, batch, batch_idx):
        x = batch_tensor(batch)
        loss = self.objective.differentiable_loss(self.pyro_model, self.pyro_guide, x)
        self.log("train_elbo", -loss.detach() / x.shape[0], on_step=False, on_epoch=True,
                 batch_size=x.shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        x = batch_tensor(batch)
        # -loss of a one-sample Trace_ELBO: the ELBO summed over x, as Trainer.evaluate_elbo
        elbo = -pyro.infer.Trace_ELBO().loss(self.pyro_model, self.pyro_guide, x)
        self.log("valid_elbo", elbo / x.shape[0], on_step=False, on_epoch=True,
                 batch_size=x.shape[0])

    def configure_optimizers(self):
        return torch.optim.Adam(self.params.parameters(), lr=self.lr)


__all__ = ["ObjectiveModule", "batch_tensor"]
