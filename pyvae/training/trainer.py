"""Trainer: fits a Pyro model and guide by stochastic variational inference, written as Pyro's
examples do it.

Per step: a minibatch is drawn (by indexing data resident on the device, or from a DataLoader;
``pyvae.training.feed``) and binarized if asked, then

    loss = objective.differentiable_loss(model, guide, x)     # -ELBO (or -IWAE_k), nats
    loss.backward(); optimizer.step(); optimizer.zero_grad()

with one torch optimizer over all parameters (fused where torch has it), non-finite gradients
refused before they reach the parameters, and the learning rate set per epoch by a torch
``LambdaLR`` schedule. Everything optional -- beta/KL warm-up, progress bars, per-epoch log
lines, the run directory's checkpoint and metrics, TensorBoard, user hooks -- is a callback
(``pyvae.training.callbacks``).

The pair is pyvae's ``VAE`` (the fast path: its parameters are its modules', its data checked
against its likelihood, its step compiled where that is exact) or any Pyro model and guide whose
parameters are registered with ``pyro.module``/``pyro.param``: those are found in Pyro's
param store after one validated run of the guide and the model on the first batch, and their
(unconstrained) values are what checkpoints keep.
"""
import dataclasses
import inspect
import math
import os
import signal
import time
from typing import Callable, Iterable, List, Optional

import torch

import pyro
from pyro.infer import Trace_ELBO
from pyro.params import param_with_module_name

from .config import TrainConfig
from .checkpoint import (CHECKPOINT, check_finite_result, is_run_dir,
                         get_rng_state, load_checkpoint, set_rng_state)
from . import distributed as _distributed
from ..data import check_values, recorded_data_config
from ..devices import resolve_device
from ..errors import ConfigError, TrainingDiverged, TrainingInterrupted
from ..infer.objectives import bound_name, make_objective
from .callbacks import (JitCompile, KLWeight, LogEpochs, ProgressBar, RunWriter, TensorBoard,
                        as_callback)
from .feed import Feed
from .rundir import check_new
from .signals import StopSignals
from .optim import (clip_each, load_named_state, make_torch_optimizer, named_state,
                    refuse_non_finite)
from .schedules import OPTIMIZERS, SCHEDULES
from ..models.vae import VAE

#: the ``model_kind`` of a checkpoint: pyvae's VAE (its ``state_dict``) or a Pyro model and guide
#: of the user's (the param store's unconstrained values, by name)
VAE_MODEL, PYRO_MODEL = "vae", "pyro"
_TRAIN_OPTIONS = tuple(f.name for f in dataclasses.fields(TrainConfig))


