"""Compare variational families side by side.

For each family q(z|x) named in ``guides``, ``compare`` trains one VAE with the same seed, data,
decoder architecture and training settings (with the same seed the decoder starts from the same
weights: ``VAE`` builds the decoder before the encoder), or, given ``shared_decoder``, loads a
trained run's decoder, freezes it, and fits only the guide. Then, on held-out data, it measures

    ELBO          E_q[log p(x,z) - log q(z|x)]                     (one "friend")
    IWAE_k        E[log 1/k sum_i w_i], w_i = p(x,z_i)/q(z_i|x)     (taller friends as k grows)
    log p^(x)     the importance-weighted estimate with K samples   (the tallest friend)
    gap           log p^(x) - ELBO  ~  KL(q(z|x) || p(z|x))

plus, for every family when ``refine_steps > 0``, the split of the gap into the
approximation gap (the family's limit) and the amortization gap (the encoder's shortfall), the
number of active latent units, parameter counts and training time. All numbers are nats per
datapoint, from ``pyvae.evaluate``.

Output (when ``out`` is given): ``compare.md`` (a markdown table), ``compare.csv``,
``compare.json``, ``gap.png`` (the gap plot), ``curves.png``, and one run directory per family
(``out/<family>/``, readable by ``pyvae plot``).
"""
import csv
import io
import json
import os
import signal
import time
from typing import Dict, List, Optional, Sequence

import torch

import pyro

from ..models.config import ModelConfig
from ..data import as_data
from ..devices import resolve_device
from ..errors import ConfigError, TrainingInterrupted
from ..infer import evaluate
from ..infer.refine import refine
from ..limits import check_count, check_seed
from ..models.guides import GUIDES, guide_options as options_of
from ..models.vae import VAE
from ..run import Run, evaluate_vae
from ..run.evaluations import find_evaluation
from ..training.checkpoint import atomic_write_text, is_run_dir, tensor_digest
from ..training.config import TrainConfig
from ..training.trainer import Trainer
from . import plots
from .compare_dir import ComparisonDir, check_out

DEFAULT_IWAE_K = (5, 50)
REFINE_SIZE = 100  # test points refined by default when the gap is split
DEFAULT_GUIDES = ("diagonal", "full-rank", "iaf", "planar", "sylvester")

COLUMNS = [  # (key in a row, markdown/CSV header)
    ("guide", "family"),
    ("guide_params", "guide params"),
    ("train_seconds", "train s"),
    ("valid_elbo", "valid ELBO"),
    ("elbo", "test ELBO"),
    ("iwae", "IWAE_k"),
    ("log_px", "log p̂(x)"),
    ("gap", "log p̂(x) − ELBO"),
    ("approximation_gap", "approx. gap"),  # (in the table only when the gap was split)
    ("amortization_gap", "amort. gap"),
    ("active_units", "active units"),
]


