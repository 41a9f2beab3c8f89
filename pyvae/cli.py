"""The ``pyvae`` command line: ``pyvae train``, ``pyvae evaluate``, ...

Bad input prints one line on stderr and exits with status 2 (``--debug`` shows the traceback).
"""
import argparse
import typing
import os
import sys

from typing import List

from .config import (DataConfig, ModelConfig, TrainConfig, flag_fields, guide_option_fields,
                     int_list)
from .errors import ConfigError, TrainingDiverged, TrainingInterrupted

# the training options a comparison shares between its families
COMPARE_TRAIN_OPTIONS = ("lr", "batch_size", "seed")


class _Parser(argparse.ArgumentParser):
    """argparse, with errors on one line: ``pyvae train: error: ...`` and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _int_list(text: str):
    try:
        return list(int_list(text, "sizes"))
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _flag_type(f):
    """argparse's ``type=`` for a config field: parse the text, then run the field's check, so
    that a bad number is refused with the same message as in Python before anything runs.
    Names chosen from a registry are checked when the config is built (``--debug`` then shows
    the traceback); their help lists the registry."""
    check = f.metadata.get("check")
    kind = f.type
    if typing.get_origin(kind) is typing.Union:  # Optional[X] -> X
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if check is int_list:
        parse = str
    elif kind is bool:
        return None
    elif kind in (int, float):
        parse = kind
    else:
        return str
    if check is None or hasattr(check, "choices"):
        return parse

    def convert(text):
        value = parse(text)  # a ValueError here reads "invalid int value: 'x'"
        try:
            value = check(value, f.metadata.get("name") or f.name)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return list(value) if isinstance(value, tuple) else value

    convert.__name__ = parse.__name__
    return convert


def _seed(text: str) -> int:
    from .limits import check_seed

    try:
        return check_seed(int(text))
    except (ValueError, ConfigError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _help(f) -> str:
    text = f.metadata.get("help", "")
    check = f.metadata.get("check")
    if hasattr(check, "choices"):
        text += "; one of: " + ", ".join(check.choices())
    if f.default is not None and f.default is not False:
        default = f.default
        text += " (default " + (",".join(map(str, default)) if isinstance(default, tuple)
                                else str(default)) + ")"
    return text.replace("%", "%%")


def add_config_flags(parser, config_fields) -> List[str]:
    """One flag per config field, its type, check and help from the field. The default stays
    None, so that a command can tell the flags given from those left out (``--resume`` needs
    that); the field's own default applies when the dataclass is built."""
    dests = []
    for f in config_fields:
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        kwargs = dict(dest=f.name, default=None, help=_help(f))
        if f.metadata.get("metavar"):
            kwargs["metavar"] = f.metadata["metavar"]
        kind = _flag_type(f)
        if f.metadata.get("choices"):
            kwargs["choices"] = list(f.metadata["check"].choices())
        if kind is None:
            kwargs.update(action="store_true")
        else:
            kwargs["type"] = kind
        parser.add_argument(flag, **kwargs)
        dests.append(f.name)
    return dests


MODEL_FLAGS = flag_fields(ModelConfig)
GUIDE_FLAGS = list(guide_option_fields().values())
TRAIN_FLAGS = [f for f in flag_fields(TrainConfig) if f.name != "epochs"]
DATA_FLAGS = flag_fields(DataConfig)