def train_config(config: Optional[TrainConfig], options: dict) -> TrainConfig:
    """The ``TrainConfig`` of a Trainer: ``config`` as given, or one built from keyword options."""
    if config is not None:
        if options:
            raise ConfigError(f"give the training options as config= or as keywords, not both "
                              f"(got config= and {', '.join(sorted(options))})")
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"config must be a pyvae.config.TrainConfig, got {type(config).__name__}")
        return config
    unknown = sorted(set(options) - set(_TRAIN_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown Trainer option {', '.join(unknown)}; the training options "
                          f"are those of pyvae.config.TrainConfig: {', '.join(_TRAIN_OPTIONS)}")
    return TrainConfig(**options)


class Trainer:
    """Fits a model/guide pair by stochastic gradient steps on its objective
    (``objective.differentiable_loss(model, guide, x)``, one torch optimizer).

    ``Trainer(vae, ...)`` for pyvae's ``VAE``; ``Trainer(model, guide, ...)`` for any Pyro model
    and guide of the data (``model(x)``, ``guide(x)``) whose parameters are registered with
    ``pyro.module``/``pyro.param``. The training options are the fields of
    ``pyvae.config.TrainConfig`` (lr, batch_size, epochs, loss, particles, estimator, groups,
    ciwae_beta, optimizer, schedule, clip_norm, seed, num_threads, beta, kl_warmup, jit), given
    as keywords or as one ``config=``; epochs is the run's total, which a resumed run continues
    up to.

    Args:
        model: a ``pyvae.VAE``, or a Pyro model function.
        guide: the Pyro guide of ``model`` (not with a VAE, which is its own guide).
        config: a built ``pyvae.config.TrainConfig``, instead of the keyword ``options``.
        device: "cpu", "cuda", "cuda:1", ...
        out: run directory for config.json, metrics.jsonl and checkpoint.pt (None: write nothing).
        overwrite: allow ``out`` to be an existing run directory, replacing it.
        callbacks: ``pyvae.training.callbacks.Callback`` objects (or functions
            ``f(trainer, record)``, called after every epoch), after the trainer's own.
        tensorboard: write TensorBoard event files under ``out/tensorboard`` (train_elbo,
            valid_elbo, lr per epoch).
        progress: a tqdm progress bar per epoch: None (the default) shows it where a terminal
            is attached, True always, False never. Each epoch is also logged (logger "pyvae",
            level INFO).
        validate: keep Pyro's argument validation on while training (slower; by default the
            data are checked once and the loop runs unvalidated).
        extra_config: JSON-able dict stored with the run (the CLI stores its data options here).
        distributed: data-parallel training over the processes of a ``torch.distributed`` group
            (``torchrun``; see ``pyvae.distributed``): ``batch_size`` is the global batch, each
            rank trains on its slice of it with summed gradients, rank 0 alone writes ``out``
            and shows progress. ``device="cuda"`` means ``cuda:LOCAL_RANK``. The group is
            initialised from torchrun's environment if it is not yet.
        **options: the fields of ``TrainConfig`` as keywords (``lr=1e-3``, ``epochs=10``,
            ``loss="iwae"``, ``particles=5``, ...; their meanings are ``TrainConfig``'s Args),
            checked once; an unknown name raises ``ConfigError``. Not together with
            ``config``.
    """

    def __init__(self, model, guide: Optional[Callable] = None, *,
                 config: Optional[TrainConfig] = None, device="cpu", out: Optional[str] = None,
                 overwrite: bool = False, callbacks: Iterable[Callable] = (),
                 progress: Optional[bool] = None, validate: bool = False,
                 extra_config: Optional[dict] = None, distributed: bool = False,
                 tensorboard: bool = False, **options):
        if isinstance(model, VAE):
            if guide is not None:
                raise ConfigError("a pyvae.VAE is its own model and guide: give Trainer(vae), "
                                  "without a guide")
            self.vae, self.model_fn, self.guide_fn = model, model.model, model.guide
        elif callable(model) and callable(guide):
            self.vae, self.model_fn, self.guide_fn = None, model, guide
        else:
            raise ConfigError(f"Trainer takes a pyvae.VAE, or a Pyro model and its guide: "
                              f"Trainer(model, guide); got {type(model).__name__} and "
                              f"{type(guide).__name__}")
        self.train_config = config = train_config(config, options)
        if self.vae is None and (config.beta != 1 or config.kl_warmup):
            raise ConfigError("beta and kl_warmup weight the latent site 'z' of pyvae.VAE; weight "
                              "the sites of another model with pyro.poutine.scale")
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
        self.history: List[dict] = []
        self._resume_payload = None
        self.resumed, self.run_dir = False, None  # RunWriter: lock and write the run directory
        self._stops = StopSignals(active=False)  # SIGINT/SIGTERM while fitting a run directory
        refusal = JitCompile.refusal(self)
        if config.jit == "on" and refusal:
            raise ConfigError(refusal)
        #: whether full batches train with the compiled objective (``TrainConfig.jit``)
        self.compiled = config.jit != "off" and refusal is None

    @property
    def config(self) -> dict:
        """The training options as JSON (config.json's "trainer" entry; ``train_config`` is the
        ``TrainConfig`` itself)."""
        return self.train_config.to_dict()

    @property
    def model_kind(self) -> str:
        return VAE_MODEL if self.vae is not None else PYRO_MODEL

    # ----------------------------------------------------------------- resume
    @classmethod
    def resume(cls, out: str, model=None, guide: Optional[Callable] = None,
               epochs: Optional[int] = None, device=None, num_threads: Optional[int] = None,
               vae: Optional[VAE] = None, **kwargs) -> "Trainer":
        """A Trainer that continues the run in ``out`` from its checkpoint.

        A VAE run's VAE is rebuilt from the stored config unless given as ``model`` (needed when
        the run used custom component objects); a run of a Pyro model and guide needs them
        again (``Trainer.resume(out, model, guide)``), their parameters are set from the
        checkpoint when ``fit`` has registered them. ``epochs`` may raise the run's total;
        ``device`` and ``num_threads`` may change (the run's thread count is kept by default,
        since sums in float depend on it, and exact continuation needs the same); other settings
        are the run's.

        Args:
            out: the run directory, written by ``Trainer(out=...)`` or ``pyvae train``.
            model: the run's ``VAE`` (None: rebuilt from config.json), or for a run of a Pyro
                model the model function.
            guide: the Pyro guide, for a run of a Pyro model (not for a VAE run).
            epochs: the new total of epochs (None: the run's).
            device: where to train on (None: "cpu"); the checkpoint is loaded onto it.
            num_threads: torch's CPU threads (None: the run's).
            vae: the run's ``VAE`` by keyword, as ``model``.
            **kwargs: the other keywords of ``Trainer`` (``callbacks``, ``progress``,
                ``distributed``, ...); not the training options, which are the run's.

        Returns:
            a ``Trainer`` whose ``fit`` continues from the checkpoint's epoch and step.
        """
        if vae is not None:  # (the VAE by its name, as a keyword)
            if model is not None:
                raise ConfigError("give the VAE once: Trainer.resume(out, vae) or vae=")
            model = vae
        if not os.path.isdir(out):
            raise ConfigError(f"cannot resume: {out} is not a directory")
        if not is_run_dir(out):
            raise ConfigError(f"cannot resume: {out} is not a pyvae run (no {CHECKPOINT})")
        device = resolve_device(device or "cpu")
        payload = load_checkpoint(os.path.join(out, CHECKPOINT), map_location=device)
        if payload.get("model_kind", VAE_MODEL) == PYRO_MODEL:
            if model is None or guide is None or isinstance(model, VAE):
                raise ConfigError(f"{out}: the run trained a Pyro model and guide of your own: "
                                  "pass them, Trainer.resume(out, model, guide)")
        else:
            if guide is not None or (model is not None and not isinstance(model, VAE)):
                raise ConfigError(f"{out}: the run trained a pyvae.VAE: resume it with "
                                  "Trainer.resume(out) or Trainer.resume(out, vae)")
            if model is None:
                if payload["vae_config"] is None:
                    raise ConfigError(f"{out}: the run used custom components; pass the VAE to "
                                      "resume it")
                try:
                    model = VAE.from_config(payload["vae_config"])
                except (TypeError, KeyError, AttributeError) as e:
                    raise ConfigError(f"{out}: the checkpoint's model config is damaged: {e}") from None
            elif payload["vae_config"] is not None and model.config != payload["vae_config"]:
                raise ConfigError(f"{out}: the given VAE's config differs from the run's")
            try:
                model.load_state_dict(payload["model_state"])
            except RuntimeError as e:
                raise ConfigError(f"{out}: checkpoint does not fit the model: {str(e).splitlines()[0]}") from None
        stored = dict(payload["trainer_config"])
        if epochs is not None:
            stored["epochs"] = int(epochs)
        if num_threads is not None:  # float results depend on it: the run's own is the default
            stored["num_threads"] = int(num_threads)
        try:
            config = TrainConfig.from_dict(stored)
        except (TypeError, ConfigError) as e:  # a key that is no training option, a bad value
            raise ConfigError(f"{out}: the checkpoint's trainer config is damaged: {e}") from None
        trainer = cls(model, guide, config=config, device=device, out=out,
                      extra_config=payload.get("extra_config"), **kwargs)
        trainer._resume_payload = payload
        trainer.history = list(payload["history"])
        return trainer

    # ------------------------------------------------------------------- fit
    def fit(self, train, valid=None) -> List[dict]:
        """Train for the configured epochs; return the history (one dict per epoch).

        Args:
            train: the training data: a ``pyvae.TensorData``, a float tensor (N, ...), a
                map-style ``torch.utils.data.Dataset``, a ``DataLoader`` or a re-iterable of
                batches (``pyvae.training.feed``).
            valid: held-out data of the same kinds, whose single-sample ELBO is recorded after
                every epoch (None: none).

        Returns:
            the history, one dict per epoch: ``epoch``, ``lr``, ``train_elbo`` (minus the
            training loss summed over the epoch's steps per datapoint: the objective that
            ``train_objective`` names, nats per datapoint), ``seconds``, ``valid_elbo`` (the
            ELBO of ``valid``; None without it) and ``valid_seconds``.
        """
        cfg = self.train_config
        train = Feed(train, cfg.batch_size, cfg.seed, self.device, "train")
        valid = None if valid is None else Feed(valid, cfg.batch_size, cfg.seed, self.device, "valid")
        if train.stream:
            loader_batch = getattr(train.data, "batch_size", None)
            if loader_batch is not None and loader_batch != cfg.batch_size:
                raise ConfigError(f"train: the DataLoader's batch_size is {loader_batch} but the "
                                  f"Trainer's is {cfg.batch_size}: give the Trainer "
                                  f"batch_size={loader_batch}")
            if self.distributed:
                raise ConfigError("distributed training draws each global batch in pyvae's order: "
                                  "pass a TensorData, a tensor or a map-style Dataset, not a stream")
            if cfg.kl_warmup and train.steps() is None:
                raise ConfigError("kl_warmup needs the steps per epoch: pass data with a length "
                                  "(a Dataset, a DataLoader over one)")
        if valid is not None and valid.stream and self.distributed:
            raise ConfigError("distributed validation shares the rows of the held-out set: pass a "
                              "TensorData, a tensor or a map-style Dataset, not a stream")
        self._check_each_batch = False
        if self.vae is not None:  # the data checked once, against the VAE's likelihood
            for feed in (train, valid):
                if feed is None:
                    continue
                if feed.rows is not None:
                    feed.rows.check_for(self.vae.likelihood, self.vae.x_dim)
                else:  # a stream or another data set: each batch, as it comes (cheap)
                    self._check_each_batch = True
        if not train.stream and cfg.batch_size > train.n:
            raise ConfigError(f"batch size {cfg.batch_size} is larger than the training set ({train.n})")
        if self.distributed:
            self._dist = _distributed.setup(self.device)
            self._dist.check_batches(train.n, cfg.batch_size)
        self.extra_config = recorded_data_config(
            self.extra_config, train.tensor_data, None if valid is None else valid.tensor_data,
            self._resume_payload is not None, self.out)
        self._prepare_out_dir()
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        pyro.clear_param_store()  # Pyro's param store is global: its names are this pair's
        if self._resume_payload is None:
            pyro.set_rng_seed(cfg.seed)
            self.history = []
        if self.vae is not None:
            self.vae.to(self.device)
            self.param_names, self.params = self._vae_parameters()
        else:
            self.param_names, self.params = self._registered_parameters(train)
        self.optimizer = self._make_optimizer(self.params)
        self.objective = make_objective(cfg.loss, cfg.particles, cfg.estimator, cfg.groups,
                                        cfg.ciwae_beta)
        callbacks, self.should_stop = self._own_callbacks() + self.callbacks, False

        start_epoch, start_step, partial = 0, 0, None
        if self._resume_payload is not None:
            p = self._resume_payload
            load_named_state(self.optimizer, self.param_names, p["optim_state"])
            set_rng_state(p["rng"])
            start_epoch, start_step, partial = p["epoch"], p["step"], p.get("partial")
            self._resume_payload, self.resumed = None, True
        # lr of epoch e = lr * f(e, epochs), continued from the epoch a resumed run stopped in
        for group in self.optimizer.param_groups:
            group["initial_lr"] = cfg.lr
        schedule = SCHEDULES[cfg.schedule]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda e: schedule(e, cfg.epochs), last_epoch=start_epoch - 1)

        model, guide = self.model_fn, self.guide_fn
        parallel = None
        if self._dist is not None:
            if self.vae is not None:  # the nets run through DDP wrappers while model and guide run
                parallel = self._dist.wrap(self.vae)
                model, guide = parallel.route(model), parallel.route(guide)
            else:  # parameters in Pyro's param store: rank 0's, then gradients summed per step
                self._dist.broadcast_(self.params)
        for callback in callbacks:
            model, guide = callback.wrap(self, model, guide)
        self.model, self.guide = model, guide
        try:
            with self._signal_guard(), pyro.validation_enabled(self.validate):
                for callback in callbacks:
                    callback.on_fit_start(self)
                for epoch in range(start_epoch, cfg.epochs):
                    record = self._run_epoch(epoch, train, valid, start_step, partial, callbacks)
                    start_step, partial = 0, None
                    self.history.append(record)
                    self.scheduler.step()
                    for callback in callbacks:
                        callback.on_epoch_end(self, record)
                    if self.should_stop:  # a callback asked to end the run after this epoch
                        break
                if cfg.epochs == 0 and not self.history:
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
        """The callbacks the options ask for: KL weighting, progress, log lines, run directory,
        JIT, TensorBoard."""
        cfg, main = self.train_config, self._dist is None or self._dist.is_main
        own = []
        if cfg.beta != 1 or cfg.kl_warmup:  # the site "z" is weighted: not the ELBO
            own.append(KLWeight(cfg.beta, cfg.kl_warmup))
        if self.progress is not False and main:
            own.append(ProgressBar(disable=None if self.progress is None else not self.progress))
        if main:
            own.append(LogEpochs())
        if self.out is not None and main:
            own.append(RunWriter())
        if self.compiled:
            own.append(JitCompile(cfg.loss, cfg.particles, cfg.batch_size))
        if self.tensorboard and main:
            own.append(TensorBoard())
        return own

    def _check_batch(self, x: torch.Tensor, name: str) -> None:
        """A streamed batch against the VAE: its width and its values (after binarization)."""
        if x.dim() != 2 or x.shape[1] != self.vae.x_dim:
            raise ConfigError(f"{name}: a batch of shape {tuple(x.shape)} for a model whose x_dim "
                              f"is {self.vae.x_dim}")
        if not torch.isfinite(x).all():
            raise ConfigError(f"{name}: data contain NaN or Inf values")
        check_values(x, self.vae.likelihood, "none", name)

    def _run_epoch(self, epoch, train, valid, start_step, partial, callbacks):
        cfg = self.train_config
        batch_size = cfg.batch_size
        steps = train.steps()
        self.steps_per_epoch, self.start_step = steps, start_step
        lr = self.optimizer.param_groups[0]["lr"]
        total_loss, seconds, rows = ((0.0, 0.0, 0) if partial is None else
                                     (partial["loss"], partial["seconds"], partial.get("rows", 0)))
        started = time.perf_counter()
        ddp = self._dist
        if ddp is not None and ddp.rank > 0:
            # ranks > 0 draw their own noise for z, reseeded from (seed, epoch, step) so that a run
            # resumed at an epoch boundary continues exactly; rank 0 continues the run's stream
            # (the one checkpoints save), as a single process does
            pyro.set_rng_seed(ddp.rank_seed(cfg.seed, epoch, start_step))
        self._pending = 0.0  # distributed: this rank's loss since the ranks last agreed
        for callback in callbacks:
            callback.on_epoch_start(self, epoch)
        for step, x in train.epoch(epoch, start_step, None if ddp is None else ddp.shard):
            if self._check_each_batch:
                self._check_batch(x, "train")
            for callback in callbacks:
                callback.on_step_start(self, epoch, step, steps)
            try:
                loss, stop = self._step(x), self._stops.signum
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
            # rows trained on so far this epoch (of the global batches, distributed)
            rows = min(train.n, (step + 1) * batch_size) if not train.stream else rows + x.shape[0]
            self.running_elbo = -total_loss / rows
            for callback in callbacks:
                callback.on_step_end(self, epoch, step, loss)
            if stop is not None:
                self.save(epoch, step + 1, partial={
                    "loss": total_loss, "rows": rows,
                    "seconds": seconds + time.perf_counter() - started})
                if ddp is not None:
                    ddp.barrier()  # no rank exits before rank 0 has written the checkpoint
                raise TrainingInterrupted(stop,
                    f"stopped by {stop.name} at epoch {epoch + 1}, step {step + 1}; "
                    f"checkpoint written" + (f", resume with: pyvae train --resume {self.out}" if self.out else "")
                    + (" (under torchrun, with --distributed)" if self.out and ddp is not None else ""))
        n = train.n if not train.stream else rows
        record = {"epoch": epoch + 1, "lr": lr, "train_elbo": -total_loss / n,
                  "train_objective": self.objective_name,
                  "seconds": seconds + time.perf_counter() - started}
        started = time.perf_counter()  # (the ELBO, whatever the training objective)
        record["valid_elbo"] = None if valid is None else self._valid_elbo(valid)
        record["valid_seconds"] = time.perf_counter() - started
        return record

    def _step(self, x: torch.Tensor) -> float:
        """One optimizer step on the batch x; returns the loss (a float)."""
        loss = self.objective.differentiable_loss(self.model, self.guide, x)
        loss.backward()
        if self._dist is not None and self.vae is None:
            self._dist.sum_gradients_(self.params)
        cfg = self.train_config
        clip_each(self.params, cfg.clip_norm if cfg.optimizer != "clipped_adam" else None)
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
        if self.train_config.beta != 1 or self.train_config.kl_warmup:
            return "beta-ELBO"
        return bound_name(self.config)

    def _valid_elbo(self, valid: Feed) -> float:
        if self._dist is None:
            return self.evaluate_elbo(valid)
        # each rank scores its contiguous share of the held-out set; the ranks' sums are added
        lo, hi = self._dist.shard(valid.n)
        total, = self._dist.all_reduce_sum([self._loss_sum(valid, lo, hi)[0]])
        return -total / valid.n

    @torch.no_grad()
    def evaluate_elbo(self, data, batch_size: int = 1000) -> float:
        """Single-sample Monte-Carlo ELBO, nats per datapoint, of ``data`` under the model and
        guide.

        Args:
            data: the data, of any kind ``fit`` takes.
            batch_size: datapoints per call of the model and the guide.

        Returns:
            the mean ELBO over the datapoints, a float in nats per datapoint.
        """
        if not isinstance(data, Feed):
            data = Feed(data, batch_size, self.train_config.seed, self.device, "data")
        total, rows = self._loss_sum(data, 0, data.n, batch_size)
        return -total / rows

    @torch.no_grad()
    def _loss_sum(self, data: Feed, lo: int, hi: Optional[int], batch_size: int = 1000):
        """(-ELBO summed over rows [lo, hi) of ``data`` in batches of ``batch_size``, rows)."""
        elbo, total, rows = Trace_ELBO(), 0.0, 0
        for x in data.in_order(batch_size, lo, hi):
            if self._check_each_batch:
                self._check_batch(x, data.name)
            total += elbo.loss(self.model_fn, self.guide_fn, x)
            rows += x.shape[0]
        return total, rows

    # ------------------------------------------------------------ internals
    def _vae_parameters(self):
        """(names, parameters) of the VAE's trainable tensors, sorted by the names its
        ``pyro.module`` statements give them in Pyro's param store ("encoder$$$net.0.weight",
        ``pyro.params.param_with_module_name``): the keys of the optimizer state in checkpoints."""
        named = []
        for slot in _distributed.SLOTS:
            for name, p in getattr(self.vae, slot).named_parameters():
                if p.requires_grad:
                    named.append((param_with_module_name(slot, name), p))
        named.sort(key=lambda t: t[0])
        return [n for n, _ in named], [p for _, p in named]

    def _registered_parameters(self, train: Feed):
        """(names, parameters) of a Pyro model and guide: the guide and the model are run once
        on the first training batch under Pyro's validation (which checks the data against the
        model's distributions), their ``pyro.param``/``pyro.module`` statements fill the param
        store, and its unconstrained tensors, sorted by name, are what the optimizer steps. A
        resumed run's values are set from its checkpoint."""
        x = next(iter(train.in_order(train.batch_size, 0, min(train.n or train.batch_size,
                                                               train.batch_size))), None)
        if x is None:
            raise ConfigError("train: the data yielded no batches")
        try:
            with pyro.validation_enabled(True):
                Trace_ELBO().loss(self.model_fn, self.guide_fn, x)
        except (ValueError, RuntimeError, TypeError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"train: the model and guide fail on the first batch under Pyro's "
                              f"validation: {str(e).splitlines()[0].rstrip(':')}") from None
        store = pyro.get_param_store()
        named = sorted(store.named_parameters())
        if not named:
            raise ConfigError("the model and guide register no parameters (pyro.param or "
                              "pyro.module): there is nothing to train")
        if self._resume_payload is not None:
            saved = self._resume_payload["model_state"]
            names = [n for n, _ in named]
            if sorted(saved) != names:
                raise ConfigError(f"{self.out}: checkpoint does not fit the model: its parameters "
                                  f"are {', '.join(sorted(saved))}, the model's {', '.join(names)}")
            with torch.no_grad():
                for name, p in named:
                    if saved[name].shape != p.shape:
                        raise ConfigError(f"{self.out}: checkpoint does not fit the model: {name} "
                                          f"has shape {tuple(saved[name].shape)}, the model's "
                                          f"{tuple(p.shape)}")
                    p.copy_(saved[name])
        return [n for n, _ in named], [p for _, p in named]

    def _make_optimizer(self, params) -> torch.optim.Optimizer:
        cfg = self.train_config
        args = {"lr": cfg.lr}
        if cfg.optimizer == "clipped_adam":  # Pyro's Adam clips each gradient itself
            args["clip_norm"] = cfg.clip_norm or 10.0
        return make_torch_optimizer(OPTIMIZERS[cfg.optimizer], params, args)

    def _prepare_out_dir(self):
        """Refuse a run directory that may not be written, before training (``RunWriter`` then
        locks it; a new run lives in a temp sibling until its first checkpoint)."""
        if self.out is not None and self._resume_payload is None:
            check_new(self.out, self.overwrite)

    def run_config(self) -> dict:
        """config.json's content: {"vae": the VAE's config (None for a Pyro model or component
        objects), "trainer": ``config``, "data": ``extra_config``}."""
        return {"vae": None if self.vae is None else self.vae.config, "trainer": self.config,
                "data": self.extra_config}

    def model_state(self) -> dict:
        """The trained values: the VAE's ``state_dict``, or the param store's unconstrained
        tensors by name."""
        if self.vae is not None:
            return self.vae.state_dict()
        return {name: p.detach() for name, p in zip(self.param_names, self.params)}

    def save(self, epoch: int, step: int, partial=None) -> None:
        """Write checkpoint.pt and metrics.jsonl (rank 0 only; nothing without ``out``).

        Args:
            epoch: the epochs completed (the epoch in progress, with ``partial``).
            step: the steps completed within ``epoch`` (0 at an epoch's end).
            partial: for a stop within an epoch, its running sums: {"loss": summed loss,
                "rows": datapoints trained on, "seconds": time spent}; None at an epoch's end.
        """
        if self.out is None or (self._dist is not None and not self._dist.is_main):
            return
        # never a NaN checkpoint
        check_finite_result(self.vae if self.vae is not None else pyro.get_param_store(),
                            self.history, epoch + (step > 0))
        self.run_dir.write(self.run_config(), self.history, {
            "vae_config": None if self.vae is None else self.vae.config,
            "model_kind": self.model_kind,
            "trainer_config": self.config,
            "extra_config": self.extra_config,
            "model_state": self.model_state(),
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


def _signature_with_options(init) -> inspect.Signature:
    """``init``'s signature with ``**options`` spelled out as the fields of ``TrainConfig``
    (keyword-only, with the dataclass's defaults): what ``help(pyvae.Trainer)`` and editors
    show, generated from the one place the options are declared."""
    signature = inspect.signature(init)
    own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    options = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                 default=getattr(TrainConfig, f.name), annotation=f.type)
               for f in dataclasses.fields(TrainConfig)]
    return signature.replace(parameters=own + options)


Trainer.__init__.__signature__ = _signature_with_options(Trainer.__init__)