def _is_guide_key(name: str) -> bool:
    return name.startswith("encoder.") or name.startswith("encoder_body.")


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def compare(guides: Sequence[str] = DEFAULT_GUIDES, train=None, test=None, valid=None, *,
            epochs: int = TrainConfig.epochs, num_samples: int = 1000,
            iwae_k: Optional[Sequence[int]] = None, test_size: Optional[int] = None,
            out: Optional[str] = None, seed: int = TrainConfig.seed,
            shared_decoder: Optional[str] = None, z_dim: int = ModelConfig.z_dim,
            hidden: Sequence[int] = ModelConfig.hidden, activation: str = ModelConfig.activation,
            likelihood: str = ModelConfig.likelihood, prior: str = ModelConfig.prior,
            guide_options: Optional[Dict[str, dict]] = None,
            common_guide_options: Optional[dict] = None,
            lr: float = TrainConfig.lr, batch_size: int = TrainConfig.batch_size,
            model: Optional[ModelConfig] = None, training: Optional[TrainConfig] = None,
            refine_steps: int = 0, refine_size: Optional[int] = None, ais_steps: int = 0,
            num_threads: Optional[int] = None, device="cpu", progress: Optional[bool] = None,
            overwrite: bool = False, title: Optional[str] = None, data_config: Optional[dict] = None,
            command: Optional[str] = None, log=print, **vae_options) -> dict:
    """Train and evaluate one VAE per variational family; return (and write) the comparison.

    Args:
        guides: family names from ``pyvae.guides.GUIDES``.
        train: ``TensorData`` (or a tensor) to train each family on.
        valid: ``TensorData`` (or a tensor) for the validation ELBO, or None.
        test: ``TensorData`` (or a tensor): the bounds are measured on its first ``test_size``
            rows.
        epochs: training epochs per family (0 with ``shared_decoder`` evaluates untrained guides).
        num_samples: K, importance samples per datapoint for log p^(x).
        test_size: measure on the first this many rows of ``test`` (None: all).
        seed: the seed of every family's training (the same decoder start), of the
            evaluation's draws and of the refinement.
        iwae_k: the k of the IWAE_k bounds drawn between the ELBO and log p^(x) (each k < K;
            default: those of ``DEFAULT_IWAE_K`` below K, with a note through ``log`` when some
            are left out).
        shared_decoder: a run directory (``pyvae train``): its decoder is loaded and frozen, and
            only the guides are fitted. Its architecture (z_dim, hidden, ...) overrides the
            arguments here.
        z_dim: the size of z, shared by every family (as ``VAE``'s).
        hidden: the encoder's hidden widths; the decoder mirrors them.
        activation: the nonlinearity of the nets.
        likelihood: p(x|z), a key of ``pyvae.likelihoods.LIKELIHOODS``.
        prior: p(z), a key of ``pyvae.priors.PRIORS``.
        guide_options: per-family constructor options, e.g. ``{"iaf": {"flow_length": 4}}``.
        common_guide_options: options given to every family that takes them, e.g.
            ``{"flow_length": 4}`` for all flows (``pyvae.guides.guide_options`` lists them).
        refine_steps: refine per-datapoint members of each family (``pyvae.refine``) for this
            many SVI steps and split the gap into approximation and amortization gaps (0: no
            split).
        refine_size: how many of the first test points are refined (default 100; only with
            ``refine_steps``).
        ais_steps: with refinement, take log p(x) of the split from AIS with this many steps
            (16 chains; from the prior for a family that cannot score z) instead of the IW
            estimate (0: IW).
        lr: the learning rate of every family's training.
        batch_size: datapoints per training step.
        num_threads: ``torch.set_num_threads`` for the whole comparison.
        device: where the VAEs train and are evaluated ("cpu", "cuda", ...).
        progress: show tqdm bars while training and evaluating (None: where a terminal is
            attached).
        overwrite: replace a finished comparison in ``out`` (without it a finished one is an
            error and an unfinished one continues).
        title: the heading of compare.md and the gap plot's title (None: the number of
            families, the epochs and K).
        out: directory for compare.md/.csv/.json, figures and per-family runs (None: write nothing).
        data_config: the data options stored with each family's run (as ``pyvae train`` stores
            them), so that ``pyvae plot OUT/<family>`` can reload the data.
        command: the command line that made the comparison, recorded in compare.md.
        log: called with one line of progress per step (``None`` for silence).
        model: the generative model and shared nets as a ``ModelConfig`` (its guide is ignored:
            each family is one of ``guides``), instead of ``z_dim``, ``hidden``, ... .
        training: ``lr``, ``batch_size`` and ``seed`` as a ``TrainConfig`` (its other fields are
            ignored), instead of the keywords.
        **vae_options: further ``VAE`` arguments shared by every family (``arch``,
            ``prior_components``, ...).

    Returns:
        ``{"rows": [one dict per family], "settings": {...}, "command": ..., "title": ...}``.
    """
    log = log or (lambda *_: None)
    if training is not None:
        lr, batch_size, seed = training.lr, training.batch_size, training.seed
    if model is not None:
        z_dim, hidden, activation = model.z_dim, model.hidden, model.activation
        likelihood, prior = model.likelihood, model.prior
        vae_options = dict(vae_options, arch=model.arch, prior_components=model.prior_components)
    guides = list(guides)
    if not guides:
        raise ConfigError("compare needs at least one guide family (--guides)")
    unknown = [g for g in guides if g not in GUIDES]
    if unknown:
        raise ConfigError(f"unknown guide {unknown[0]!r}; choose from: {', '.join(sorted(GUIDES))}")
    if len(set(guides)) != len(guides):
        raise ConfigError(f"a guide family is named twice in --guides {','.join(guides)}")
    if train is None or test is None:
        raise ConfigError("compare needs train and test data")
    # every setting, before the first family trains
    check_count("num_samples", num_samples)
    check_count("epochs", epochs, minimum=0)
    if epochs == 0 and shared_decoder is None:
        raise ConfigError("--epochs must be >= 1 (0 only with --shared-decoder), got 0")
    check_count("refine_steps", refine_steps, minimum=0)
    check_count("ais_steps", ais_steps, minimum=0)
    if refine_steps == 0 and (refine_size is not None or ais_steps):
        given = "--refine-size" if refine_size is not None else "--ais-steps"
        raise ConfigError(f"{given} goes with --refine-steps N (N > 0), which splits the gap")
    refine_size = REFINE_SIZE if refine_size is None else check_count("refine_size", refine_size)
    if test_size is not None:
        check_count("test_size", test_size)
    if num_threads is not None:
        check_count("threads", num_threads)
    check_seed(seed)
    TrainConfig(lr=lr, batch_size=batch_size, seed=seed, epochs=max(1, epochs))  # their checks
    if iwae_k is None:
        iwae_k = [k for k in DEFAULT_IWAE_K if k < num_samples]
        if len(iwae_k) < len(DEFAULT_IWAE_K):
            log(f"note: IWAE_k for k = {', '.join(map(str, iwae_k)) or 'none'} only: each k must "
                f"be below K = {num_samples} (--num-samples)")
    iwae_k = sorted({check_count("k", int(k) if isinstance(k, int) else k) for k in iwae_k})
    if any(k >= num_samples for k in iwae_k):
        raise ConfigError(f"every --iwae-k must be below --num-samples {num_samples}, got "
                          f"{','.join(map(str, iwae_k))}")
    if out is not None:
        check_out(out, overwrite, shared_decoder)  # before the data and the decoder are read
    unused = [k for k, v in (common_guide_options or {}).items()
              if v is not None and not any(k in options_of(g) for g in guides)]
    if unused:
        raise ConfigError(f"no family in {','.join(guides)} takes {', '.join(unused)}")
    device = resolve_device(device)  # a bad or missing device is a ConfigError, not a traceback

    train = as_data(train, "train")
    test = as_data(test, "test")
    valid = None if valid is None else as_data(valid, "valid")
    x_test = (test.x if test_size is None else test.x[:int(test_size)]).to(device)

    model_cfg = dict(z_dim=z_dim, hidden=list(hidden), activation=activation,
                     likelihood=likelihood, prior=prior, **vae_options)
    decoder_state = None
    if shared_decoder is not None:
        shared = Run(shared_decoder)
        base, base_cfg = shared.load_vae(), shared.config.to_dict()
        if not isinstance(base_cfg.get("vae"), dict) or "guide" not in base_cfg["vae"]:
            raise ConfigError(f"--shared-decoder {shared_decoder}: its config.json records no "
                              "model (\"vae\"), so its decoder cannot be rebuilt")
        # the run's generative model, minus its guide family and that family's options
        model_cfg = {k: v for k, v in base_cfg["vae"].items()
                     if k not in ("x_dim", "guide") and k not in options_of(base_cfg["vae"]["guide"])}
        # the generative side: decoder, prior and likelihood; not the encoder (body and family)
        decoder_state = {k: v for k, v in base.state_dict().items() if not _is_guide_key(k)}

    if model_cfg.get("arch") == "conv" and model_cfg.get("image_shape") is None:
        model_cfg["image_shape"] = train.image_shape
    guide_options = dict(guide_options or {})
    family_options = {}
    for family in guides:  # each family's VAE and trainer built once, to check them all first
        opts = dict(guide_options.get(family, {}))
        takes = options_of(family)
        for name, value in (common_guide_options or {}).items():
            if name in takes:
                opts.setdefault(name, value)
        family_options[family] = opts
        _make_trainer(_make_vae(family, train.x_dim, model_cfg, opts, seed, decoder_state,
                                shared_decoder), None, epochs, lr, batch_size, len(train), seed,
                      device, progress, data_config)
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    settings = dict(guides=guides, epochs=int(epochs), num_samples=num_samples,
                    iwae_k=iwae_k, test_size=len(x_test), seed=seed,
                    shared_decoder=shared_decoder, lr=lr, batch_size=batch_size,
                    refine_steps=refine_steps, refine_size=refine_size, ais_steps=ais_steps,
                    num_threads=num_threads, **model_cfg)
    state = None
    if out is not None:
        data = {"train": train.x, "test": x_test, **({} if valid is None else {"valid": valid.x})}
        key = {"settings": {**{k: v for k, v in settings.items() if k != "num_threads"},
                            "guide_options": family_options},
               "data": tensor_digest(data),
               "shared_decoder_weights": None if decoder_state is None else tensor_digest(decoder_state)}
        state = ComparisonDir(out, key, overwrite, shared_decoder, log=log)
    try:
        rows = [_family_row(family, family_options[family], state, train, valid, x_test,
                            model_cfg, decoder_state, shared_decoder, epochs, lr, batch_size,
                            seed, device, progress, data_config, num_samples, iwae_k,
                            refine_steps, refine_size, ais_steps, log) for family in guides]
        report = {
            "command": command,
            "title": title or f"{len(guides)} variational families, {epochs} epochs, K={num_samples}",
            "rows": rows,
            "settings": settings,
        }
        if state is not None:
            written = [os.path.join(out, os.path.relpath(p, state.path))
                       for p in write_report(report, state.path)]
            state.commit()
            log("wrote " + ", ".join(written) + "; run directories "
                + ", ".join(os.path.join(out, family) + os.sep for family in guides))
    finally:
        if state is not None:
            state.close()
    return report


