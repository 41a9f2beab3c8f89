"""Trainer: fits a VAE by stochastic variational inference, written as Pyro's examples do it.

Per step: a minibatch is drawn by indexing data resident on the device (and binarized if
asked), then

    loss = objective.differentiable_loss(model, guide, x)     # -ELBO (or -IWAE_k), nats
    loss.backward(); optimizer.step(); optimizer.zero_grad()

with one torch optimizer over all parameters (fused where torch has it), non-finite gradients
refused before they reach the parameters, and the learning rate set per epoch by a torch
``LambdaLR`` schedule. Everything optional -- beta/KL warm-up, progress bars, the run directory's
checkpoint and metrics, TensorBoard, user hooks -- is a callback (``pyvae.training.callbacks``).
"""
import math
import os
import signal
import time
from typing import Callable, Iterable, List, Optional

import torch

import pyro
from pyro.infer import Trace_ELBO

from .config import TrainConfig
from .checkpoint import (CHECKPOINT, check_finite_result, is_run_dir, resolve_device,
                         get_rng_state, load_checkpoint, set_rng_state)
from . import distributed as _distributed
from ..data import TensorData, as_data, recorded_data_config
from ..errors import ConfigError, TrainingDiverged, TrainingInterrupted
from ..infer.objectives import bound_name, make_objective
from .callbacks import (JitCompile, KLWeight, ProgressBar, RunWriter, TensorBoard,
                        as_callback)
from .rundir import check_new
from .signals import StopSignals
from .optim import (clip_each, load_named_state, make_torch_optimizer, named_state,
                    refuse_non_finite)
from .schedules import OPTIMIZERS, SCHEDULES
from ..models.vae import VAE


def _seed_for(seed: int, epoch: int, step: int) -> int:
    """A distinct, reproducible seed per (run seed, epoch, step) for data order and binarization."""
    return (seed * 1_000_003 + epoch) * 1_000_003 + step & 0x7FFF_FFFF_FFFF_FFFF


