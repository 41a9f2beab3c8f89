"""Trainer: stochastic variational inference (Pyro's SVI) over data resident on the device.

Each step draws a minibatch by indexing, binarizes it if asked, and calls ``svi.step``, which
estimates -ELBO with the chosen objective, backpropagates, and updates the parameters with a
``pyro.optim`` optimizer. Per epoch it records the train and validation ELBO (nats per datapoint),
writes a checkpoint atomically and calls the callbacks.
"""
import json
import math
import os
import signal
import threading
import time
import warnings
from typing import Callable, Iterable, List, Optional

import torch
from tqdm.auto import tqdm

import pyro
import pyro.optim
import pyro.optim.clipped_adam
from pyro.infer import SVI, Trace_ELBO

from ..infer.beta import SiteScale, check_beta, kl_weight, scale_site
from .checkpoint import get_rng_state, load_checkpoint, set_rng_state
from . import distributed as _distributed
from ..data import TensorData, as_data, recorded_data_config
from ..errors import ConfigError, TrainingDiverged, TrainingInterrupted
from ..limits import check_at_most, check_seed
from ..infer.objectives import make_objective
from .optim import JointOptim
from .rundir import RunDir, check_new
from ..models.vae import VAE

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

# Pyro's compiled (torch.jit-traced) versions of the ELBO objectives, for ``jit=True``
JIT_OBJECTIVES = {"trace_elbo": pyro.infer.JitTrace_ELBO,
                  "tracemeanfield_elbo": pyro.infer.JitTraceMeanField_ELBO}

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
METRICS = "metrics.jsonl"


def resolve_device(device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"bad device {device!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device} requested but CUDA is not available")
    return device


def is_run_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CHECKPOINT))


def _seed_for(seed: int, epoch: int, step: int) -> int:
    """A distinct, reproducible seed per (run seed, epoch, step) for data order and binarization."""
    return (seed * 1_000_003 + epoch) * 1_000_003 + step & 0x7FFF_FFFF_FFFF_FFFF


