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


# train flags: (flags, argparse kwargs, default). Defaults are applied after parsing, so that on
# --resume we can tell which flags the user gave explicitly.
TRAIN_MODEL_FLAGS = {
    "z_dim": (("--z-dim",), dict(type=_positive_int, help="latent size (default 50)"), 50),
    "hidden": (("--hidden",), dict(type=_int_list, help="hidden sizes, e.g. 200,200 (default)"), [200, 200]),
    "activation": (("--activation",), dict(help="tanh (default), relu, elu, softplus, ..."), "tanh"),
    "likelihood": (("--likelihood",), dict(help="p(x|z) family (default bernoulli)"), "bernoulli"),
    "guide": (("--guide",), dict(help="q(z|x) family (default diagonal)"), "diagonal"),
    "prior": (("--prior",), dict(help="p(z) (default normal)"), "normal"),
}
TRAIN_TRAINER_FLAGS = {
    "lr": (("--lr",), dict(type=_positive_float, help="learning rate (default 1e-3)"), 1e-3),
    "batch_size": (("--batch-size",), dict(type=_positive_int, help="default 100"), 100),
    "loss": (("--loss",), dict(help="trace_elbo (default) or tracemeanfield_elbo"), "trace_elbo"),
    "particles": (("--particles",), dict(type=_positive_int, help="z samples per datapoint (default 1)"), 1),
    "optimizer": (("--optimizer",), dict(help="adam (default) or clipped_adam"), "adam"),
    "schedule": (("--schedule",), dict(help="learning-rate schedule: constant (default) or burda"), "constant"),
    "clip_norm": (("--clip-norm",), dict(type=_positive_float, help="clip gradient norms"), None),
    "seed": (("--seed",), dict(type=int, help="default 0"), 0),
}
TRAIN_DATA_FLAGS = {
    "dataset": (("--dataset",), dict(help="mnist (default), fashion-mnist, kmnist"), "mnist"),
    "data_file": (("--data-file",), dict(help="train on a .pt/.npy/.npz array instead of --dataset"), None),
    "binarize": (("--binarize",), dict(help="dynamic (default), fixed or none"), "dynamic"),
    "valid_size": (("--valid-size",), dict(type=int, help="held out from train (default 10000)"), 10000),
}


def _add_flags(parser, table):
    for dest, (flags, kwargs, _default) in table.items():
        parser.add_argument(*flags, dest=dest, default=None, **kwargs)


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
    train.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    train.add_argument("--data-dir", default=None, help="where the dataset lives (default $PYVAE_DATA or ~/.cache/pyvae-data)")
    train.add_argument("--no-download", action="store_true", help="never download the dataset")
    train.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    _add_flags(train, TRAIN_MODEL_FLAGS)
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
    plot.add_argument("--seed", type=int, default=0, help="picks the datapoints shown (default 0)")
    plot.add_argument("--data-dir", default=None, help="where the dataset lives (default $PYVAE_DATA or ~/.cache/pyvae-data)")
    plot.add_argument("--no-download", action="store_true", help="never download the dataset")
    plot.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    plot.set_defaults(func=cmd_plot)
    return parser


def _filled(args, table):
    return {dest: (getattr(args, dest) if getattr(args, dest) is not None else default)
            for dest, (_f, _k, default) in table.items()}


def _given(args, table):
    return {dest: getattr(args, dest) for dest in table if getattr(args, dest) is not None}


def load_split(data_cfg: dict, split: str, data_dir=None, download=True):
    from .data import load_array, load_dataset

    if data_cfg.get("data_file"):
        return load_array(data_cfg["data_file"], split, data_cfg["valid_size"], data_cfg["binarize"],
                          data_cfg["seed"])
    return load_dataset(data_cfg["dataset"], split, data_dir=data_dir, download=download,
                        binarize=data_cfg["binarize"], valid_size=data_cfg["valid_size"],
                        seed=data_cfg["seed"])


def cmd_train(args) -> int:
    from .train import Trainer
    from .vae import VAE

    if args.resume:
        if args.out and os.path.abspath(args.out) != os.path.abspath(args.resume):
            raise ConfigError("give either --out or --resume, not both")
        trainer = Trainer.resume(args.resume, epochs=args.epochs, device=args.device,
                                 progress=not args.no_progress, num_threads=args.threads)
        stored = {**(trainer.vae.config or {}), **trainer.extra_config, **trainer.config}
        for dest, value in {**_given(args, TRAIN_MODEL_FLAGS), **_given(args, TRAIN_TRAINER_FLAGS),
                            **_given(args, TRAIN_DATA_FLAGS)}.items():
            if dest in stored and stored[dest] != value:
                raise ConfigError(
                    f"config mismatch on resume: --{dest.replace('_', '-')} {value} but the run has {stored[dest]}")
        data_cfg = trainer.extra_config
    else:
        if not args.out:
            raise ConfigError("--out RUN_DIR is required (or --resume RUN_DIR)")
        model_cfg = _filled(args, TRAIN_MODEL_FLAGS)
        trainer_cfg = _filled(args, TRAIN_TRAINER_FLAGS)
        data_cfg = _filled(args, TRAIN_DATA_FLAGS)
        data_cfg["seed"] = trainer_cfg["seed"]
        import pyro

        pyro.set_rng_seed(trainer_cfg["seed"])  # the initial weights, too, follow --seed
        train_preview = load_split(data_cfg, "train", args.data_dir, not args.no_download)
        vae = VAE(x_dim=train_preview.x_dim, **model_cfg)
        trainer = Trainer(vae, epochs=10 if args.epochs is None else args.epochs, device=args.device,
                          out=args.out, overwrite=args.overwrite, progress=not args.no_progress,
                          num_threads=args.threads, extra_config=data_cfg, **trainer_cfg)
    train = load_split(data_cfg, "train", args.data_dir, not args.no_download)
    valid = load_split(data_cfg, "valid", args.data_dir, not args.no_download) if data_cfg["valid_size"] else None
    history = trainer.fit(train, valid)
    if history:
        last = history[-1]
        valid_text = "" if last["valid_elbo"] is None else f", valid ELBO {last['valid_elbo']:.2f}"
        print(f"epoch {last['epoch']}: train ELBO {last['train_elbo']:.2f}{valid_text} nats; "
              f"run in {trainer.out}")
    return 0


def cmd_plot(args) -> int:
    from .plots import plot_run

    written = plot_run(args.run_dir, out=args.out, fmt=args.fmt, split=args.split,
                       data_dir=args.data_dir, download=not args.no_download,
                       num_points=args.num_points, seed=args.seed)
    for path in written:
        print(path)
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
    except TrainingDiverged as e:
        if debug:
            raise
        print(f"pyvae {args.command}: error: {e}", file=sys.stderr)
        return 1
