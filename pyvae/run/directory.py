"""Reading a run directory: ``Run(path)``'s config, metrics, checkpoint, trained VAE and data;
its ``evaluate``, ``bdmc`` and ``snr`` are those of ``pyvae.run.evaluation``,
``pyvae.run.bdmc`` and ``pyvae.run.snr``.

The file names are those of ``pyvae.training.checkpoint`` (``CHECKPOINT``, ``CONFIG``, ...).
"""
import json
import os
from typing import List, Optional

from ..training.config import RunConfig, TrainConfig
from ..data import load_split
from ..devices import resolve_device
from ..errors import ConfigError
from ..infer.evaluate import NUM_SAMPLES
from ..models.vae import VAE
from ..training.checkpoint import CHECKPOINT, CONFIG, EVAL_PROGRESS, EVALUATIONS, METRICS, \
    is_run_dir, load_checkpoint
from ..training.evalrun import write_result
from .evaluation import AIS_CHAINS, BATCH_SIZE
from .evaluations import keep_evaluation, list_evaluations, read_evaluation
from . import bdmc as _bdmc
from . import evaluation as _evaluation
from . import snr as _snr


class Run:
    """The run directory at ``path``: its config, metrics, checkpoint and trained VAE.

    Raises ConfigError when ``path`` is not a directory with a checkpoint.

    Args:
        path: the run directory (a ``str`` or ``os.PathLike``), as ``Trainer(out=...)`` or
            ``pyvae train --out`` wrote it.
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
        #: whether eval-progress.pt holds every result of the last resumable ``evaluate``
        self.progress_kept = False

    def __repr__(self):
        return f"Run({self.path!r})"

    def file(self, name: str) -> str:
        """The path of one of the run's files (``Run(p).file(METRICS)``).

        Args:
            name: a file name inside the run directory (``pyvae.training.checkpoint``'s
                ``CHECKPOINT``, ``CONFIG``, ``METRICS``, ...).
        """
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

    def load_vae(self, device="cpu") -> VAE:
        """The trained VAE, rebuilt from the config and loaded with the checkpoint's weights.

        Args:
            device: where the VAE's parameters go ("cpu", "cuda", "cuda:1", ...).

        Returns:
            the ``VAE`` in eval mode.
        """
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
        """The run's data split as ``TensorData`` (from its data config).

        Args:
            split: "train", "valid", "train+valid" or "test".
            data_dir: where the data set lies (None: the directory the run recorded).
            download: fetch a missing data set with torchvision.
        """
        # as the trainer recorded them: a run on bare tensors records no source, and says so
        return load_split(self.checkpoint.get("extra_config") or {}, split, data_dir, download)

    def evaluate(self, split: str = "test", num_samples: int = NUM_SAMPLES,
                 max_datapoints: Optional[int] = None, data_dir: Optional[str] = None,
                 seed: int = 0, device="cpu", chunk_size: Optional[int] = None,
                 batch_size: int = BATCH_SIZE, progress: Optional[bool] = None,
                 download: bool = True, write: bool = True, ais_steps: Optional[int] = None,
                 ais_chains: int = AIS_CHAINS, resumable: bool = False, log=print,
                 distributed=None) -> dict:
        """Importance-weighted log p(x) of the first ``max_datapoints`` of ``split`` (all by
        default), with the ELBO, the gap, ESS, Pareto k, active units and KL (and log p(x) by
        AIS with ``ais_steps``): the keys of eval.json. Unless ``write=False`` the result is
        kept under evaluations/ and written to eval.json (``write_evaluation``). ``progress``:
        tqdm bars, by default where a terminal is attached. The same parameters and defaults
        as ``pyvae.run.evaluation.evaluate_run``, which it calls.

        Args:
            split: the data split evaluated: "train", "valid", "train+valid" or "test".
            num_samples: K, importance samples per datapoint.
            max_datapoints: evaluate only the first this many datapoints (None: all).
            data_dir: where the data set lies (None: the directory the run recorded).
            seed: seeds each batch of datapoints from (seed, its first row), and the draws of
                active units and KL: the result does not depend on the random state.
            device: where the VAE and the data go ("cpu", "cuda", ...).
            chunk_size: samples per call of the guide and the model (None: about
                ``default_rows(device) // batch_size``).
            batch_size: datapoints per call of the guide and the model; the numbers depend
                on it (each batch's seed is its own).
            progress: show tqdm bars (None: where a terminal is attached).
            download: fetch a missing data set with torchvision.
            write: keep the result under evaluations/ and write it to eval.json.
            ais_steps: also estimate log p(x) by AIS with this many annealing steps (None or
                0: no AIS).
            ais_chains: AIS chains per datapoint.
            resumable: save the per-datapoint results after every batch to eval-progress.pt
                and continue from it when called again (SIGINT/SIGTERM stop cleanly).
            log: where progress messages go, a function of one string.
            distributed: this process's ``pyvae.distributed.Distributed`` under torchrun
                (None: one process); the processes share whole batches.

        Returns:
            the evaluation as eval.json holds it: log_px and its stderr, elbo, gap, ESS, Pareto
            k, active units, KL, bits/dim, times (and the AIS keys), nats per datapoint.
        """
        return _evaluation.evaluate_run(
            self, split, num_samples, max_datapoints, data_dir, seed, device, chunk_size,
            batch_size, progress, download, write, ais_steps, ais_chains, resumable, log,
            distributed)

    def write_evaluation(self, result: dict) -> str:
        """Keep ``result`` as the next file under evaluations/ (``pyvae.run.evaluations``) and
        write it to eval.json, the latest (then drop an evaluation's progress file); returns
        eval.json's path. A full disk is one ConfigError line that says where the
        per-datapoint results are kept.

        Args:
            result: an evaluation as ``evaluate`` returns it.

        Returns:
            the path of eval.json.
        """
        try:
            keep_evaluation(self.path, result)
        except OSError as e:
            kept = (f" and the per-datapoint ones kept in {EVAL_PROGRESS}" if self.progress_kept
                    and os.path.isfile(self.file(EVAL_PROGRESS)) else "")
            raise ConfigError(f"could not write {os.path.join(self.path, EVALUATIONS)} "
                              f"({e.strerror}); the results are printed above{kept}") from None
        return write_result(self.path, result, self.progress_kept)

    def evaluations(self) -> List[dict]:
        """The run's kept evaluations, oldest first: one dict each with its ``name`` (the file
        under evaluations/), when it was ``written``, its settings (split, num_samples,
        num_datapoints, seed, batch_size, chunk_size, ais_steps, ais_chains, epoch) and
        ``log_px``. A run from before evaluations were kept lists its eval.json, if any."""
        return list_evaluations(self.path)

    def evaluation(self, name: Optional[str] = None) -> dict:
        """A kept evaluation's result by ``name`` (from ``evaluations()``, or its number as in
        "0003"); by default the latest, eval.json.

        Args:
            name: a kept evaluation's file name or number (None: the latest).
        """
        return read_evaluation(self.path, name)

    def bdmc(self, steps=_bdmc.STEPS, num_chains: int = _bdmc.NUM_CHAINS,
             num_datapoints: int = _bdmc.NUM_DATAPOINTS, seed: int = 0, device="cpu",
             progress: Optional[bool] = None, write: bool = True,
             tolerance: float = _bdmc.BDMC_TOLERANCE) -> List[dict]:
        """BDMC on data simulated from the run's model, written to bdmc.json with the
        recommended number of steps unless ``write=False`` (``write_bdmc`` then writes it);
        see ``pyvae.run.bdmc.bdmc_run``.

        Args:
            steps: the numbers of AIS annealing steps to try, one BDMC run each.
            num_chains: AIS chains per datapoint, in each direction.
            num_datapoints: datapoints simulated from the run's model.
            seed: seeds the simulation (and, as seed + 1 and seed + 2, the forward and the
                reverse AIS).
            device: where the VAE goes.
            progress: show tqdm bars (None: where a terminal is attached).
            write: write bdmc.json.
            tolerance: the mean width, in nats per datapoint, at which a number of steps is
                recommended (``recommended_steps``).

        Returns:
            one dict per number of steps: lower, upper, mean_width and width_stderr (nats per
            datapoint), acceptance, the unreliable counts, num_steps, num_chains.
        """
        return _bdmc.bdmc_run(self, steps, num_chains, num_datapoints, seed, device, progress,
                              write, tolerance)

    def write_bdmc(self, rows: List[dict], seed: int,
                   tolerance: float = _bdmc.BDMC_TOLERANCE) -> str:
        """bdmc.json (atomically), with the recommended number of steps; returns its path.

        Args:
            rows: the rows ``bdmc`` returns.
            seed: the seed they were drawn with (recorded).
            tolerance: the mean width in nats per datapoint that recommends a number of steps.
        """
        return _bdmc.write_bdmc(self, rows, seed, tolerance)

    def snr(self, ks=(1, 5, 50), estimators=("reparam", "dreg"), loss: str = "iwae",
            groups: int = TrainConfig.groups, ciwae_beta: float = TrainConfig.ciwae_beta,
            repeats: int = 100, batch_size: int = 100,
            split: str = "test", data_dir: Optional[str] = None, seed: int = 0, device="cpu",
            download: bool = True, log=None) -> List[dict]:
        """Gradient SNR of the encoder and the decoder for each k and estimator of ``loss``,
        written to snr.json (``pyvae.reports.plots.plot_snr`` draws the rows); see
        ``pyvae.run.snr.snr_run``.

        Args:
            ks: the numbers of particles k to measure at.
            estimators: the guide-gradient estimators ("reparam", "stl", "dreg") of ``loss``.
            loss: the importance-weighted objective (``TrainConfig.loss``).
            groups: M for miwae and piwae.
            ciwae_beta: beta for ciwae.
            repeats: R, gradient draws per (k, estimator) (>= 2).
            batch_size: the first this many datapoints of ``split`` form the one batch
                measured.
            split: the data split.
            data_dir: where the data set lies (None: the directory the run recorded).
            seed: seeds the binarization of the batch and the gradient draws.
            device: where the VAE and the data go.
            download: fetch a missing data set with torchvision.
            log: called with one line per (k, estimator) (None: silent).

        Returns:
            one dict per (k, estimator): k, estimator, repeats, encoder_snr, decoder_snr.
        """
        return _snr.snr_run(self, ks, estimators, loss, groups, ciwae_beta, repeats, batch_size,
                            split, data_dir, seed, device, download, log)


def good_records(records) -> bool:
    """Whether ``records`` are epoch records: dicts with an int epoch and a numeric train_elbo."""
    number = (int, float)
    return isinstance(records, list) and all(
        isinstance(r, dict) and isinstance(r.get("epoch"), int)
        and isinstance(r.get("train_elbo"), number)
        and isinstance(r.get("valid_elbo"), (*number, type(None))) for r in records)