def _make_vae(family, x_dim, model_cfg, opts, seed, decoder_state, shared_decoder):
    """The family's VAE (with the same seed the decoder starts from the same weights), with the
    shared decoder loaded and frozen where one is given."""
    pyro.set_rng_seed(seed)
    vae = VAE(x_dim=x_dim, guide=family, **model_cfg, **opts)
    if decoder_state is not None:
        try:
            missing, unexpected = vae.load_state_dict(decoder_state, strict=False)
        except RuntimeError:
            missing, unexpected = [], ["(a tensor of another shape)"]
        if unexpected or any(not _is_guide_key(k) for k in missing):
            raise ConfigError(f"{shared_decoder}: the decoder does not fit the {family} VAE")
        # frozen: pyro.module skips parameters that do not require grad, so SVI never
        # optimises them (eval() silences Pyro's warning about that)
        for part in (vae.decoder, vae.prior, vae.likelihood):
            part.requires_grad_(False)
            part.eval()
    return vae


def _make_trainer(vae, run_dir, epochs, lr, batch_size, n_train, seed, device, progress,
                  data_config):
    return Trainer(vae, epochs=int(epochs), lr=lr, batch_size=min(batch_size, n_train),
                   seed=seed, device=device, out=run_dir, progress=progress,
                   extra_config=data_config)


