"""The ``pyvae`` command line: ``pyvae train``, ``pyvae evaluate``, ...

Bad input prints one line on stderr and exits with status 2 (``--debug`` shows the traceback).
"""
import argparse
import os
import sys

from .errors import ConfigError, TrainingDiverged, TrainingInterrupted


class _Parser(argparse.ArgumentParser):
    """argparse, with errors on one line: ``pyvae train: error: ...`` and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int_list(text: str):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _positive_int(text: str):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _positive_float(text: str):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _seed(text: str):
    from .limits import SEED_MAX

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be in [0, {SEED_MAX}], got {value}")
    return value


def _nonnegative_float(text: str):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


# train flags: (flags, argparse kwargs, default). Defaults are applied after parsing, so that on
# --resume we can tell which flags the user gave explicitly.
TRAIN_MODEL_FLAGS = {
    "z_dim": (("--z-dim",), dict(type=_positive_int, help="latent size (default 50)"), 50),
    "hidden": (("--hidden",), dict(type=_int_list, help="hidden sizes, e.g. 200,200 (default)"), [200, 200]),
    "activation": (("--activation",), dict(help="tanh (default), relu, elu, softplus, ..."), "tanh"),
    "likelihood": (("--likelihood",), dict(help="p(x|z): bernoulli (default), continuous_bernoulli, "
                                                "gaussian, gaussian_image, discretized_logistic"), "bernoulli"),
    "guide": (("--guide",), dict(help="q(z|x): diagonal (default), full-rank, low-rank, iaf, planar, "
                                      "radial, householder, spline, sylvester"), "diagonal"),
    "prior": (("--prior",), dict(help="p(z): normal (default), mixture, vamp"), "normal"),
    "prior_components": (("--prior-components",), dict(type=_positive_int, metavar="K", help=(
        "components of the mixture (default 10) or vamp (default 500) prior")), None),
    "arch": (("--arch",), dict(choices=("mlp", "conv"), help="encoder/decoder nets: mlp (default) or "
                                 "conv (28x28 or 32x32 images)"), "mlp"),
}
# options of particular guide families (``pyvae.guides``), passed to VAE(...) only when given
TRAIN_GUIDE_FLAGS = {
    "flow_length": (("--flow-length",), dict(type=_positive_int, metavar="K", help=(
        "flow guides: number of transforms (default 2)")), None),
    "flow_hidden": (("--flow-hidden",), dict(type=_int_list, help=(
        "flow guides: hidden sizes of each transform's network (default 10*z_dim)")), None),
    "rank": (("--rank",), dict(type=_positive_int, help="low-rank guide: rank of the covariance "
                                                      "factor (default 2)"), None),
    "sylvester_kind": (("--sylvester-kind",), dict(choices=("orthogonal", "householder", "triangular"),
                                                   help="sylvester guide: how Q is built (default "
                                                        "orthogonal)"), None),
}
TRAIN_TRAINER_FLAGS = {
    "lr": (("--lr",), dict(type=_positive_float, help="learning rate (default 1e-3)"), 1e-3),
    "batch_size": (("--batch-size",), dict(type=_positive_int, help="default 100"), 100),
    "loss": (("--loss",), dict(help="trace_elbo (default), tracemeanfield_elbo, or iwae (the k-sample bound, k = --particles)"), "trace_elbo"),
    "particles": (("--particles",), dict(type=_positive_int, help="z samples per datapoint (default 1)"), 1),
    "optimizer": (("--optimizer",), dict(help="adam (default) or clipped_adam"), "adam"),
    "schedule": (("--schedule",), dict(help="learning-rate schedule: constant (default), burda (Burda et al.'s "
                                           "3,280 epochs) or cosine (anneal to lr/100 over --epochs)"), "constant"),
    "clip_norm": (("--clip-norm",), dict(type=_positive_float, help="clip gradient norms"), None),
    "seed": (("--seed",), dict(type=_seed, help="default 0"), 0),
    "jit": (("--jit",), dict(action="store_true", help="compile the objective with Pyro's JIT (faster steps)"), False),
    "beta": (("--beta",), dict(type=_nonnegative_float, help=(
        "weight of the KL term in the training loss (default 1: the ELBO; validation always "
        "reports the ELBO)")), 1.0),
    "kl_warmup": (("--kl-warmup",), dict(type=_nonnegative_float, metavar="EPOCHS", help=(
        "raise the KL weight linearly from 0 to --beta over EPOCHS (default 0: none)")), 0.0),
}
TRAIN_DATA_FLAGS = {
    "dataset": (("--dataset",), dict(help="mnist (default), fashion-mnist, kmnist, emnist[-SPLIT], "
                                          "cifar10, linear-gaussian"), "mnist"),
    "data_file": (("--data-file",), dict(help="train on a .pt/.npy/.npz array instead of --dataset"), None),
    "binarize": (("--binarize",), dict(help="dynamic, fixed or none (default: dynamic for the "
                                            "bernoulli likelihood, else none)"), None),
    "valid_size": (("--valid-size",), dict(type=int, help="held out from train (default 10000; "
                                                          "a tenth of a --data-file)"), None),
}


def _add_flags(parser, table):
    for dest, (flags, kwargs, _default) in table.items():
        parser.add_argument(*flags, dest=dest, default=None, **kwargs)


def _add_runtime_flags(parser, *names: str) -> None:
    """Flags about where and how a command runs, the same for every command that takes them."""
    flags = {
        "device": dict(default="cpu", help="cpu (default), cuda, cuda:N"),
        "threads": dict(type=_positive_int, default=None, help="torch CPU threads"),
        "data-dir": dict(default=None, help="where the dataset lives (default $PYVAE_DATA or "
                                            "~/.cache/pyvae-data)"),
        "no-download": dict(action="store_true", help="never download the dataset"),
        "no-progress": dict(action="store_true", help="no progress bars"),
        "debug": dict(action="store_true", default=argparse.SUPPRESS, help="show tracebacks"),
    }
    for name in names:
        parser.add_argument("--" + name, **flags[name])


def _build_parser():
    parser = _Parser(prog="pyvae", description="Variational autoencoders in Pyro: train, evaluate, compare.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    train = sub.add_parser("train", help="train a VAE by SVI", description=(
        "Train a VAE by stochastic variational inference; writes RUN_DIR/config.json, "
        "metrics.jsonl and checkpoint.pt."))
    train.add_argument("--out", help="run directory to create")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    train.add_argument("--epochs", type=int, default=None, help="total epochs (default 10)")
    train.add_argument("--distributed", action="store_true", help=(
        "data-parallel training over the processes torchrun starts: `torchrun --nproc_per_node N "
        "-m pyvae train ... --distributed` (DDP; --batch-size is the global batch)"))
    train.add_argument("--backend", choices=("gloo", "nccl"), default=None, help=(
        "with --distributed: gloo (default on the CPU) or nccl (default with --device cuda)"))
    _add_runtime_flags(train, "device", "data-dir", "no-download", "threads", "no-progress", "debug")
    _add_flags(train, TRAIN_MODEL_FLAGS)
    _add_flags(train, TRAIN_GUIDE_FLAGS)
    _add_flags(train, TRAIN_TRAINER_FLAGS)
    _add_flags(train, TRAIN_DATA_FLAGS)
    train.set_defaults(func=cmd_train)

    plot = sub.add_parser("plot", help="draw the figures of a run or a comparison", description=(
        "Draw figures: for a training run, training curves, reconstructions, prior samples, the "
        "latent scatter (PCA when z-dim > 2), interpolations and the 2-D latent manifold (z-dim 2); "
        "for a directory written by `pyvae compare`, the gap plot and training curves."))
    plot.add_argument("run_dir", metavar="RUN_DIR", help="a run directory or a comparison directory")
    plot.add_argument("--out", default=None, help="where to write the figures (default RUN_DIR/figures)")
    plot.add_argument("--format", dest="fmt", default="png", choices=["png", "pdf", "svg"], help="default png")
    plot.add_argument("--split", default="test", help="data split to draw from: test (default), valid, train")
    plot.add_argument("--num-points", type=_positive_int, default=2000, help="datapoints in the latent scatter (default 2000)")
    plot.add_argument("--seed", type=_seed, default=0, help="picks the datapoints shown (default 0)")
    _add_runtime_flags(plot, "data-dir", "no-download", "debug")
    plot.set_defaults(func=cmd_plot)

    cmp = sub.add_parser("compare", help="train and evaluate one VAE per variational family", description=(
        "Train one VAE per variational family with the same seed, data and decoder architecture "
        "(or, with --shared-decoder, fit only guides to a trained run's frozen decoder), then "
        "measure on test data the ELBO, IWAE_k, the log-likelihood estimate log p(x) and the gap "
        "between them; writes OUT/compare.md, compare.csv, compare.json, gap.png, curves.png and "
        "one run directory per family."))
    cmp.add_argument("--guides", default="diagonal,full-rank,iaf,planar,sylvester",
                     help="comma-separated families (default diagonal,full-rank,iaf,planar,sylvester)")
    cmp.add_argument("--out", required=True, help="directory for the comparison")
    cmp.add_argument("--overwrite", action="store_true", help="replace an existing comparison in --out")
    cmp.add_argument("--epochs", type=int, default=10, help="training epochs per family (default 10; 0 only with --shared-decoder)")
    cmp.add_argument("--num-samples", type=_positive_int, default=1000, help="importance samples K for log p(x) (default 1000)")
    cmp.add_argument("--iwae-k", type=_int_list, default=[5, 50], help="k of the IWAE_k bounds, each < K (default 5,50)")
    cmp.add_argument("--test-size", type=_positive_int, default=None, help="evaluate on the first N test datapoints (default all)")
    cmp.add_argument("--shared-decoder", metavar="RUN_DIR", default=None, help="fit only guides to this run's frozen decoder")
    cmp.add_argument("--refine-steps", type=int, default=0, help="split the gap of diagonal/full-rank into approximation and amortization gaps with this many refinement steps (default 0: off)")
    cmp.add_argument("--refine-size", type=_positive_int, default=100, help="test datapoints refined (default 100)")
    _add_runtime_flags(cmp, "device", "threads", "data-dir", "no-download", "no-progress", "debug")
    _add_flags(cmp, {k: v for k, v in TRAIN_MODEL_FLAGS.items() if k != "guide"})
    _add_flags(cmp, TRAIN_GUIDE_FLAGS)  # each family gets the options it takes
    _add_flags(cmp, {k: TRAIN_TRAINER_FLAGS[k] for k in ("lr", "batch_size", "seed")})
    _add_flags(cmp, TRAIN_DATA_FLAGS)
    cmp.set_defaults(func=cmd_compare)

    ev = sub.add_parser("evaluate", help="importance-weighted log-likelihood of a trained run", description=(
        "Estimate log p(x) per datapoint by importance sampling with the run's guide "
        "(logsumexp_k log w_k - log K), with its standard error, the ELBO, the gap between them, "
        "active units and KL; prints a table and writes RUN_DIR/eval.json."))
    ev.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by pyvae train")
    ev.add_argument("--num-samples", type=_positive_int, default=5000, help="importance samples K per datapoint (default 5000)")
    ev.add_argument("--split", default="test", help="test (default), valid, train")
    ev.add_argument("--chunk-size", type=_positive_int, default=None, help="samples drawn per pass (default: about 20000 / batch size)")
    ev.add_argument("--batch-size", type=_positive_int, default=100, help="datapoints per pass (default 100)")
    ev.add_argument("--max-datapoints", type=_positive_int, default=None, help="evaluate only the first N datapoints")
    ev.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    ev.add_argument("--seed", type=_seed, default=0, help="seeds the importance samples (default 0)")
    _add_runtime_flags(ev, "device", "threads", "data-dir", "no-download", "no-progress", "debug")
    ev.set_defaults(func=cmd_evaluate)
    return parser


def _filled(args, table):
    return {dest: (getattr(args, dest) if getattr(args, dest) is not None else default)
            for dest, (_f, _k, default) in table.items()}


def _given(args, table):
    return {dest: getattr(args, dest) for dest in table if getattr(args, dest) is not None}


def _completed(data_cfg: dict, likelihood: str) -> dict:
    """The data config with its defaults filled as the likelihood needs (binary pixels or not)."""
    from .data import complete_data_config
    from .models.likelihoods import LIKELIHOODS

    return complete_data_config(data_cfg, getattr(LIKELIHOODS.get(likelihood), "binary_data", True))


def cmd_train(args) -> int:
    if not args.distributed:
        if args.backend:
            raise ConfigError("--backend goes with --distributed")
        return _train(args)
    from .training import distributed

    ddp = distributed.setup(args.device, args.backend)
    try:
        # rank 0 alone fetches a missing data set, while the others wait, before anyone reads it
        fetch_error = None
        if ddp.is_main and not (args.resume or args.data_file or args.no_download):
            from .data import load_dataset

            try:
                load_dataset(args.dataset or "mnist", "train", data_dir=args.data_dir, binarize="none")
            except ConfigError as e:
                fetch_error = e
        ddp.barrier()
        if fetch_error is not None:
            raise fetch_error
        return _train(args, ddp)
    finally:
        ddp.close()


def _train(args, ddp=None) -> int:
    from .data import load_split, load_train_valid
    from .training.trainer import Trainer
    from .models.vae import VAE

    if args.resume:
        if args.out and os.path.abspath(args.out) != os.path.abspath(args.resume):
            raise ConfigError("give either --out or --resume, not both")
        trainer = Trainer.resume(args.resume, epochs=args.epochs, device=args.device,
                                 progress=not args.no_progress, num_threads=args.threads,
                                 distributed=args.distributed)
        check_resume_flags(args.resume, trainer, {
            **_given(args, TRAIN_MODEL_FLAGS), **_given(args, TRAIN_GUIDE_FLAGS),
            **_given(args, TRAIN_TRAINER_FLAGS), **_given(args, TRAIN_DATA_FLAGS)})
        data_cfg = trainer.extra_config
    else:
        if not args.out:
            raise ConfigError("--out RUN_DIR is required (or --resume RUN_DIR)")
        if args.epochs is not None and args.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1 for a new run, got {args.epochs}")
        from .training.rundir import check_new

        check_new(args.out, args.overwrite)  # before the data are loaded
        model_cfg = {**_filled(args, TRAIN_MODEL_FLAGS), **_given(args, TRAIN_GUIDE_FLAGS)}
        trainer_cfg = _filled(args, TRAIN_TRAINER_FLAGS)
        data_cfg = _data_config(args, TRAIN_DATA_FLAGS)
        data_cfg["seed"] = trainer_cfg["seed"]
        data_cfg = _completed(data_cfg, model_cfg["likelihood"])
        import pyro

        pyro.set_rng_seed(trainer_cfg["seed"])  # the initial weights, too, follow --seed
        train_preview = load_split(data_cfg, "train", args.data_dir, not args.no_download)
        image_shape = train_preview.image_shape if model_cfg["arch"] == "conv" else None
        vae = VAE(x_dim=train_preview.x_dim, image_shape=image_shape, **model_cfg)
        trainer = Trainer(vae, epochs=10 if args.epochs is None else args.epochs, device=args.device,
                          out=args.out, overwrite=args.overwrite, progress=not args.no_progress,
                          num_threads=args.threads, extra_config=data_cfg,
                          distributed=args.distributed, **trainer_cfg)
    train, valid = load_train_valid(data_cfg, args.data_dir, not args.no_download)
    if ddp is None or ddp.is_main:  # with --distributed, rank 0 reports
        trainer.callbacks.append(_epoch_line)
    history = trainer.fit(train, valid)
    if history and (ddp is None or ddp.is_main):
        print(f"run in {trainer.out} ({history[-1]['epoch']} epochs)")
    return 0


def _epoch_line(trainer, record) -> None:
    """One line per finished epoch: the objective, the validation ELBO, the time."""
    valid_text = "" if record["valid_elbo"] is None else f", valid ELBO {record['valid_elbo']:.2f}"
    bits_text = ""
    if record["valid_elbo"] is not None and getattr(trainer.vae.likelihood, "discrete", False):
        from .models.likelihoods import bits_per_dim  # a code length: p(x|z) is a mass function

        bits_text = f" ({bits_per_dim(-record['valid_elbo'], trainer.vae.x_dim):.4f} bits/dim)"
    seconds = record.get("seconds", 0) + (record.get("valid_seconds") or 0)
    print(f"epoch {record['epoch']}: train "
          f"{record.get('train_objective', 'ELBO')} {record['train_elbo']:.2f}{valid_text} nats"
          f"{bits_text}; {seconds:.1f} s", flush=True)


def _data_config(args, table) -> dict:
    """The data flags with defaults; a --data-file and --data-dir stored as absolute paths."""
    cfg = _filled(args, table)
    if cfg.get("data_file"):
        cfg["data_file"] = os.path.abspath(cfg["data_file"])
    if getattr(args, "data_dir", None):
        cfg["data_dir"] = os.path.abspath(os.path.expanduser(args.data_dir))
    return cfg


def check_resume_flags(run_dir: str, trainer, given: dict) -> None:
    """Flags given with --resume must match the run's; one it does not record is an error, and
    so are --epochs at or below the epochs done."""
    stored = {"arch": "mlp", **(trainer.vae.config or {}), **trainer.extra_config, **trainer.config}
    for dest, value in given.items():
        flag = "--" + dest.replace("_", "-")
        if dest == "data_file":
            value = os.path.abspath(value)
            stored_value = stored.get(dest) and os.path.abspath(stored[dest])
        else:
            stored_value = stored.get(dest)
        if dest not in stored:
            raise ConfigError(f"{flag} is not recorded in {run_dir} (the run does not take it or "
                              "predates it), so it cannot be checked; drop it to resume")
        if stored_value != value:
            raise ConfigError(f"config mismatch on resume: {flag} {value} but the run has {stored[dest]}")
    done, epochs = len(trainer.history), trainer.config["epochs"]
    if done >= epochs:
        raise ConfigError(f"{run_dir} has already trained {done} of {epochs} epochs; pass "
                          f"--epochs N with N > {done} to train further")


def cmd_plot(args) -> int:
    from .reports.plots import plot_run

    written = plot_run(args.run_dir, out=args.out, fmt=args.fmt, split=args.split,
                       data_dir=args.data_dir, download=not args.no_download,
                       num_points=args.num_points, seed=args.seed)
    for path in written:
        print(path)
    return 0


def cmd_evaluate(args) -> int:
    import json

    import torch

    from .training.evalrun import evaluate_run, write_result
    from .training.rundir import RunDir

    if not os.path.isdir(args.run_dir) or not os.path.isfile(os.path.join(args.run_dir, "checkpoint.pt")):
        raise ConfigError(f"{args.run_dir} is not a pyvae run directory (no checkpoint.pt)")
    if args.threads:
        torch.set_num_threads(args.threads)
    with RunDir(args.run_dir, resume=True):  # one writer: not while it trains
        result = evaluate_run(args.run_dir, args.num_samples, args.split, args.seed,
                              args.batch_size, args.chunk_size, args.max_datapoints, args.device,
                              args.data_dir, not args.no_download, not args.no_progress,
                              log=lambda line: print(line, file=sys.stderr))
        if args.json:
            print(json.dumps(result, indent=2, sort_keys=True), flush=True)
            write_result(args.run_dir, result)
            return 0
        _print_eval_table(result, args)
        print(f"written to {write_result(args.run_dir, result)}")
    return 0


def _print_eval_table(result, args):
    n, seconds, z_dim = result["num_datapoints"], result["seconds"], result["z_dim"]
    rows = [
        ("split", f"{args.split} ({n} datapoints)"),
        (f"log p(x), K={args.num_samples}", f"{result['log_px']:.3f} ± {result['log_px_stderr']:.3f} nats"),
        ("NLL", f"{result['nll']:.3f} nats ({result['bits_per_dim']:.4f} bits/dim)"),
        (f"ELBO, mean of {args.num_samples} log w", f"{result['elbo']:.3f} ± {result['elbo_stderr']:.3f} nats"),
        ("gap log p(x) - ELBO", f"{result['gap']:.3f} nats"),
        ("ESS (mean / min)", f"{result['ess_mean']:.1f} / {result['ess_min']:.1f} of {args.num_samples}"),
        ("active units", f"{result['active_units']} of {z_dim}"),
        ("KL(q(z|x) || p(z))", f"{result['kl']:.3f} nats"),
        ("time", f"{seconds:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def cmd_compare(args) -> int:
    import shlex

    from .reports.compare import compare
    from .data import load_split, load_train_valid

    guides = [g.strip() for g in args.guides.split(",") if g.strip()]
    model_flags = {k: v for k, v in TRAIN_MODEL_FLAGS.items() if k != "guide"}
    trainer_flags = {k: TRAIN_TRAINER_FLAGS[k] for k in ("lr", "batch_size", "seed")}
    model_cfg = _filled(args, model_flags)
    trainer_cfg = _filled(args, trainer_flags)
    data_cfg = _data_config(args, TRAIN_DATA_FLAGS)
    if args.shared_decoder:
        from .reports.plots import load_run

        given = _given(args, model_flags)
        if given:
            raise ConfigError(f"--shared-decoder takes the model from its run; drop "
                              f"{', '.join('--' + k.replace('_', '-') for k in given)}")
        _, run_cfg = load_run(args.shared_decoder)
        # the run's data unless data flags are given
        data_cfg = {**(run_cfg["data"] or data_cfg), **_given(args, TRAIN_DATA_FLAGS)}
    data_cfg["seed"] = trainer_cfg["seed"]
    download = not args.no_download
    data_cfg = _completed(data_cfg, model_cfg["likelihood"])
    train, valid = load_train_valid(data_cfg, args.data_dir, download)
    test = load_split(data_cfg, "test", args.data_dir, download)
    given = " ".join(
        f"--{k.replace('_', '-')}" + ("" if v is True else " " + shlex.quote(
            ",".join(map(str, v)) if isinstance(v, list) else str(v)))
        for k, v in vars(args).items()
        if k not in ("command", "func", "debug") and v not in (None, False)
        and not (k == "guides"))
    command = f"pyvae compare --guides {','.join(guides)} {given}"
    compare(guides, train, test, valid, epochs=args.epochs, num_samples=args.num_samples,
            iwae_k=args.iwae_k, test_size=args.test_size, out=args.out,
            shared_decoder=args.shared_decoder, common_guide_options=_given(args, TRAIN_GUIDE_FLAGS),
            refine_steps=args.refine_steps, refine_size=args.refine_size,
            num_threads=args.threads, device=args.device, progress=not args.no_progress,
            overwrite=args.overwrite, data_config=data_cfg, command=command, log=print,
            **model_cfg, **trainer_cfg)
    print(f"wrote {os.path.join(args.out, 'compare.md')}, compare.csv, compare.json, gap.png")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _build_parser()
    args = parser.parse_args(argv)
    debug = args.debug
    try:
        return args.func(args)
    except ConfigError as e:
        if debug:
            raise
        print(f"pyvae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        print(f"pyvae {args.command}: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:  # Ctrl-C before training (or evaluation) took over the signal
        if debug:
            raise
        print(f"pyvae {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, permissions, a path under a file, ...
        if debug:
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"pyvae {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        if debug:
            raise
        print(f"pyvae {args.command}: error: {e}", file=sys.stderr)
        return 1
