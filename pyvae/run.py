"""A run directory, opened one way: ``pyvae.Run(path)``.

``pyvae train`` (``pyvae.Trainer``) writes a run directory; ``Run`` reads it::

    run = pyvae.Run("runs/mnist")
    run.config.model.z_dim          # the dataclasses of pyvae.config (run.config.to_dict())
    run.metrics()[-1]["valid_elbo"] # one dict per epoch
    vae = run.load_vae()            # the trained VAE, in eval mode
    run.evaluate(num_samples=5000)  # log p(x), ELBO, gap, active units, ... as in eval.json

The file names are those of ``pyvae.training.checkpoint`` (``CHECKPOINT``, ``CONFIG``, ...).
"""
import json
import os
import time
from typing import List, Optional

import pyro
import torch

from .config import RunConfig
from .models.likelihoods import bits_per_dim
from .errors import ConfigError
from .limits import check_count, check_seed
from .infer import evaluate as _evaluate
from .training.checkpoint import (BDMC, CHECKPOINT, CONFIG, EVAL, FIGURES, METRICS, SNR, TENSORBOARD,
                                  load_checkpoint, write_json)
from .training.checkpoint import is_run_dir, resolve_device

__all__ = ["Run", "evaluate_vae", "CHECKPOINT", "CONFIG", "METRICS", "EVAL", "SNR", "BDMC", "TENSORBOARD",
           "FIGURES"]