def _family_row(family, opts, state, train, valid, x_test, model_cfg, decoder_state,
                shared_decoder, epochs, lr, batch_size, seed, device, progress, data_config,
                num_samples, iwae_k, refine_steps, refine_size, ais_steps, log) -> dict:
    """One family trained (or its stopped training resumed) and evaluated; a family finished
    before in the same comparison is kept as it was."""
    kept = None if state is None else state.finished(family)
    if kept is not None:
        log(f"{family}: finished before, kept ({state.family_dir(family)})")
        return kept
    vae = _make_vae(family, train.x_dim, model_cfg, opts, seed, decoder_state, shared_decoder)
    run_dir = None if state is None else state.family_dir(family)
    started = time.perf_counter()
    if run_dir is not None and is_run_dir(run_dir):  # stopped before: go on from its checkpoint
        trainer = Trainer.resume(run_dir, vae=vae, epochs=int(epochs), progress=progress)
        done = len(trainer.history)
        if done < epochs:
            log(f"{family}: continuing its training from epoch {done} ({run_dir})")
        history = _fit(trainer, family, train, valid) if done < epochs else trainer.history
        train_seconds = sum(r.get("seconds", 0) for r in history)
    else:
        trainer = _make_trainer(vae, run_dir, epochs, lr, batch_size, len(train), seed, device,
                                progress, data_config)
        history = _fit(trainer, family, train, valid)  # 0 epochs: only the run directory
        train_seconds = time.perf_counter() - started
    row = _evaluate_family(vae, family, x_test, num_samples, iwae_k, seed, refine_steps,
                           refine_size, evaluate, refine, progress, ais_steps)
    row.update(guide_params=_count(vae.encoder) + _count(vae.encoder_body),
               decoder_params=_count(vae.decoder),
               train_seconds=train_seconds, epochs=int(epochs),
               train_elbo=history[-1]["train_elbo"] if history else None,
               valid_elbo=history[-1]["valid_elbo"] if history else None,
               history=history, options=opts)
    log(f"{family}: ELBO {row['elbo']:.2f}, log p^(x) {row['log_px']:.2f}, "
        f"gap {row['gap']:.2f} nats ({train_seconds:.0f} s training)")
    if state is not None:
        state.record(family, row)
    return row


