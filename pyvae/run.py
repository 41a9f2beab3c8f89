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
import math
import os
import time
from typing import List, Optional

import pyro
import torch

from .config import RunConfig
from .errors import ConfigError
from .infer import evaluate as _evaluate
from .training.checkpoint import (CHECKPOINT, CONFIG, EVAL, FIGURES, METRICS, TENSORBOARD,
                                  load_checkpoint, write_json)
from .training.checkpoint import is_run_dir, resolve_device

__all__ = ["Run", "evaluate_vae", "CHECKPOINT", "CONFIG", "METRICS", "EVAL", "TENSORBOARD",
           "FIGURES"]


class Run:
    """The run directory at ``path``: its config, metrics, checkpoint and trained VAE.

    Raises ConfigError when ``path`` is not a directory with a checkpoint.
    """

    def __init__(self, path: str):
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
        vae = VAE.from_config(payload["vae_config"])
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
                 write: bool = True) -> dict:
        """Importance-weighted log p(x) of the first ``max_datapoints`` of ``split`` (all by
        default), with the ELBO, the gap, ESS, active units and KL: the keys of eval.json,
        which is written unless ``write=False``. See ``evaluate_vae``."""
        device = resolve_device(device)
        vae = self.load_vae(device)
        data = self.data(split, data_dir, download)
        data.check_for(vae.likelihood, vae.x_dim)
        n = len(data) if max_datapoints is None else min(len(data), int(max_datapoints))
        data = data.to(device)
        # the held-out splits are binarized once when loaded; "train" with dynamic binarization
        # is drawn here, seeded, so that the numbers repeat
        x = data.batch(torch.arange(n, device=device), torch.Generator(device).manual_seed(seed))
        result = {"split": split, "epoch": self.checkpoint["epoch"],
                  **evaluate_vae(vae, x, num_samples, seed, chunk_size, batch_size, progress)}
        if write:
            write_json(self.file(EVAL), result)
        return result


def good_records(records) -> bool:
    """Whether ``records`` are epoch records: dicts with an int epoch and a numeric train_elbo."""
    number = (int, float)
    return isinstance(records, list) and all(
        isinstance(r, dict) and isinstance(r.get("epoch"), int)
        and isinstance(r.get("train_elbo"), number)
        and isinstance(r.get("valid_elbo"), (*number, type(None))) for r in records)


def evaluate_vae(vae, x: torch.Tensor, num_samples: int = 5000, seed: int = 0,
                 chunk_size: Optional[int] = None, batch_size: int = 100,
                 progress: bool = False) -> dict:
    """The evaluation of a VAE on data x, as ``pyvae evaluate`` reports it.

    log p^(x) = logsumexp_k log w_k - log K with K = ``num_samples`` draws from the guide (and
    its standard error); the ELBO as the mean of the same log w; gap = log p^(x) - ELBO;
    effective sample sizes; active units; KL(q(z|x) || p(z)) and, for a factorized guide, its
    per-dimension split. Nats per datapoint; bits/dim = -log p^(x) / (x_dim log 2).
    """
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    started = time.perf_counter()
    ll = _evaluate.log_likelihood(vae.model, vae.guide, x, num_samples=num_samples,
                                  chunk_size=chunk_size, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - started
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
        "bits_per_dim": -s["log_px"] / (vae.x_dim * math.log(2)),
        "elbo": s["elbo"], "elbo_stderr": s["elbo_stderr"], "gap": s["log_px"] - s["elbo"],
        "ess_mean": s["ess_mean"], "ess_min": s["ess_min"],
        "active_units": units["num_active"], "z_dim": vae.z_dim, "kl": float(kl),
        "kl_per_dimension": kl_dims, "seconds": seconds,
    }
