"""Callbacks: what the training loop does besides stepping the optimizer.

``Trainer.fit`` calls, on every callback in order::

    wrap(trainer, model, guide) -> (model, guide)      once, before training (e.g. beta weighting)
    on_fit_start(trainer)
    on_epoch_start(trainer, epoch)                     epoch counted from 0
    on_step_start(trainer, epoch, step, steps)
    on_step_end(trainer, epoch, step, loss)            loss: this step's loss (a float)
    on_epoch_end(trainer, record)                      record: the epoch's metrics dict
    on_fit_end(trainer)                                also after an error or an interruption

The trainer builds its own from its options -- ``KLWeight`` (beta, KL warm-up), ``ProgressBar``,
``RunWriter`` (checkpoint.pt and metrics.jsonl), ``JitCompile``, ``TensorBoard`` -- and appends
those given as
``Trainer(callbacks=[...])``. A plain function ``f(trainer, record)`` is taken as an
``on_epoch_end`` hook.
"""
import os
import warnings
from typing import Callable, Optional

import torch

from tqdm.auto import tqdm

from ..errors import ConfigError
from ..infer.beta import SiteScale, kl_weight, scale_site
from ..infer.objectives import compile_refusal, compiled_objective
from ..models.vae import VAE
from .checkpoint import TENSORBOARD
from .rundir import RunDir


class Callback:
    """Base class: every hook does nothing."""

    def wrap(self, trainer, model, guide):
        return model, guide

    def on_fit_start(self, trainer) -> None:
        pass

    def on_epoch_start(self, trainer, epoch: int) -> None:
        pass

    def on_step_start(self, trainer, epoch: int, step: int, steps: int) -> None:
        pass

    def on_step_end(self, trainer, epoch: int, step: int, loss: float) -> None:
        pass

    def on_epoch_end(self, trainer, record: dict) -> None:
        pass

    def on_fit_end(self, trainer) -> None:
        pass