def _fit(trainer, family, train, valid):
    try:
        return trainer.fit(train, valid)
    except TrainingInterrupted as e:
        raise TrainingInterrupted(e.signum, (
            f"{family}: stopped by {signal.Signals(e.signum).name} while training; its "
            "checkpoint is written: run the same pyvae compare command again to continue "
            "(finished families are kept)")) from None


def _evaluate_family(vae, family, x, num_samples, iwae_k, seed, refine_steps, refine_size,
                     evaluate, refine, progress, ais_steps=0):
    # log p^(x), the ELBO, the gap, ESS and active units, as ``pyvae evaluate`` measures them
    result = evaluate_vae(vae, x, num_samples, seed, progress=progress)
    row = {"guide": family, "test_size": len(x),
           **{k: result[k] for k in ("elbo", "elbo_stderr", "log_px", "log_px_stderr", "gap",
                                     "ess_mean", "num_samples", "active_units", "kl")}}
    row["iwae"], row["iwae_stderr"] = {}, {}
    for k in iwae_k:
        # fresh k-sample groups; about min(K, 20 k) samples per datapoint in all
        est = evaluate.iwae_bound(vae.model, vae.guide, x, k, repeats=max(1, min(20, num_samples // k)))
        row["iwae"][k], row["iwae_stderr"][k] = est.mean, est.mean_stderr
    row["approximation_gap"] = row["amortization_gap"] = None
    if refine_steps > 0:
        xr = x[:refine_size]
        with torch.no_grad():
            features = vae.encoder_body(xr)
        refined = refine(vae.model, xr, init=vae.encoder, features=features,
                         family=family, steps=int(refine_steps), seed=seed)
        split = evaluate.gaps(vae.model, vae.guide, xr, num_samples, elbo_samples=100,
                              refined_guide=refined, batch_size=len(xr), progress=progress,
                              ais_steps=ais_steps or None, seed=seed)
        ais_start, split = split.ais_start, split.summary()
        row.update(approximation_gap=split["approximation_gap"],
                   amortization_gap=split["amortization_gap"], refine_size=len(xr),
                   refine_steps=int(refine_steps))
        if ais_steps:
            row.update(ais_log_px=split["log_px"], ais_steps=int(ais_steps), ais_start=ais_start)
    return row


#: what the evaluations of the runs ``compare_runs`` puts side by side must share: (key, what
#: the error line calls it); a log p^(x) with another K, of other datapoints, is another number
ALIKE = (("split", "split"), ("num_samples", "K (num_samples)"),
         ("num_datapoints", "datapoints (num_datapoints)"))


def _data_source(run) -> str:
    """What a run was trained on, as compare --runs checks it: the data set or file, and how
    it was binarized."""
    data = run.config.data
    where = os.path.abspath(data.data_file) if data.data_file else data.dataset
    return f"{where}, binarize {data.binarize}"


def _labels(run_dirs: Sequence[str]) -> List[str]:
    """Each run's name in the table: its folder's name, or the path given where two share one."""
    paths = [os.path.normpath(str(p)) for p in run_dirs]
    seen = set()
    for path in paths:
        if os.path.realpath(path) in seen:
            raise ConfigError(f"the run {path} is named twice in --runs")
        seen.add(os.path.realpath(path))
    names = [os.path.basename(os.path.abspath(p)) for p in paths]
    return names if len(set(names)) == len(names) else paths


def compare_runs(run_dirs: Sequence[str], out: Optional[str] = None,
                 evaluation: Optional[str] = None, overwrite: bool = False,
                 title: Optional[str] = None, command: Optional[str] = None, log=print) -> dict:
    """Already trained runs side by side, from their kept evaluations: nothing is trained or
    evaluated. Each run's row holds its evaluation's ELBO, log p^(x), gap, ESS, active units
    and KL (and log p^(x) by AIS, drawn in the gap plot, where the evaluation ran it), its
    family, parameter counts, training time and history; IWAE_k and the gap split are not part
    of an evaluation ("–"). The report is the one ``compare`` writes (compare.md, .csv, .json,
    gap.png and curves.png in ``out``), with a ``run`` column; ``pyvae plot OUT`` redraws it.

    Args:
        run_dirs: run directories (``pyvae train``'s, or a comparison's family directories),
            each with a kept evaluation (``pyvae evaluate``).
        out: directory for the report (None: write nothing); it must not hold a run compared.
        evaluation: the kept evaluation read from every run, by file name or number as
            ``pyvae.Run.evaluation`` takes it ("0002"); None: each run's latest (eval.json).
        overwrite: replace a comparison already in ``out``.
        title: the report's title (default: how many runs, which evaluations, K).
        command: the command line that made the comparison, recorded in compare.md.
        log: called with one line per run and one naming the files written (None: silence).

    Returns:
        ``{"rows": [one dict per run], "settings": {...}, "command": ..., "title": ...,
        "note": ...}``.

    Raises:
        ConfigError: one line, before anything is written, when a run has no such evaluation,
            or when the runs' evaluations differ in split, K or number of datapoints (their
            numbers would not compare like with like; ``ALIKE``).
    """
    log = log or (lambda *_: None)
    run_dirs = list(run_dirs)
    if len(run_dirs) < 1:
        raise ConfigError("compare needs at least one run directory (--runs DIR1,DIR2,...)")
    labels = _labels(run_dirs)
    if out is not None:
        check_out(out, overwrite, runs=run_dirs)
    rows, sources = [], []
    for label, path in zip(labels, run_dirs):
        run = Run(path)
        name = find_evaluation(run.path, evaluation)["name"]
        result = run.evaluation(evaluation)
        plots.check_evaluation(result, f"{path}: evaluation {name}")
        vae, model = run.load_vae(), run.config.to_dict()["vae"]
        history = run.metrics()
        row = {"run": label, "run_dir": os.path.abspath(path), "evaluation": name,
               "guide": model["guide"], "test_size": result["num_datapoints"],
               **{k: result.get(k) for k in ("split", "seed", "elbo", "elbo_stderr", "log_px",
                                             "log_px_stderr", "gap", "ess_mean", "num_samples",
                                             "active_units", "kl")},
               "iwae": {}, "iwae_stderr": {}, "approximation_gap": None,
               "amortization_gap": None,
               "guide_params": _count(vae.encoder) + _count(vae.encoder_body),
               "decoder_params": _count(vae.decoder),
               "train_seconds": sum(r.get("seconds", 0) for r in history),
               "epochs": result.get("epoch"),
               "train_elbo": history[-1]["train_elbo"] if history else None,
               "valid_elbo": history[-1]["valid_elbo"] if history else None,
               "history": history,
               "options": {k: model.get(k) for k in options_of(model["guide"])}}
        if result.get("ais_log_px") is not None:
            row.update(ais_log_px=result["ais_log_px"], ais_steps=result.get("ais_steps"))
        rows.append((row, result))
        sources.append(_data_source(run))
    for key, what in ALIKE:
        if len({result.get(key) for _, result in rows}) > 1:
            each = ", ".join(f"{row['run']}: {result.get(key)}" for row, result in rows)
            raise ConfigError(f"the runs' evaluations differ in {what} ({each}): their numbers "
                              "would not compare like with like; evaluate them alike (pyvae "
                              "evaluate RUN_DIR --split S --num-samples K --max-datapoints N) or "
                              "choose alike kept ones with --evaluation (pyvae evaluate RUN_DIR "
                              "--list)")
    if len(set(sources)) > 1:
        each = ", ".join(f"{row['run']}: {source}" for (row, _), source in zip(rows, sources))
        raise ConfigError(f"the runs were trained on different data ({each}): their numbers "
                          "would not compare like with like")
    digests = {result.get("data_sha256") for _, result in rows}
    rows = [row for row, _ in rows]
    first = rows[0]
    which = "latest evaluations" if evaluation is None else f"evaluations {evaluation}"
    settings = dict(runs=[row["run_dir"] for row in rows], evaluation=evaluation,
                    guides=[row["guide"] for row in rows], split=first["split"],
                    num_samples=first["num_samples"], test_size=first["test_size"],
                    refine_steps=0)
    note = (f"Rows: the kept evaluations of {len(rows)} trained runs, read as they are (nothing "
            f"trained or evaluated here), all of the {first['split']} split, "
            f"{first['test_size']} datapoints, K = {first['num_samples']}: "
            + "; ".join(f"{row['run']}: {row['evaluation']}" for row in rows)
            + ". IWAE_k is not part of an evaluation (–)."
            + ("" if len(digests) == 1 and None not in digests else
               " The evaluated datapoints are not the same in every run (their sha256 differ or "
               "were not recorded; e.g. held-out data binarized with each run's seed): a "
               "difference between rows includes that of the data."))
    report = {"command": command, "note": note, "rows": rows, "settings": settings,
              "title": title or f"{len(rows)} trained runs, their {which}, K={first['num_samples']}"}
    for row in rows:
        log(f"{row['run']}: ELBO {row['elbo']:.2f}, log p^(x) {row['log_px']:.2f}, gap "
            f"{row['gap']:.2f} nats (evaluation {row['evaluation']})")
    if out is not None:
        state = ComparisonDir(out, {"settings": settings, "data": None,
                                    "shared_decoder_weights": None}, overwrite, runs=run_dirs,
                              log=log)
        try:
            written = [os.path.join(out, os.path.relpath(p, state.path))
                       for p in write_report(report, state.path)]
            state.commit()
        finally:
            state.close()
        log("wrote " + ", ".join(written))
    return report


# ----------------------------------------------------------------------------- output
def _fmt(value, digits=2):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _iwae_text(row) -> str:
    return ", ".join(f"{k}: {v:.2f}" for k, v in sorted((int(k), v) for k, v in row["iwae"].items()))


REFINEMENT_COLUMNS = ("approximation_gap", "amortization_gap")


def _refined(report: dict) -> bool:
    """Whether the gap of any family was split (refinement ran)."""
    return any(row.get(key) is not None for row in report["rows"] for key in REFINEMENT_COLUMNS)


def markdown_table(report: dict) -> str:
    """The comparison as a markdown table (nats per datapoint; higher bounds are tighter).

    The approximation/amortization columns appear only when the gap was split; "–" marks a
    value that was not measured (a valid ELBO without validation data)."""
    columns = [(k, h) for k, h in COLUMNS if _refined(report) or k not in REFINEMENT_COLUMNS]
    if any(row.get("run") for row in report["rows"]):  # a comparison of trained runs
        columns.insert(0, ("run", "run"))
    split = report.get("settings", {}).get("split", "test")  # (runs compared: their split)
    columns = [(k, f"{split} ELBO" if k == "elbo" else h) for k, h in columns]
    header = "| " + " | ".join(h for _, h in columns) + " |"
    lines = [header, "|" + "|".join("---" if k in ("guide", "run") else "---:" for k, _ in columns) + "|"]
    for row in report["rows"]:
        cells = []
        for key, _ in columns:
            if key == "iwae":
                cells.append(_iwae_text(row) or "–")
            elif key == "train_seconds":
                cells.append(f"{row[key]:.0f}")
            elif key in ("log_px", "elbo"):
                err = row.get(f"{key}_stderr")
                cells.append(_fmt(row[key]) + (f" ± {err:.2f}" if err is not None and err == err else ""))
            else:
                cells.append(_fmt(row.get(key)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def refinement_text(report: dict) -> str:
    """What compare.md says about the split of the gap: how it was computed, or that it was not."""
    settings = report["settings"]
    if not _refined(report):
        return ("The gap is not split into approximation and amortization gaps: no refinement "
                "was run (refine_steps = 0; `--refine-steps S` splits it on the first "
                "`--refine-size` test points).")
    size = max(row.get("refine_size") or 0 for row in report["rows"])
    ais = settings.get("ais_steps") or 0
    log_px = (f"AIS with {ais} steps" if ais else
              f"the importance-weighted estimate with K = {settings['num_samples']}")
    return ("Approximation/amortization gaps: members of each family refined per datapoint by "
            f"{settings['refine_steps']} SVI steps on the first {size} test points, with log p(x) "
            f"from {log_px}; they add up to the gap on those {size} points, not on all of them.")


def csv_text(report: dict) -> str:
    ks = sorted({int(k) for r in report["rows"] for k in r["iwae"]})
    runs = ["run", "evaluation"] if any(r.get("run") for r in report["rows"]) else []
    fields = [*runs, "guide", "guide_params", "decoder_params", "train_seconds", "epochs", "train_elbo",
              "valid_elbo", "elbo", "elbo_stderr", *[f"iwae_{k}" for k in ks], "log_px",
              "log_px_stderr", "gap", "approximation_gap", "amortization_gap", "active_units",
              "ess_mean", "num_samples", "test_size"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in report["rows"]:
        flat = dict(row)
        for k, v in row["iwae"].items():
            flat[f"iwae_{int(k)}"] = v
        writer.writerow({f: ("" if flat.get(f) is None else flat.get(f)) for f in fields})
    return buf.getvalue()


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj


def write_report(report: dict, out: str) -> List[str]:
    """Write compare.md, compare.csv, compare.json and the figures into ``out``."""
    os.makedirs(out, exist_ok=True)
    settings = report["settings"]
    md = [f"# {report['title']}", "",
          "Nats per datapoint on held-out data (higher is better; every bound is ≤ log p(x)). "
          f"log p̂(x): importance-weighted with K = {settings['num_samples']} samples; IWAE_k "
          "with fresh samples per k; gap = log p̂(x) − ELBO ≈ KL(q(z|x) ‖ p(z|x)). "
          "Active units: dimensions with Cov_x E_q[z_j|x] > 0.01. "
          "valid ELBO: – when no validation data was given.", "",
          refinement_text(report), "",
          *([report["note"], ""] if report.get("note") else []),
          markdown_table(report)]
    if report.get("command"):
        md += ["", "Command:", "", "```bash", report["command"], "```"]
    md += ["", "Settings: `" + json.dumps(_jsonable(settings), sort_keys=True) + "`", "",
           "![gap plot](gap.png)", ""]
    atomic_write_text(os.path.join(out, "compare.md"), "\n".join(md))
    atomic_write_text(os.path.join(out, "compare.csv"), csv_text(report))
    atomic_write_text(os.path.join(out, "compare.json"),
                      json.dumps(_jsonable(report), indent=2, sort_keys=True) + "\n")
    written = [os.path.join(out, n) for n in ("compare.md", "compare.csv", "compare.json")]
    written.append(plots.gap_plot(plots.gap_results(_jsonable(report)), os.path.join(out, "gap.png"),
                                  title=report["title"]))
    histories = {plots.row_label(r): r["history"] for r in report["rows"] if r.get("history")}
    if histories:
        written.append(plots.training_curves(histories, os.path.join(out, "curves.png"),
                                             title="training curves per family"))
    return written