def _given(args, config_fields) -> dict:
    """The flags of ``config_fields`` given on the command line."""
    out = {}
    for f in config_fields:
        value = getattr(args, f.name, None)
        if value is not None and value is not False:
            out[f.name] = value
    return out


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
    train.add_argument("--epochs", type=int, default=None, help=f"total epochs (default {TrainConfig.epochs})")
    train.add_argument("--tensorboard", action="store_true", help=(
        "write TensorBoard event files (train_elbo, valid_elbo, lr per epoch) to RUN_DIR/tensorboard"))
    train.add_argument("--distributed", action="store_true", help=(
        "data-parallel training over the processes torchrun starts: `torchrun --nproc_per_node N "
        "-m pyvae train ... --distributed` (DDP; --batch-size is the global batch)"))
    train.add_argument("--backend", choices=("gloo", "nccl"), default=None, help=(
        "with --distributed: gloo (default on the CPU) or nccl (default with --device cuda)"))
    _add_runtime_flags(train, "device", "data-dir", "no-download", "threads", "no-progress", "debug")
    for config_fields in (MODEL_FLAGS, GUIDE_FLAGS, TRAIN_FLAGS, DATA_FLAGS):
        add_config_flags(train, config_fields)
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
    cmp.add_argument("--epochs", type=int, default=TrainConfig.epochs, help=f"training epochs per family (default {TrainConfig.epochs}; 0 only with --shared-decoder)")
    cmp.add_argument("--num-samples", type=_positive_int, default=1000, help="importance samples K for log p(x) (default 1000)")
    cmp.add_argument("--iwae-k", type=_int_list, default=None, help="k of the IWAE_k bounds, each < K (default 5,50: those below K)")
    cmp.add_argument("--test-size", type=_positive_int, default=None, help="evaluate on the first N test datapoints (default all)")
    cmp.add_argument("--shared-decoder", metavar="RUN_DIR", default=None, help="fit only guides to this run's frozen decoder")
    cmp.add_argument("--refine-steps", type=int, default=0, help="split the gap of diagonal/full-rank into approximation and amortization gaps with this many refinement steps (default 0: off)")
    cmp.add_argument("--refine-size", type=_positive_int, default=100, help="test datapoints refined (default 100)")
    _add_runtime_flags(cmp, "device", "threads", "data-dir", "no-download", "no-progress", "debug")
    add_config_flags(cmp, [f for f in MODEL_FLAGS if f.name != "guide"])
    add_config_flags(cmp, GUIDE_FLAGS)  # each family gets the options it takes
    add_config_flags(cmp, [f for f in TRAIN_FLAGS if f.name in COMPARE_TRAIN_OPTIONS])
    add_config_flags(cmp, DATA_FLAGS)
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


def _binary_data(likelihood) -> bool:
    """Whether the likelihood wants binary pixels (the data's default binarization follows)."""
    from .models.likelihoods import LIKELIHOODS

    return getattr(LIKELIHOODS.get(likelihood), "binary_data", True)


def _train(args, ddp=None) -> int:
    from .data import load_split, load_train_valid
    from .models.vae import VAE
    from .cli_support import absolute_data_paths, check_resume_flags, epoch_line
    from .training.callbacks import as_callback
    from .training.rundir import check_new
    from .training.trainer import Trainer

    given = {**_given(args, MODEL_FLAGS), **_given(args, GUIDE_FLAGS), **_given(args, TRAIN_FLAGS),
             **_given(args, DATA_FLAGS)}
    if args.resume:
        if args.out and os.path.abspath(args.out) != os.path.abspath(args.resume):
            raise ConfigError("give either --out or --resume, not both")
        trainer = Trainer.resume(args.resume, epochs=args.epochs, device=args.device,
                                 progress=not args.no_progress, num_threads=args.threads,
                                 distributed=args.distributed, tensorboard=args.tensorboard)
        check_resume_flags(args.resume, trainer, given)
        data_cfg = trainer.extra_config
    else:
        if not args.out:
            raise ConfigError("--out RUN_DIR is required (or --resume RUN_DIR)")
        if args.epochs is not None and args.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1 for a new run, got {args.epochs}")
        check_new(args.out, args.overwrite)  # before the data are loaded
        model = ModelConfig.from_dict({**_given(args, MODEL_FLAGS), **_given(args, GUIDE_FLAGS)})
        training = TrainConfig(**_given(args, TRAIN_FLAGS), num_threads=args.threads,
                               **({} if args.epochs is None else {"epochs": args.epochs}))
        data = DataConfig(**_given(args, DATA_FLAGS), seed=training.seed)
        data_cfg = absolute_data_paths(data.completed(_binary_data(model.likelihood)).to_dict(),
                                       args.data_dir)
        import pyro

        pyro.set_rng_seed(training.seed)  # the initial weights, too, follow --seed
        train_preview = load_split(data_cfg, "train", args.data_dir, not args.no_download)
        vae = VAE(config=model.replace(
            x_dim=train_preview.x_dim,
            image_shape=train_preview.image_shape if model.arch == "conv" else None))
        trainer = Trainer(vae, config=training, device=args.device, out=args.out,
                          overwrite=args.overwrite, progress=not args.no_progress,
                          extra_config=data_cfg, distributed=args.distributed,
                          tensorboard=args.tensorboard)
    train, valid = load_train_valid(data_cfg, args.data_dir, not args.no_download)
    if ddp is None or ddp.is_main:  # with --distributed, rank 0 reports
        trainer.callbacks.append(as_callback(epoch_line))
    history = trainer.fit(train, valid)
    if history and (ddp is None or ddp.is_main):
        print(f"run in {trainer.out} ({history[-1]['epoch']} epochs)")
    return 0


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

    from .run import Run
    from .training.evalrun import evaluate_run, write_result
    from .training.rundir import RunDir

    Run(args.run_dir)  # a run directory, or one line saying why not
    if args.threads:
        torch.set_num_threads(args.threads)
    with RunDir(args.run_dir, resume=True):  # one writer: not while it trains
        result = evaluate_run(args.run_dir, args.num_samples, args.split, args.seed,
                              args.batch_size, args.chunk_size, args.max_datapoints, args.device,
                              args.data_dir, not args.no_download, not args.no_progress,
                              log=lambda line: print(line, file=sys.stderr))
        if args.json:  # printed first: a disk too full for eval.json does not lose the numbers
            print(json.dumps(result, indent=2, sort_keys=True), flush=True)
            write_result(args.run_dir, result)
            return 0
        _print_table(args, result)
        print(f"written to {write_result(args.run_dir, result)}")
    return 0