class Run:
    """The run directory at ``path``: its config, metrics, checkpoint and trained VAE.

    Raises ConfigError when ``path`` is not a directory with a checkpoint.
    """

    def __init__(self, path: str):
        if not isinstance(path, (str, os.PathLike)):
            raise ConfigError(f"Run needs the path of a run directory, got {path!r}")
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise ConfigError(f"{path} is not a pyvae run directory (not a directory)")
        if not is_run_dir(path):
            raise ConfigError(f"{path} is not a pyvae run directory (no {CHECKPOINT})")
        self.path = path
        self._payload = None

    def __repr__(self):
        return f"Run({self.path!r})"

    def file(self, name: str) -> str:
        """The path of one of the run's files (``Run(p).file(METRICS)``)."""
        return os.path.join(self.path, name)

    @property
    def checkpoint(self) -> dict:
        """The checkpoint's payload (weights, optimizer and random states, history), on the CPU."""
        if self._payload is None:
            self._payload = load_checkpoint(self.file(CHECKPOINT), map_location="cpu")
        return self._payload

    @property
    def config(self) -> RunConfig:
        """The run's configuration (from config.json; from the checkpoint if that is missing)."""
        path = self.file(CONFIG)
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    stored = json.load(f)
            except (OSError, ValueError) as e:
                raise ConfigError(f"cannot read {path}: {e}") from None
        else:
            p = self.checkpoint
            stored = {"vae": p.get("vae_config"), "trainer": p.get("trainer_config"),
                      "data": p.get("extra_config")}
        return RunConfig.from_dict(stored)

    def metrics(self) -> List[dict]:
        """One dict per finished epoch (metrics.jsonl): epoch, lr, train_elbo, valid_elbo, ..."""
        path = self.file(METRICS)
        if not os.path.isfile(path):
            return []
        with open(path) as f:
            lines = [line for line in f if line.strip()]
        try:
            records = [json.loads(line) for line in lines]
        except ValueError as e:
            raise ConfigError(f"{path} is damaged (not one JSON record per line): {e}") from None
        if not good_records(records):
            raise ConfigError(f"{path} is damaged: every line must be a record with an epoch "
                              "and a train_elbo")
        return records

    def load_vae(self, device="cpu"):
        """The trained VAE, rebuilt from the config and loaded with the checkpoint's weights."""
        from .models.vae import VAE

        payload = self.checkpoint
        if payload.get("vae_config") is None:
            raise ConfigError(f"{self.path}: the run used custom components; rebuild the VAE "
                              "in Python and load run.checkpoint['model_state'] into it")
        try:
            vae = VAE.from_config(payload["vae_config"])
        except (TypeError, KeyError) as e:
            raise ConfigError(f"{self.path}: the checkpoint's model config is damaged: {e}") from None
        try:
            vae.load_state_dict(payload["model_state"])
        except (RuntimeError, KeyError, TypeError) as e:
            raise ConfigError(f"{self.path}: checkpoint does not fit the model: "
                              f"{str(e).splitlines()[0]}") from None
        return vae.to(resolve_device(device)).eval()

    def data(self, split: str = "test", data_dir: Optional[str] = None, download: bool = True):
        """The run's data split as ``TensorData`` (from its data config)."""
        from .data import load_split

        # as the trainer recorded them: a run on bare tensors records no source, and says so
        return load_split(self.checkpoint.get("extra_config") or {}, split, data_dir, download)

    def evaluate(self, split: str = "test", num_samples: int = 5000,
                 max_datapoints: Optional[int] = None, data_dir: Optional[str] = None,
                 seed: int = 0, device="cpu", chunk_size: Optional[int] = None,
                 batch_size: int = 100, progress: bool = False, download: bool = True,
                 write: bool = True, ais_steps: Optional[int] = None,
                 ais_chains: int = 16, resumable: bool = False, log=print,
                 distributed=None) -> dict:
        """Importance-weighted log p(x) of the first ``max_datapoints`` of ``split`` (all by
        default), with the ELBO, the gap, ESS, Pareto k, active units and KL (and log p(x) by
        AIS with ``ais_steps``): the keys of eval.json, which is written unless
        ``write=False``. See ``evaluate_vae``.

        With ``resumable``, the per-datapoint results are saved after every batch to
        ``eval-progress.pt`` in the run directory, SIGINT/SIGTERM stop after the current batch
        (``TrainingInterrupted``), and the same call continues where it stopped, to the numbers
        of an uninterrupted evaluation (``pyvae.training.evalrun``; ``log`` says so).

        ``distributed``: this process's ``pyvae.distributed.Distributed`` (under torchrun):
        each process evaluates its share of whole batches, the per-datapoint results are
        gathered, and every process returns the numbers of one process (``resumable`` is
        refused; rank 0 writes eval.json). Each batch is seeded from (seed, its first row), so
        the result depends on the seed, ``batch_size`` and ``chunk_size``, not on the process
        count or on what ran before."""
        check_seed(seed)
        check_count("num_samples", num_samples)
        check_count("batch_size", batch_size)
        for name, value in (("max_datapoints", max_datapoints), ("chunk_size", chunk_size)):
            if value is not None:
                check_count(name, value)
        if ais_steps is not None:
            check_count("ais_steps", ais_steps, minimum=0)  # 0: no AIS
        check_count("ais_chains", ais_chains)
        if distributed is not None and resumable:
            raise ConfigError("a distributed evaluation keeps no progress file: it cannot be "
                              "resumable")
        device = resolve_device(device)
        vae = self.load_vae(device)
        data = self.data(split, data_dir, download)
        data.check_for(vae.likelihood, vae.x_dim)
        n = len(data) if max_datapoints is None else min(len(data), int(max_datapoints))
        data = data.to(device)
        # the held-out splits are binarized once when loaded; "train" with dynamic binarization
        # is drawn here, seeded, so that the numbers repeat
        x = data.batch(torch.arange(n, device=device), torch.Generator(device).manual_seed(seed))
        estimate = None
        self._progress_kept = False
        if resumable:
            from .training.evalrun import log_likelihood_resumable

            # with the weights' and the data's sha256, what decides the per-datapoint numbers
            settings = {"seeds": "per batch", "split": split, "num_samples": int(num_samples),
                        "seed": int(seed), "datapoints": n, "batch_size": int(batch_size),
                        "chunk_size": chunk_size, "device": device.type}

            def resumed():
                ll, self._progress_kept = log_likelihood_resumable(
                    self.path, vae, x, settings, num_samples, seed, batch_size, chunk_size,
                    progress, log)
                return ll
            estimate = resumed
        result = {"split": split, "epoch": self.checkpoint["epoch"],
                  **evaluate_vae(vae, x, num_samples, seed, chunk_size, batch_size, progress,
                                 ais_steps, ais_chains, estimate, distributed)}
        if write and (distributed is None or distributed.is_main):
            self.write_evaluation(result)
        return result

    def write_evaluation(self, result: dict) -> str:
        """Write ``result`` to eval.json (and drop an evaluation's progress file); a full disk
        is one ConfigError line that says where the per-datapoint results are kept."""
        from .training.evalrun import write_result

        return write_result(self.path, result, getattr(self, "_progress_kept", False))

    def bdmc(self, steps=(1000,), num_chains: int = 16, num_datapoints: int = 10, seed: int = 0,
             device="cpu", progress: bool = False, write: bool = True) -> List[dict]:
        """BDMC (``pyvae.bdmc``) on ``num_datapoints`` datapoints simulated from the run's model,
        once per number of AIS steps in ``steps``: one row per run (lower, upper, mean width and
        its standard error, acceptance), written to bdmc.json unless ``write=False``
        (``write_bdmc`` then writes it)."""
        from .infer.ais import bdmc

        steps = list(steps) if isinstance(steps, (list, tuple)) else [steps]
        if not steps:
            raise ConfigError("bdmc needs at least one number of AIS steps")
        for num_steps in steps:
            check_count("num_steps", num_steps)
        check_count("num_chains", num_chains)
        check_count("num_datapoints", num_datapoints)
        check_seed(seed)
        device = resolve_device(device)
        vae = self.load_vae(device)
        pyro.clear_param_store()
        template = torch.zeros(num_datapoints, vae.x_dim, device=device)  # x is only a template
        rows = []
        for num_steps in steps:
            r = bdmc(vae.model, vae.guide, template, num_steps=num_steps, num_chains=num_chains,
                     seed=seed, progress=progress)
            rows.append(dict(r.summary(), width_stderr=float(r.width.std() / len(r.width) ** 0.5)))
        if write:
            self.write_bdmc(rows, seed)
        return rows

    def write_bdmc(self, rows: List[dict], seed: int) -> str:
        """bdmc.json (atomically)."""
        write_json(self.file(BDMC), {"runs": rows, "seed": seed})
        return self.file(BDMC)

    def snr(self, ks=(1, 5, 50), estimators=("reparam", "dreg"), loss: str = "iwae",
            groups: int = 1, ciwae_beta: float = 0.5, repeats: int = 100, batch_size: int = 100,
            split: str = "test", data_dir: Optional[str] = None, seed: int = 0, device="cpu",
            download: bool = True, plot: Optional[str] = None, log=None) -> List[dict]:
        """Gradient SNR of the encoder and the decoder (``pyvae.infer.diagnostics``) for each k
        and estimator of ``loss``, on the first ``batch_size`` datapoints of ``split``: one row
        per (k, estimator), written to snr.json, drawn in ``plot`` (default figures/snr.png)."""
        from .infer.diagnostics import gradient_snr
        from .infer.objectives import make_objective
        from .reports.plots import plot_snr

        ks = list(ks) if isinstance(ks, (list, tuple)) else [ks]
        for k in ks:
            check_count("k", k)
        check_count("repeats", repeats, minimum=2)
        check_count("batch_size", batch_size)
        check_seed(seed)
        objectives = {(k, e): make_objective(loss, k, e, groups, ciwae_beta)
                      for k in ks for e in estimators}  # every name checked before the work
        device = resolve_device(device)
        vae = self.load_vae(device)
        data = self.data(split, data_dir, download)
        data.check_for(vae.likelihood, vae.x_dim)
        n = min(len(data), int(batch_size))
        x = data.to(device).batch(torch.arange(n, device=device),
                                  torch.Generator(device).manual_seed(seed))
        pyro.clear_param_store()
        rows = []
        for (k, estimator), objective in objectives.items():
            result = gradient_snr(vae, x, objective, repeats=repeats, seed=seed)
            rows.append(dict(k=k, estimator=estimator, **result.summary()))
            if log is not None:
                log(f"k={k} {estimator}: encoder SNR {rows[-1]['encoder_snr']:.4g}, "
                    f"decoder SNR {rows[-1]['decoder_snr']:.4g}")
        plot_snr(rows, plot or os.path.join(self.path, FIGURES, "snr.png"),
                 title=f"{loss}, {n} {split} datapoints, {repeats} draws")
        write_json(self.file(SNR), {"loss": loss, "split": split, "batch_size": n, "rows": rows})
        return rows