class Trainer:
    """Fits a ``VAE`` by SVI.

    Args:
        vae: the model/guide pair to train.
        lr: learning rate (the schedule multiplies it per epoch).
        batch_size: datapoints per step.
        epochs: total epochs of the run (a resumed run continues up to this number).
        loss: objective name, see ``pyvae.objectives.OBJECTIVES``.
        particles: samples of z per datapoint in the objective.
        optimizer: "adam" or "clipped_adam" (``pyro.optim``).
        schedule: learning-rate schedule name, see ``SCHEDULES``.
        clip_norm: clip each gradient to this norm (None: no clipping).
        seed: seeds training noise, data order and binarization.
        device: "cpu", "cuda", "cuda:1", ...
        out: run directory for config.json, metrics.jsonl and checkpoint.pt (None: write nothing).
        overwrite: allow ``out`` to be an existing run directory, replacing it.
        callbacks: functions ``f(trainer, record)`` called after every epoch.
        progress: show a tqdm progress bar per epoch.
        validate: keep Pyro's argument validation on (slower; off by default in the hot loop).
        num_threads: ``torch.set_num_threads`` for the run (None: leave torch's setting).
        jit: train with Pyro's JIT-compiled objective (``JitTrace_ELBO``): the model and guide are
            traced once per batch shape, which removes most of Pyro's per-step Python overhead.
        extra_config: JSON-able dict stored with the run (the CLI stores its data options here).
        beta: weight of the latent site "z" in the training loss, -E[log p(x|z)] + beta * KL
            (1: the ELBO; see ``pyvae.beta``). Validation always reports the true ELBO.
        kl_warmup: epochs over which the weight rises linearly from 0 to ``beta`` (0: none).
        distributed: data-parallel training over the processes of a ``torch.distributed`` group
            (``torchrun``; see ``pyvae.distributed``): ``batch_size`` is the global batch, each
            rank trains on its slice of it with DDP-synchronised gradients, rank 0 alone writes
            ``out`` and shows progress. ``device="cuda"`` means ``cuda:LOCAL_RANK``. The group
            is initialised from torchrun's environment if it is not yet.
    """

    def __init__(self, vae: VAE, lr: float = 1e-3, batch_size: int = 100, epochs: int = 10,
                 loss: str = "trace_elbo", particles: int = 1, optimizer: str = "adam",
                 schedule: str = "constant", clip_norm: Optional[float] = None, seed: int = 0,
                 device="cpu", out: Optional[str] = None, overwrite: bool = False,
                 callbacks: Iterable[Callable] = (), progress: bool = True,
                 validate: bool = False, num_threads: Optional[int] = None, jit: bool = False,
                 extra_config: Optional[dict] = None, beta: float = 1.0, kl_warmup: float = 0,
                 distributed: bool = False):
        if not isinstance(vae, VAE):
            raise ConfigError(f"Trainer needs a pyvae.VAE, got {type(vae).__name__}")
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ConfigError(f"learning rate must be a positive number, got {lr}")
        if int(batch_size) <= 0:
            raise ConfigError(f"batch size must be positive, got {batch_size}")
        if int(epochs) < 0:
            raise ConfigError(f"epochs must be >= 0, got {epochs}")
        check_at_most("epochs", epochs)
        check_at_most("batch_size", batch_size)
        check_at_most("particles", particles)
        check_seed(seed)
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
        if schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
        if clip_norm is not None and not clip_norm > 0:
            raise ConfigError(f"clip norm must be positive, got {clip_norm}")
        if num_threads is not None and int(num_threads) < 1:
            raise ConfigError(f"num_threads must be >= 1, got {num_threads}")
        make_objective(loss, particles)  # validates the name and particle count
        if jit and loss not in JIT_OBJECTIVES:
            raise ConfigError(f"--jit works with the losses {', '.join(JIT_OBJECTIVES)}, not {loss!r}")
        if jit and (beta != 1 or kl_warmup):
            # the traced graph would freeze the KL weight at its first value
            raise ConfigError("--jit cannot be combined with --beta or --kl-warmup")
        check_beta(beta, kl_warmup)
        if distributed and jit:
            # a DDP forward (and its gradient hooks) cannot be traced by torch.jit
            raise ConfigError("--jit cannot be combined with --distributed")
        self.vae = vae
        # not part of the stored config: a run may resume with another number of processes
        self.distributed = bool(distributed)
        self._dist = None
        self.device = resolve_device(_distributed.local_device(device) if distributed else device)
        self.out = out
        self.overwrite = overwrite
        self.callbacks = list(callbacks)
        self.progress = progress
        self.validate = validate
        self.extra_config = dict(extra_config or {})
        self.config = dict(lr=float(lr), batch_size=int(batch_size), epochs=int(epochs),
                           loss=loss, particles=int(particles), optimizer=optimizer,
                           schedule=schedule, clip_norm=clip_norm, seed=int(seed),
                           num_threads=None if num_threads is None else int(num_threads),
                           beta=float(beta), kl_warmup=float(kl_warmup), jit=bool(jit))
        self.history: List[dict] = []
        self._resume_payload = None
        self._run = None
        self._stop_signal = None

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
        try:
            return self._fit(train, valid)
        finally:
            if self._run is not None:
                self._run.close()
                self._run = None

    def _fit(self, train, valid):
        cfg = self.config
        if cfg["num_threads"] is not None:
            torch.set_num_threads(cfg["num_threads"])

        self.vae.to(self.device)
        # Pyro's param store is global and keyed by name ("encoder$$$net.0.weight"): clear it so
        # the names point at this VAE's tensors and not at those of an earlier model.
        pyro.clear_param_store()
        self.optim = self._make_optimizer()
        self.elbo = make_objective(cfg["loss"], cfg["particles"])
        # beta != 1 or KL warm-up: the site "z" of model and guide is weighted (not the ELBO)
        self._kl_scale = None if (cfg["beta"] == 1 and not cfg["kl_warmup"]) else SiteScale("z")
        model, guide = self.vae.model, self.vae.guide
        parallel = None
        if self._dist is not None:  # the nets run through DDP wrappers while model and guide run
            parallel = self._dist.wrap(self.vae)
            model, guide = parallel.route(model), parallel.route(guide)
        if self._kl_scale is not None:
            model, guide = scale_site(model, self._kl_scale), scale_site(guide, self._kl_scale)
        self.svi = SVI(model, guide, self.optim, self.elbo)
        self._jit_svi, self._jit_warm = None, False
        if cfg["jit"]:
            particles = cfg["particles"]
            jit_elbo = JIT_OBJECTIVES[cfg["loss"]](num_particles=particles, vectorize_particles=particles > 1,
                                                   ignore_jit_warnings=True)
            self._jit_svi = SVI(model, guide, self.optim, jit_elbo)

        start_epoch, start_step, partial = 0, 0, None
        if self._resume_payload is not None:
            p = self._resume_payload
            self.optim.set_state(p["optim_state"])
            set_rng_state(p["rng"])
            start_epoch, start_step, partial = p["epoch"], p["step"], p.get("partial")
            self._resume_payload = None
        else:
            pyro.set_rng_seed(cfg["seed"])
            self.history = []

        try:
            with self._signal_guard(), pyro.validation_enabled(self.validate):
                for epoch in range(start_epoch, cfg["epochs"]):
                    record = self._run_epoch(epoch, train, valid, start_step, partial)
                    start_step, partial = 0, None
                    self.history.append(record)
                    self._save(epoch + 1, 0)
                    for callback in self.callbacks:
                        callback(self, record)
            if self._dist is not None:
                self._dist.barrier()  # every rank returns once rank 0 has written the run directory
        finally:
            if parallel is not None:
                parallel.release()
        return self.history

    def _run_epoch(self, epoch, train, valid, start_step, partial):
        cfg = self.config
        n, batch_size = len(train), cfg["batch_size"]
        steps = math.ceil(n / batch_size)
        lr = cfg["lr"] * SCHEDULES[cfg["schedule"]](epoch, cfg["epochs"])
        self.optim.set_lr(lr)
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
        bar = tqdm(total=steps, initial=start_step, desc=f"epoch {epoch + 1}/{cfg['epochs']}",
                   disable=not self.progress or (ddp is not None and not ddp.is_main),
                   leave=False, dynamic_ncols=True)
        with bar:
            for step in range(start_step, steps):
                binarize_rng.manual_seed(_seed_for(cfg["seed"], epoch, step + 1))
                index = order[step * batch_size:(step + 1) * batch_size]
                # distributed: every rank draws the same global batch and trains on its slice
                x = train.batch(index, binarize_rng) if ddp is None else ddp.shard_batch(train, index, binarize_rng)
                if self._kl_scale is not None:
                    self._kl_scale.scale = kl_weight(cfg["beta"], cfg["kl_warmup"], epoch, step, steps)
                try:
                    loss, stop = self._step(x, batch_size), self._stop_signal
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
                bar.update(1)
                if (step % 20 == 0) if ddp is None else synced:
                    bar.set_postfix(elbo=f"{-total_loss / min(n, (step + 1) * batch_size):.2f}")
                if stop is not None:
                    self._save(epoch, step + 1, partial={
                        "loss": total_loss,
                        "seconds": seconds + time.perf_counter() - started})
                    if ddp is not None:
                        ddp.barrier()  # no rank exits before rank 0 has written the checkpoint
                    raise TrainingInterrupted(stop,
                        f"stopped by {stop.name} at epoch {epoch + 1}, step {step + 1}; "
                        f"checkpoint written" + (f", resume with: pyvae train --resume {self.out}" if self.out else "")
                        + (" (under torchrun, with --distributed)" if self.out and ddp is not None else ""))
        record = {"epoch": epoch + 1, "lr": lr, "train_elbo": -total_loss / n,
                  "train_objective": self.objective_name,
                  "seconds": seconds + time.perf_counter() - started}
        if self._kl_scale is not None:  # train_elbo is then minus the beta-weighted loss
            record["beta"] = self._kl_scale.scale
        started = time.perf_counter()
        record["valid_elbo"] = None if valid is None else self._valid_elbo(valid)
        record["valid_seconds"] = time.perf_counter() - started
        return record

    def _step(self, x: torch.Tensor, batch_size: int) -> float:
        if self._jit_svi is None or x.shape[0] != batch_size:
            # Pyro's compiled function is keyed on the number of arguments, not their shapes:
            # a smaller last batch must not reuse the graph traced for full batches
            return self.svi.step(x)
        if not self._jit_warm:
            # Tracing runs the model and guide (and draws random numbers) a few extra times. Do it
            # once on the side, with the random state restored and the gradients dropped, so a
            # compiled run consumes random numbers exactly like one resumed from a checkpoint.
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []), \
                    warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
                self._jit_svi.loss_and_grads(self._jit_svi.model, self._jit_svi.guide, x)
            for p in self.vae.parameters():
                p.grad = None
            self._jit_warm = True
        return self._jit_svi.step(x)

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
        sig = self._stop_signal
        total, n_int, n_term = self._dist.all_reduce_sum(
            [self._pending, sig == signal.SIGINT, sig == signal.SIGTERM])
        self._pending = 0.0
        if sig is None and (n_int or n_term):
            sig = signal.SIGINT if n_int else signal.SIGTERM
        return total, sig

    @property
    def objective_name(self) -> str:
        """What ``train_elbo`` measures: "ELBO", "IWAE_k" (``loss="iwae"``, a tighter bound with k
        particles) or "beta-ELBO" (``beta``/``kl_warmup``: the KL term weighted, not a bound)."""
        if self.config["beta"] != 1 or self.config["kl_warmup"]:
            return "beta-ELBO"
        if self.config["loss"] == "iwae":
            return f"IWAE_{self.config['particles']}"
        return "ELBO"

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
    def _make_optimizer(self) -> JointOptim:
        cfg = self.config
        args = {"lr": cfg["lr"]}
        if cfg["optimizer"] == "clipped_adam":
            args["clip_norm"] = cfg["clip_norm"] or 10.0
            return JointOptim(OPTIMIZERS["clipped_adam"], args)
        return JointOptim(OPTIMIZERS[cfg["optimizer"]], args, clip_norm=cfg["clip_norm"])

    def _prepare_out_dir(self):
        """Lock the run directory (a new run: a locked temp sibling until its first checkpoint)."""
        if self.out is None:
            return
        resuming = self._resume_payload is not None
        if not resuming:
            check_new(self.out, self.overwrite)
        if self._dist is not None and not self._dist.is_main:
            return  # rank 0 alone writes the run directory
        self._run = RunDir(self.out, overwrite=self.overwrite, resume=resuming)
        if resuming:  # metrics.jsonl as the checkpoint has them (a kill may have cut between)
            self._run.write_metrics(self._resume_payload["history"])

    def run_config(self) -> dict:
        return {"vae": self.vae.config, "trainer": self.config, "data": self.extra_config}

    def _save(self, epoch: int, step: int, partial=None) -> None:
        if self.out is None or (self._dist is not None and not self._dist.is_main):
            return
        bad = [name for name, p in self.vae.named_parameters() if not torch.isfinite(p).all()]
        last = self.history[-1] if self.history else {}
        if bad or any(v is not None and not math.isfinite(v) for v in
                      (last.get("train_elbo"), last.get("valid_elbo"))):
            where = f"parameter {bad[0]}" if bad else "the ELBO"
            raise TrainingDiverged(f"{where} became NaN or Inf at epoch {epoch + (step > 0)}; no "
                                   "checkpoint written, the last good one is kept (try a lower "
                                   "--lr or --clip-norm)")
        self._run.write(self.run_config(), self.history, {
            "vae_config": self.vae.config,
            "trainer_config": self.config,
            "extra_config": self.extra_config,
            "model_state": self.vae.state_dict(),
            "optim_state": self.optim.get_state(),
            "history": self.history,
            "epoch": epoch,
            "step": step,
            "partial": partial,
            "rng": get_rng_state(),
        })

    def _signal_guard(self):
        return _SignalGuard(self)


def _json_line(record: dict) -> str:
    return json.dumps(record, sort_keys=True) + "\n"


class _SignalGuard:
    """While training with a run directory, SIGINT/SIGTERM ask the loop to checkpoint and stop."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.previous = {}

    def __enter__(self):
        self.trainer._stop_signal = None
        if self.trainer.out is None or threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.trainer._stop_signal = signal.Signals(signum)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False