class Trainer:
    """Fits a ``VAE`` by stochastic gradient steps on its objective
    (``objective.differentiable_loss(model, guide, x)``, one torch optimizer): the options are those of ``pyvae.config.TrainConfig``
    (as keywords, or as ``config=``), and these:

    (lr, batch_size, epochs, loss, particles, optimizer, schedule, clip_norm, seed, num_threads,
    beta, kl_warmup, jit: see ``TrainConfig``; epochs is the run's total, which a resumed run
    continues up to).

    Args:
        vae: the model/guide pair to train.
        device: "cpu", "cuda", "cuda:1", ...
        out: run directory for config.json, metrics.jsonl and checkpoint.pt (None: write nothing).
        overwrite: allow ``out`` to be an existing run directory, replacing it.
        callbacks: ``pyvae.training.callbacks.Callback`` objects (or functions
            ``f(trainer, record)``, called after every epoch), after the trainer's own.
        tensorboard: write TensorBoard event files under ``out/tensorboard`` (train_elbo,
            valid_elbo, lr per epoch).
        progress: show a tqdm progress bar per epoch.
        validate: keep Pyro's argument validation on (slower; off by default in the hot loop).
        extra_config: JSON-able dict stored with the run (the CLI stores its data options here).
        distributed: data-parallel training over the processes of a ``torch.distributed`` group
            (``torchrun``; see ``pyvae.distributed``): ``batch_size`` is the global batch, each
            rank trains on its slice of it with DDP-synchronised gradients, rank 0 alone writes
            ``out`` and shows progress. ``device="cuda"`` means ``cuda:LOCAL_RANK``. The group
            is initialised from torchrun's environment if it is not yet.
    """

    def __init__(self, vae: VAE, lr: float = TrainConfig.lr,
                 batch_size: int = TrainConfig.batch_size, epochs: int = TrainConfig.epochs,
                 loss: str = TrainConfig.loss, particles: int = TrainConfig.particles,
                 optimizer: str = TrainConfig.optimizer, schedule: str = TrainConfig.schedule,
                 clip_norm: Optional[float] = TrainConfig.clip_norm, seed: int = TrainConfig.seed,
                 device="cpu", out: Optional[str] = None, overwrite: bool = False,
                 callbacks: Iterable[Callable] = (), progress: bool = True,
                 validate: bool = False, num_threads: Optional[int] = TrainConfig.num_threads,
                 jit: str = TrainConfig.jit, extra_config: Optional[dict] = None,
                 beta: float = TrainConfig.beta, kl_warmup: float = TrainConfig.kl_warmup,
                 distributed: bool = False, *, config: Optional[TrainConfig] = None,
                 tensorboard: bool = False, estimator: str = TrainConfig.estimator,
                 groups: int = TrainConfig.groups, ciwae_beta: float = TrainConfig.ciwae_beta):
        if not isinstance(vae, VAE):
            raise ConfigError(f"Trainer needs a pyvae.VAE, got {type(vae).__name__}")
        if config is None:
            config = TrainConfig(lr=lr, batch_size=batch_size, epochs=epochs, loss=loss,
                                 particles=particles, optimizer=optimizer, schedule=schedule,
                                 clip_norm=clip_norm, seed=seed, num_threads=num_threads,
                                 beta=beta, kl_warmup=kl_warmup, jit=jit, estimator=estimator,
                                 groups=groups, ciwae_beta=ciwae_beta)
        elif not isinstance(config, TrainConfig):
            raise ConfigError(f"config must be a pyvae.config.TrainConfig, got {type(config).__name__}")
        self.train_config = config
        self.vae = vae
        # not part of the stored config: a run may resume with another number of processes
        self.distributed = bool(distributed)
        self._dist = None
        self.device = resolve_device(_distributed.local_device(device) if distributed else device)
        self.out = out
        self.overwrite = overwrite
        self.callbacks = [as_callback(c) for c in callbacks]
        self.tensorboard = bool(tensorboard)
        self.progress = progress
        self.validate = validate
        self.extra_config = dict(extra_config or {})
        self.config = config.to_dict()  # the "trainer" entry of config.json
        self.history: List[dict] = []
        self._resume_payload = None
        self.resumed, self.run_dir = False, None  # RunWriter: lock and write the run directory
        self._stops = StopSignals(active=False)  # SIGINT/SIGTERM while fitting a run directory
        refusal = JitCompile.refusal(self)
        if config.jit == "on" and refusal:
            raise ConfigError(refusal)
        #: whether full batches train with the compiled objective (``TrainConfig.jit``)
        self.compiled = config.jit != "off" and refusal is None

    # ----------------------------------------------------------------- resume
    @classmethod
    def resume(cls, out: str, vae: Optional[VAE] = None, epochs: Optional[int] = None,
               device=None, num_threads: Optional[int] = None, **kwargs) -> "Trainer":
        """A Trainer that continues the run in ``out`` from its checkpoint.

        The VAE is rebuilt from the stored config unless given (needed when the run used custom
        component objects). ``epochs`` may raise the run's total; ``device`` and ``num_threads``
        may change (the run's thread count is kept by default, since sums in float depend on it,
        and exact continuation needs the same); other settings are the run's.
        """
        if not os.path.isdir(out):
            raise ConfigError(f"cannot resume: {out} is not a directory")
        if not is_run_dir(out):
            raise ConfigError(f"cannot resume: {out} is not a pyvae run (no {CHECKPOINT})")
        device = resolve_device(device or "cpu")
        payload = load_checkpoint(os.path.join(out, CHECKPOINT), map_location=device)
        if vae is None:
            if payload["vae_config"] is None:
                raise ConfigError(f"{out}: the run used custom components; pass vae= to resume it")
            vae = VAE.from_config(payload["vae_config"])
        elif payload["vae_config"] is not None and vae.config != payload["vae_config"]:
            raise ConfigError(f"{out}: the given VAE's config differs from the run's")
        try:
            vae.load_state_dict(payload["model_state"])
        except RuntimeError as e:
            raise ConfigError(f"{out}: checkpoint does not fit the model: {str(e).splitlines()[0]}") from None
        config = dict(payload["trainer_config"])
        if epochs is not None:
            config["epochs"] = int(epochs)
        if num_threads is not None:  # float results depend on it: the run's own is the default
            config["num_threads"] = int(num_threads)
        trainer = cls(vae, device=device, out=out, extra_config=payload.get("extra_config"),
                      **config, **kwargs)
        trainer._resume_payload = payload
        trainer.history = list(payload["history"])
        return trainer

    # ------------------------------------------------------------------- fit
    def fit(self, train, valid=None) -> List[dict]:
        """Train for the configured epochs; return the history (one dict per epoch)."""
        cfg = self.config
        train = as_data(train, "train").to(self.device)
        valid = None if valid is None else as_data(valid, "valid").to(self.device)
        train.check_for(self.vae.likelihood, self.vae.x_dim)
        if valid is not None:
            valid.check_for(self.vae.likelihood, self.vae.x_dim)
        if cfg["batch_size"] > len(train):
            raise ConfigError(f"batch size {cfg['batch_size']} is larger than the training set ({len(train)})")
        if self.distributed:
            self._dist = _distributed.setup(self.device)
            self._dist.check_batches(len(train), cfg["batch_size"])
        self.extra_config = recorded_data_config(self.extra_config, train, valid,
                                                 self._resume_payload is not None, self.out)
        self._prepare_out_dir()
        if cfg["num_threads"] is not None:
            torch.set_num_threads(cfg["num_threads"])
        self.vae.to(self.device)
        pyro.clear_param_store()  # Pyro's param store is global: its names are this VAE's
        self.param_names, self.params = self._trainable()
        self.optimizer = self._make_optimizer(self.params)
        self.objective = make_objective(cfg["loss"], cfg["particles"], cfg["estimator"],
                                        cfg["groups"], cfg["ciwae_beta"])
        callbacks, self.should_stop = self._own_callbacks() + self.callbacks, False

        start_epoch, start_step, partial = 0, 0, None
        if self._resume_payload is not None:
            p = self._resume_payload
            load_named_state(self.optimizer, self.param_names, p["optim_state"])
            set_rng_state(p["rng"])
            start_epoch, start_step, partial = p["epoch"], p["step"], p.get("partial")
            self._resume_payload, self.resumed = None, True
        else:
            pyro.set_rng_seed(cfg["seed"])
            self.history = []
        # lr of epoch e = lr * f(e, epochs), continued from the epoch a resumed run stopped in
        for group in self.optimizer.param_groups:
            group["initial_lr"] = cfg["lr"]
        schedule = SCHEDULES[cfg["schedule"]]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda e: schedule(e, cfg["epochs"]), last_epoch=start_epoch - 1)

        model, guide = self.vae.model, self.vae.guide
        parallel = None
        if self._dist is not None:  # the nets run through DDP wrappers while model and guide run
            parallel = self._dist.wrap(self.vae)
            model, guide = parallel.route(model), parallel.route(guide)
        for callback in callbacks:
            model, guide = callback.wrap(self, model, guide)
        self.model, self.guide = model, guide
        try:
            with self._signal_guard(), pyro.validation_enabled(self.validate):
                for callback in callbacks:
                    callback.on_fit_start(self)
                for epoch in range(start_epoch, cfg["epochs"]):
                    record = self._run_epoch(epoch, train, valid, start_step, partial, callbacks)
                    start_step, partial = 0, None
                    self.history.append(record)
                    self.scheduler.step()
                    for callback in callbacks:
                        callback.on_epoch_end(self, record)
                    if self.should_stop:  # a callback asked to end the run after this epoch
                        break
                if cfg["epochs"] == 0 and not self.history:
                    self.save(0, 0)  # an untrained run is still a run: evaluate and plot read it
            if self._dist is not None:
                self._dist.barrier()  # every rank returns once rank 0 has written the run directory
        finally:
            for callback in callbacks:
                callback.on_fit_end(self)
            if parallel is not None:
                parallel.release()
        return self.history

    def _own_callbacks(self):
        """The callbacks the options ask for: KL weighting, progress, run directory, JIT,
        TensorBoard."""
        cfg, main = self.config, self._dist is None or self._dist.is_main
        own = []
        if cfg["beta"] != 1 or cfg["kl_warmup"]:  # the site "z" is weighted: not the ELBO
            own.append(KLWeight(cfg["beta"], cfg["kl_warmup"]))
        if self.progress and main:
            own.append(ProgressBar())
        if self.out is not None and main:
            own.append(RunWriter())
        if self.compiled:
            own.append(JitCompile(cfg["loss"], cfg["particles"], cfg["batch_size"]))
        if self.tensorboard and main:
            own.append(TensorBoard())
        return own

    def _run_epoch(self, epoch, train, valid, start_step, partial, callbacks):
        cfg = self.config
        n, batch_size = len(train), cfg["batch_size"]
        steps = math.ceil(n / batch_size)
        self.steps_per_epoch, self.start_step = steps, start_step
        lr = self.optimizer.param_groups[0]["lr"]
        device = train.device
        order = torch.randperm(n, device=device,
                               generator=torch.Generator(device).manual_seed(_seed_for(cfg["seed"], epoch, 0)))
        binarize_rng = torch.Generator(device)
        total_loss, seconds = (0.0, 0.0) if partial is None else (partial["loss"], partial["seconds"])
        started = time.perf_counter()
        ddp = self._dist
        if ddp is not None and ddp.rank > 0:
            # ranks > 0 draw their own noise for z, reseeded from (seed, epoch, step) so that a run
            # resumed at an epoch boundary continues exactly; rank 0 continues the run's stream
            # (the one checkpoints save), as a single process does
            pyro.set_rng_seed(ddp.rank_seed(cfg["seed"], epoch, start_step))
        self._pending = 0.0  # distributed: this rank's loss since the ranks last agreed
        for callback in callbacks:
            callback.on_epoch_start(self, epoch)
        for step in range(start_step, steps):
            binarize_rng.manual_seed(_seed_for(cfg["seed"], epoch, step + 1))
            index = order[step * batch_size:(step + 1) * batch_size]
            # distributed: every rank draws the same global batch and trains on its slice
            x = train.batch(index, binarize_rng) if ddp is None else ddp.shard_batch(train, index, binarize_rng)
            for callback in callbacks:
                callback.on_step_start(self, epoch, step, steps)
            try:
                loss, stop = self._step(x, batch_size), self._stops.signum
                synced = ddp is not None and _distributed.is_sync_step(step, start_step, steps)
                if ddp is not None:  # the ranks act on the global loss and stop together
                    loss, stop = self._agree(loss, synced)
                if not math.isfinite(loss):
                    raise TrainingDiverged(f"loss became {loss}")
            except TrainingDiverged as e:
                raise TrainingDiverged(
                    f"{e} at epoch {epoch + 1}, step {step + 1}; the last good checkpoint is "
                    "kept (try a lower --lr or --clip-norm)") from None
            total_loss += loss
            self.running_elbo = -total_loss / min(n, (step + 1) * batch_size)
            for callback in callbacks:
                callback.on_step_end(self, epoch, step, loss)
            if stop is not None:
                self.save(epoch, step + 1, partial={
                    "loss": total_loss, "seconds": seconds + time.perf_counter() - started})
                if ddp is not None:
                    ddp.barrier()  # no rank exits before rank 0 has written the checkpoint
                raise TrainingInterrupted(stop,
                    f"stopped by {stop.name} at epoch {epoch + 1}, step {step + 1}; "
                    f"checkpoint written" + (f", resume with: pyvae train --resume {self.out}" if self.out else "")
                    + (" (under torchrun, with --distributed)" if self.out and ddp is not None else ""))
        record = {"epoch": epoch + 1, "lr": lr, "train_elbo": -total_loss / n,
                  "train_objective": self.objective_name,
                  "seconds": seconds + time.perf_counter() - started}
        started = time.perf_counter()  # (the ELBO, whatever the training objective)
        record["valid_elbo"] = None if valid is None else self._valid_elbo(valid)
        record["valid_seconds"] = time.perf_counter() - started
        return record

    def _step(self, x: torch.Tensor, batch_size: int) -> float:
        """One optimizer step on the batch x; returns the loss (a float)."""
        loss = self.objective.differentiable_loss(self.model, self.guide, x)
        loss.backward()
        clip_each(self.params, self.config["clip_norm"] if self.config["optimizer"] != "clipped_adam" else None)
        refuse_non_finite(self.param_names, self.params)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def _agree(self, loss: float, synced: bool):
        """Distributed: (loss to add, stop signal) agreed by all ranks.

        Every ``SYNC_EVERY`` steps and at the end of the epoch the ranks add up their losses since
        the last agreement (the global batches' loss; NaN if any rank's was) and whether a signal
        arrived on any of them, so that all stop at the same step; in between this rank's loss
        waits in ``_pending`` and nobody stops.
        """
        self._pending += loss
        if not synced:
            return 0.0, None
        sig = self._stops.signum
        total, n_int, n_term = self._dist.all_reduce_sum(
            [self._pending, sig == signal.SIGINT, sig == signal.SIGTERM])
        self._pending = 0.0
        if sig is None and (n_int or n_term):
            sig = signal.SIGINT if n_int else signal.SIGTERM
        return total, sig

    @property
    def objective_name(self) -> str:
        """What ``train_elbo`` measures: "beta-ELBO" (``beta``/``kl_warmup``: the KL term
        weighted, not a bound) or the bound (``pyvae.infer.objectives.bound_name``)."""
        if self.config["beta"] != 1 or self.config["kl_warmup"]:
            return "beta-ELBO"
        return bound_name(self.config)

    def _valid_elbo(self, valid: TensorData) -> float:
        if self._dist is None:
            return self.evaluate_elbo(valid)
        # each rank scores its contiguous share of the held-out set; the ranks' sums are added
        lo, hi = self._dist.shard(len(valid))
        total, = self._dist.all_reduce_sum([self._loss_sum(valid, lo, hi)])
        return -total / len(valid)

    @torch.no_grad()
    def evaluate_elbo(self, data: TensorData, batch_size: int = 1000) -> float:
        """Single-sample Monte-Carlo ELBO, nats per datapoint, of ``data`` under the VAE."""
        return -self._loss_sum(data, 0, len(data), batch_size) / len(data)

    @torch.no_grad()
    def _loss_sum(self, data: TensorData, lo: int, hi: int, batch_size: int = 1000) -> float:
        """-ELBO summed over rows [lo, hi) of ``data``, in batches of ``batch_size``."""
        elbo, total = Trace_ELBO(), 0.0
        rng = torch.Generator(data.device).manual_seed(self.config["seed"])
        for start in range(lo, hi, batch_size):
            index = torch.arange(start, min(hi, start + batch_size), device=data.device)
            total += elbo.loss(self.vae.model, self.vae.guide, data.batch(index, rng))
        return total

    # ------------------------------------------------------------ internals
    def _trainable(self):
        """(names, parameters) of the VAE's trainable tensors, sorted by their Pyro param-store
        names ("encoder$$$net.0.weight"), the keys of the optimizer state in checkpoints."""
        named = []
        for slot in _distributed.SLOTS:
            for name, p in getattr(self.vae, slot).named_parameters():
                if p.requires_grad:
                    named.append((f"{slot}$$${name}", p))
        named.sort(key=lambda t: t[0])
        return [n for n, _ in named], [p for _, p in named]

    def _make_optimizer(self, params) -> torch.optim.Optimizer:
        cfg = self.config
        args = {"lr": cfg["lr"]}
        if cfg["optimizer"] == "clipped_adam":  # Pyro's Adam clips each gradient itself
            args["clip_norm"] = cfg["clip_norm"] or 10.0
        return make_torch_optimizer(OPTIMIZERS[cfg["optimizer"]], params, args)

    def _prepare_out_dir(self):
        """Refuse a run directory that may not be written, before training (``RunWriter`` then
        locks it; a new run lives in a temp sibling until its first checkpoint)."""
        if self.out is not None and self._resume_payload is None:
            check_new(self.out, self.overwrite)

    def run_config(self) -> dict:
        return {"vae": self.vae.config, "trainer": self.config, "data": self.extra_config}

    def save(self, epoch: int, step: int, partial=None) -> None:
        """Write checkpoint.pt and metrics.jsonl (rank 0 only; nothing without ``out``)."""
        if self.out is None or (self._dist is not None and not self._dist.is_main):
            return
        check_finite_result(self.vae, self.history, epoch + (step > 0))  # never a NaN checkpoint
        self.run_dir.write(self.run_config(), self.history, {
            "vae_config": self.vae.config,
            "trainer_config": self.config,
            "extra_config": self.extra_config,
            "model_state": self.vae.state_dict(),
            "optim_state": named_state(self.optimizer, self.param_names),
            "history": self.history,
            "epoch": epoch,
            "step": step,
            "partial": partial,
            "rng": get_rng_state(),
        })

    def _signal_guard(self):
        self._stops = StopSignals(active=self.out is not None)
        return self._stops