def good_records(records) -> bool:
    """Whether ``records`` are epoch records: dicts with an int epoch and a numeric train_elbo."""
    number = (int, float)
    return isinstance(records, list) and all(
        isinstance(r, dict) and isinstance(r.get("epoch"), int)
        and isinstance(r.get("train_elbo"), number)
        and isinstance(r.get("valid_elbo"), (*number, type(None))) for r in records)


def evaluate_vae(vae, x: torch.Tensor, num_samples: int = 5000, seed: int = 0,
                 chunk_size: Optional[int] = None, batch_size: int = 100,
                 progress: bool = False, ais_steps: Optional[int] = None,
                 ais_chains: int = 16, estimate=None, distributed=None) -> dict:
    """The evaluation of a VAE on data x, as ``pyvae evaluate`` reports it.

    log p^(x) = logsumexp_k log w_k - log K with K = ``num_samples`` draws from the guide, each
    batch of ``batch_size`` datapoints seeded from (``seed``, its first row) (and its standard
    error); the ELBO as the mean of the same log w; gap = log p^(x) - ELBO;
    effective sample sizes; active units; KL(q(z|x) || p(z)) and, for a factorized guide, its
    per-dimension split; Pareto k of each datapoint's weights (``khat_max``, ``khat_over_0.7``).
    With ``ais_steps``, also log p^(x) by AIS from the guide (``ais_chains`` chains, seeded with
    ``seed``): ``ais_log_px``, its stderr, ``ais_minus_iw`` (mean per-datapoint difference),
    the acceptance rate and the time. Nats per datapoint; bits/dim = -log p^(x) / (x_dim log 2).
    Active units and KL are drawn after ``pyro.set_rng_seed(seed)``: nothing depends on the
    random state the call found. ``estimate``: a function returning the ``LogLikelihood`` in
    place of the plain seeded ``evaluate.log_likelihood`` (how ``Run.evaluate`` resumes).
    ``distributed``: a ``Distributed`` whose processes share the batches of log p(x) and of AIS
    (``pyvae.training.evalrun.evaluate_sharded``); the same numbers on every rank.
    """
    from .training import evalrun

    pyro.clear_param_store()
    started = time.perf_counter()
    if estimate is not None:
        ll = estimate()
    elif distributed is not None:
        ll = evalrun.evaluate_sharded(distributed, vae, x, num_samples, seed, batch_size,
                                      chunk_size, progress)
    else:
        ll = _evaluate.log_likelihood(vae.model, vae.guide, x, num_samples=num_samples,
                                      chunk_size=chunk_size, batch_size=batch_size,
                                      progress=progress, seed=seed)
    seconds = time.perf_counter() - started
    extra = {}
    if ais_steps:
        started = time.perf_counter()
        if distributed is not None:
            est = evalrun.ais_sharded(distributed, vae, x, ais_steps, ais_chains, seed,
                                      batch_size, progress)
        else:
            est = _evaluate.ais(vae.model, vae.guide, x, num_steps=ais_steps,
                                num_chains=ais_chains, seed=seed, batch_size=batch_size,
                                progress=progress)
        extra = {"ais_log_px": est.mean, "ais_log_px_stderr": est.mean_stderr,
                 "ais_steps": ais_steps, "ais_chains": ais_chains,
                 "ais_acceptance": float(est.acceptance.mean()),
                 "ais_seconds": time.perf_counter() - started,
                 "ais_minus_iw": float((est.value - ll.value).mean())}
    pyro.set_rng_seed(seed)  # the draws below (flows' means, KL) follow the seed alone
    units = _evaluate.active_units(vae.guide, x)
    kl = _evaluate.kl_to_prior(vae.guide, x, model=vae.model, num_samples=10)
    try:  # per-dimension KL is defined only for a guide that factorizes over dimensions
        kl_dims = _evaluate.kl_per_dimension(vae.guide, x, model=vae.model).tolist()
    except ConfigError:
        kl_dims = None
    s = ll.summary()
    return {
        "num_datapoints": int(x.shape[0]), "num_samples": num_samples, "seed": seed,
        "log_px": s["log_px"], "log_px_stderr": s["log_px_stderr"], "nll": -s["log_px"],
        "bits_per_dim": bits_per_dim(-s["log_px"], vae.x_dim),
        "elbo": s["elbo"], "elbo_stderr": s["elbo_stderr"], "gap": s["log_px"] - s["elbo"],
        "ess_mean": s["ess_mean"], "ess_min": s["ess_min"],
        "khat_max": s["khat_max"], "khat_over_0.7": s["khat_over_0.7"],
        "active_units": units["num_active"], "z_dim": vae.z_dim, "kl": float(kl),
        "kl_per_dimension": kl_dims, "seconds": seconds, **extra,
    }