class EpochEnd(Callback):
    """A function ``f(trainer, record)`` called after every epoch."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def on_epoch_end(self, trainer, record):
        self.fn(trainer, record)


def as_callback(cb) -> Callback:
    if isinstance(cb, Callback):
        return cb
    if callable(cb):
        return EpochEnd(cb)
    raise ConfigError(f"a callback is a pyvae Callback or a function f(trainer, record), "
                      f"got {type(cb).__name__}")


class KLWeight(Callback):
    """beta-VAE and KL warm-up: the latent site "z" of model and guide is weighted by

        beta_t = beta * min(1, t / kl_warmup),   t = epochs done (fractional),

    so the loss is -E_q[log p(x|z)] + beta_t KL(q(z|x) || p(z)) (``pyvae.infer.beta``). The
    record then holds the weight of the epoch's last step as ``beta``.
    """

    def __init__(self, beta: float = 1.0, kl_warmup: float = 0.0):
        self.beta, self.kl_warmup = beta, kl_warmup
        self.scale = SiteScale("z")

    def wrap(self, trainer, model, guide):
        return scale_site(model, self.scale), scale_site(guide, self.scale)

    def on_step_start(self, trainer, epoch, step, steps):
        self.scale.scale = kl_weight(self.beta, self.kl_warmup, epoch, step, steps)

    def on_epoch_end(self, trainer, record):
        record["beta"] = self.scale.scale


class JitCompile(Callback):
    """Train full batches with the compiled objective (Pyro's ``JitTrace_ELBO``,
    ``pyvae.infer.objectives.compiled_objective``): the model and guide are traced once, which
    removes most of Pyro's per-step Python overhead. A smaller last batch keeps the plain
    objective (a trace is specific to its shapes)."""

    def __init__(self, loss: str, particles: int, batch_size: int):
        self.compiled = compiled_objective(loss, particles)
        self.batch_size = batch_size
        self.plain, self.trainer, self.warm = None, None, False

    @staticmethod
    def refusal(trainer) -> Optional[str]:
        """Why ``trainer``'s step cannot be compiled to the same computation (None: it can).

        Tracing records one step's operations and replays them, so it needs a step whose
        operations do not change between steps and code it can trust to be traceable."""
        cfg, vae = trainer.train_config, trainer.vae
        why = compile_refusal(cfg.loss, cfg.estimator)
        if why:
            return why
        if cfg.beta != 1 or cfg.kl_warmup:  # the traced graph would freeze the KL weight
            return "--jit cannot be combined with --beta or --kl-warmup"
        if trainer.distributed:  # a DDP forward (and its gradient hooks) cannot be traced
            return "--jit cannot be combined with --distributed"
        if trainer.validate:  # Pyro's argument checks would run once, when tracing
            return "--jit cannot be combined with validate=True"
        if any(type(c).wrap is not Callback.wrap for c in trainer.callbacks):
            return "--jit cannot be combined with a callback that wraps the model or guide"
        if type(vae) is not VAE or vae.config is None:
            return ("--jit traces only pyvae's own VAE built from named components (custom "
                    "code may branch on tensor values, which a trace would freeze)")
        if not vae.encoder.traceable:
            return f"--jit does not apply to the {type(vae.encoder).__name__} guide family"
        return None

    def on_fit_start(self, trainer):
        self.plain, self.trainer = trainer.objective, trainer
        trainer.objective = self

    def on_fit_end(self, trainer):
        if self.plain is not None:
            trainer.objective = self.plain

    def differentiable_loss(self, model, guide, x):
        if x.shape[0] != self.batch_size:
            return self.plain.differentiable_loss(model, guide, x)
        if not self.warm:
            # Tracing runs the model and guide (and draws random numbers) a few extra times: do
            # it once on the side, with the random state restored and the gradients dropped, so
            # a compiled run draws random numbers exactly like one resumed from a checkpoint.
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []), \
                    warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
                self.compiled.differentiable_loss(model, guide, x).backward()
            self.trainer.optimizer.zero_grad(set_to_none=True)
            self.warm = True
        return self.compiled.differentiable_loss(model, guide, x)


class ProgressBar(Callback):
    """A tqdm bar per epoch with the running ELBO (every 20 steps)."""

    def __init__(self, every: int = 20):
        self.every = every
        self.bar = None

    def on_epoch_start(self, trainer, epoch):
        self.bar = tqdm(total=trainer.steps_per_epoch, initial=trainer.start_step,
                        desc=f"epoch {epoch + 1}/{trainer.config['epochs']}", leave=False,
                        dynamic_ncols=True)

    def on_step_end(self, trainer, epoch, step, loss):
        self.bar.update(1)
        if step % self.every == 0:
            self.bar.set_postfix(elbo=f"{trainer.running_elbo:.2f}")

    def on_epoch_end(self, trainer, record):
        self.close()

    def on_fit_end(self, trainer):
        self.close()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class RunWriter(Callback):
    """The run directory: locked for the fit (``pyvae.training.rundir.RunDir``; a new run in a
    temp sibling until its first checkpoint), and after every epoch its config.json,
    metrics.jsonl and checkpoint.pt (atomically)."""

    def on_fit_start(self, trainer):
        resuming = trainer.resumed
        trainer.run_dir = RunDir(trainer.out, overwrite=trainer.overwrite, resume=resuming)
        if resuming:  # metrics.jsonl as the checkpoint has them (a kill may have cut between)
            trainer.run_dir.write_metrics(trainer.history)

    def on_epoch_end(self, trainer, record):
        trainer.save(record["epoch"], 0)

    def on_fit_end(self, trainer):
        if getattr(trainer, "run_dir", None) is not None:
            trainer.run_dir.close()
            trainer.run_dir = None


class TensorBoard(Callback):
    """TensorBoard event files in ``log_dir`` (``torch.utils.tensorboard.SummaryWriter``):
    per epoch the scalars ``train_elbo``, ``valid_elbo`` (when there is validation data), ``lr``,
    and ``beta`` when the KL term is weighted; the x axis is the epoch (1, 2, ...)."""

    def __init__(self, log_dir: Optional[str] = None):
        self.log_dir = log_dir
        self.writer = None

    def on_epoch_end(self, trainer, record):
        if self.writer is None:  # opened after the first checkpoint: a new run's directory
            from torch.utils.tensorboard import SummaryWriter  # takes its name only then

            log_dir = self.log_dir or (os.path.join(trainer.out, TENSORBOARD) if trainer.out else None)
            self.writer = SummaryWriter(log_dir=log_dir)
        for key in ("train_elbo", "valid_elbo", "lr", "beta"):
            if record.get(key) is not None:
                self.writer.add_scalar(key, record[key], record["epoch"])
        self.writer.flush()

    def on_fit_end(self, trainer):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