def _print_table(args, result) -> None:
    n, seconds = result["num_datapoints"], result["seconds"]
    rows = [
        ("split", f"{args.split} ({n} datapoints)"),
        (f"log p(x), K={args.num_samples}", f"{result['log_px']:.3f} ± {result['log_px_stderr']:.3f} nats"),
        ("NLL", f"{result['nll']:.3f} nats ({result['bits_per_dim']:.4f} bits/dim)"),
        (f"ELBO, mean of {args.num_samples} log w", f"{result['elbo']:.3f} ± {result['elbo_stderr']:.3f} nats"),
        ("gap log p(x) - ELBO", f"{result['gap']:.3f} nats"),
        ("ESS (mean / min)", f"{result['ess_mean']:.1f} / {result['ess_min']:.1f} of {args.num_samples}"),
        ("active units", f"{result['active_units']} of {result['z_dim']}"),
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
    model_flags = [f for f in MODEL_FLAGS if f.name != "guide"]
    training = TrainConfig(**_given(args, [f for f in TRAIN_FLAGS if f.name in COMPARE_TRAIN_OPTIONS]))
    model = ModelConfig(**_given(args, model_flags))
    data_cfg = DataConfig(**_given(args, DATA_FLAGS)).to_dict()
    if args.shared_decoder:
        from .run import Run

        given = _given(args, model_flags)
        if given:
            raise ConfigError(f"--shared-decoder takes the model from its run; drop "
                              f"{', '.join('--' + k.replace('_', '-') for k in given)}")
        run_cfg = Run(args.shared_decoder).config
        # the run's data unless data flags are given
        data_cfg = {**run_cfg.data.to_dict(), **_given(args, DATA_FLAGS)}
        model = run_cfg.model
    data_cfg["seed"] = training.seed
    download = not args.no_download
    from .cli_support import absolute_data_paths

    data_cfg = absolute_data_paths(
        DataConfig(**data_cfg).completed(_binary_data(model.likelihood)).to_dict(), args.data_dir)
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
            shared_decoder=args.shared_decoder, common_guide_options=_given(args, GUIDE_FLAGS),
            refine_steps=args.refine_steps, refine_size=args.refine_size,
            num_threads=args.threads, device=args.device, progress=not args.no_progress,
            overwrite=args.overwrite, data_config=data_cfg, command=command, log=print,
            model=model, training=training)
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
    except TrainingDiverged as e:
        if debug:
            raise
        print(f"pyvae {args.command}: error: {e}", file=sys.stderr)
        return 1
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
