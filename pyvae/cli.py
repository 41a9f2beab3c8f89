"""The ``pyvae`` command line: ``pyvae train``, ``pyvae evaluate``, ...

Bad input prints one line on stderr and exits with status 2 (``--debug`` shows the traceback).
"""
import os
import sys

from .cli_flags import (DATA_FLAGS, GUIDE_FLAGS, MODEL_FLAGS, SNR_FLAGS, TRAIN_FLAGS, Parser,
                        add_runtime_flags, given_flags, int_list_type, positive_int, seed_type,
                        add_config_flags)
from .config import DataConfig, ModelConfig, TrainConfig
from .errors import ConfigError, TrainingDiverged, TrainingInterrupted

# the training options a comparison shares between its families
COMPARE_TRAIN_OPTIONS = ("lr", "batch_size", "seed")


def _build_parser():
    parser = Parser(prog="pyvae", description="Variational autoencoders in Pyro: train, evaluate, compare.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
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
    add_runtime_flags(train, "device", "data-dir", "no-download", "threads", "no-progress", "debug")
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
    plot.add_argument("--num-points", type=positive_int, default=2000, help="datapoints in the latent scatter (default 2000)")
    plot.add_argument("--seed", type=seed_type, default=0, help="picks the datapoints shown (default 0)")
    add_runtime_flags(plot, "data-dir", "no-download", "debug")
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
    cmp.add_argument("--num-samples", type=positive_int, default=1000, help="importance samples K for log p(x) (default 1000)")
    cmp.add_argument("--iwae-k", type=int_list_type, default=None, help="k of the IWAE_k bounds, each < K (default 5,50: those below K)")
    cmp.add_argument("--test-size", type=positive_int, default=None, help="evaluate on the first N test datapoints (default all)")
    cmp.add_argument("--shared-decoder", metavar="RUN_DIR", default=None, help="fit only guides to this run's frozen decoder")
    cmp.add_argument("--refine-steps", type=int, default=0, help="split the gap of every family into approximation and amortization gaps with this many refinement steps (default 0: off)")
    cmp.add_argument("--ais-steps", type=int, default=0, help="with --refine-steps: log p(x) of the split by AIS with this many steps, 16 chains (default 0: the IW estimate)")
    cmp.add_argument("--refine-size", type=positive_int, default=100, help="test datapoints refined (default 100)")
    add_runtime_flags(cmp, "device", "threads", "data-dir", "no-download", "no-progress", "debug")
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
    ev.add_argument("--num-samples", type=positive_int, default=5000, help="importance samples K per datapoint (default 5000)")
    ev.add_argument("--split", default="test", help="test (default), valid, train")
    ev.add_argument("--chunk-size", type=positive_int, default=None, help="samples drawn per pass (default: about 4000 / batch size on the CPU, 20000 / batch size on CUDA)")
    ev.add_argument("--batch-size", type=positive_int, default=100, help="datapoints per pass (default 100)")
    ev.add_argument("--max-datapoints", type=positive_int, default=None, help="evaluate only the first N datapoints")
    ev.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    ev.add_argument("--seed", type=seed_type, default=0, help="seeds the importance samples (default 0)")
    ev.add_argument("--ais", action="store_true", help="also estimate log p(x) by annealed importance sampling from the guide (pyvae.ais)")
    ev.add_argument("--ais-steps", type=positive_int, default=1000, help="AIS annealing steps (default 1000)")
    ev.add_argument("--ais-chains", type=positive_int, default=16, help="AIS chains per datapoint (default 16)")
    ev.add_argument("--distributed", action="store_true", help=(
        "under torchrun (`torchrun ... -m pyvae evaluate RUN_DIR` and this flag): share the "
        "batches over its processes, with the numbers of one process and no progress file"))
    ev.add_argument("--backend", choices=("gloo", "nccl"), default=None, help=(
        "with --distributed: gloo (default on the CPU) or nccl (default with --device cuda)"))
    add_runtime_flags(ev, "device", "threads", "data-dir", "no-download", "no-progress", "debug")
    ev.set_defaults(func=cmd_evaluate)

    snr = sub.add_parser("snr", help="signal-to-noise ratio of a run's gradients against k", description=(
        "Mean per-parameter SNR |E g| / std g of the encoder's and decoder's gradients on one fixed "
        "batch, for each k and estimator; prints a table, writes RUN_DIR/snr.json and a plot."))
    snr.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by pyvae train")
    snr.add_argument("--k", type=int_list_type, default=[1, 5, 50], help="particles per bound (default 1,5,50)")
    snr.add_argument("--estimator", default="reparam,dreg", help="comma-separated estimators (default reparam,dreg)")
    snr.add_argument("--loss", default="iwae", help="iwae (default), miwae, ciwae or piwae")
    add_config_flags(snr, SNR_FLAGS)
    snr.add_argument("--repeats", type=positive_int, default=100, help="gradient draws per setting (default 100)")
    snr.add_argument("--batch-size", type=positive_int, default=100, help="datapoints in the fixed batch (default 100)")
    snr.add_argument("--split", default="test", help="where the batch comes from: test (default), valid, train")
    snr.add_argument("--plot", default=None, help="figure path (default RUN_DIR/figures/snr.png)")
    snr.add_argument("--seed", type=seed_type, default=0, help="seeds the draws (default 0)")
    add_runtime_flags(snr, "device", "threads", "data-dir", "no-download", "debug")
    snr.set_defaults(func=cmd_snr)
    bd = sub.add_parser("bdmc", help="sandwich log p(x) on data simulated from a run's model (BDMC)", description=(
        "Bidirectional Monte Carlo: simulate datapoints from the run's model, bound log p(x) from "
        "below by forward AIS and from above by reverse AIS from the exact latents; the gap between "
        "the bounds says how far AIS with these settings can be from log p(x). Writes RUN_DIR/bdmc.json."))
    bd.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by pyvae train")
    bd.add_argument("--num-datapoints", type=positive_int, default=10, help="datapoints simulated (default 10)")
    bd.add_argument("--steps", type=int_list_type, default=[1000], help="AIS steps, one run each, e.g. 100,1000 (default 1000)")
    bd.add_argument("--chains", type=positive_int, default=16, help="chains per datapoint (default 16)")
    bd.add_argument("--seed", type=seed_type, default=0, help="seeds the simulation and the chains (default 0)")
    bd.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    add_runtime_flags(bd, "device", "threads", "no-progress", "debug")
    bd.set_defaults(func=cmd_bdmc)
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
    from .cli_support import absolute_data_paths, check_resume_flags, epoch_line
    from .data import load_split, load_train_valid
    from .models.vae import VAE
    from .training.callbacks import as_callback
    from .training.rundir import check_new
    from .training.trainer import Trainer

    given = {**given_flags(args, MODEL_FLAGS), **given_flags(args, GUIDE_FLAGS), **given_flags(args, TRAIN_FLAGS),
             **given_flags(args, DATA_FLAGS)}
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
        check_new(args.out, args.overwrite)  # before the data are loaded
        model = ModelConfig.from_dict({**given_flags(args, MODEL_FLAGS), **given_flags(args, GUIDE_FLAGS)})
        training = TrainConfig(**given_flags(args, TRAIN_FLAGS), num_threads=args.threads,
                               **({} if args.epochs is None else {"epochs": args.epochs}))
        data = DataConfig(**given_flags(args, DATA_FLAGS), seed=training.seed)
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
    from .training.distributed import joined
    from .training.evalrun import locked

    run = Run(args.run_dir)
    if args.threads:
        torch.set_num_threads(args.threads)
    with joined(args.distributed, args.device, args.backend) as ddp, locked(args.run_dir, ddp):
        main = ddp is None or ddp.is_main  # with --distributed, rank 0 reports and writes
        result = run.evaluate(args.split, args.num_samples, args.max_datapoints, args.data_dir,
                              args.seed, args.device if ddp is None else ddp.device,
                              chunk_size=args.chunk_size, batch_size=args.batch_size,
                              progress=main and not args.no_progress,
                              download=not args.no_download,
                              ais_steps=args.ais_steps if args.ais else None,
                              ais_chains=args.ais_chains, write=False, resumable=ddp is None,
                              log=lambda line: print(line, file=sys.stderr), distributed=ddp)
        if not main:
            return 0
        if args.json:  # printed first: a disk too full for eval.json does not lose the numbers
            print(json.dumps(result, indent=2, sort_keys=True), flush=True)
            run.write_evaluation(result)
            return 0
        _print_eval_table(args, result)
        print(f"written to {run.write_evaluation(result)}")
    return 0


def _print_eval_table(args, result) -> None:
    n, seconds = result["num_datapoints"], result["seconds"]
    rows = [
        ("split", f"{args.split} ({n} datapoints)"),
        (f"log p(x), K={args.num_samples}", f"{result['log_px']:.3f} ± {result['log_px_stderr']:.3f} nats"),
        ("NLL", f"{result['nll']:.3f} nats ({result['bits_per_dim']:.4f} bits/dim)"),
        (f"ELBO, mean of {args.num_samples} log w", f"{result['elbo']:.3f} ± {result['elbo_stderr']:.3f} nats"),
        ("gap log p(x) - ELBO", f"{result['gap']:.3f} nats"),
        ("ESS (mean / min)", f"{result['ess_mean']:.1f} / {result['ess_min']:.1f} of {args.num_samples}"),
        ("Pareto k (max; > 0.7)", "not fitted (K too small)" if result["khat_max"] is None else
         f"{result['khat_max']:.2f}; {result['khat_over_0.7']} of {n} datapoints unreliable"),
        ("active units", f"{result['active_units']} of {result['z_dim']}"),
        ("KL(q(z|x) || p(z))", f"{result['kl']:.3f} nats"),
        ("time", f"{seconds:.1f} s"),
    ]
    if "ais_log_px" in result:
        rows[3:3] = [(f"log p(x), AIS {args.ais_steps} steps x {args.ais_chains} chains",
                      f"{result['ais_log_px']:.3f} ± {result['ais_log_px_stderr']:.3f} nats "
                      f"(AIS - IW {result['ais_minus_iw']:+.3f}; acceptance "
                      f"{result['ais_acceptance']:.2f}; {result['ais_seconds']:.1f} s)")]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def cmd_snr(args) -> int:
    import torch

    from .infer.diagnostics import snr_table
    from .run import SNR, Run

    run, options = Run(args.run_dir), TrainConfig(**given_flags(args, SNR_FLAGS))
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run.snr(args.k, [e.strip() for e in args.estimator.split(",") if e.strip()], args.loss,
                   options.groups, options.ciwae_beta, args.repeats, args.batch_size, args.split,
                   args.data_dir, args.seed, args.device, not args.no_download, args.plot, log=print)
    print(snr_table(rows) + f"\nwrote {run.file(SNR)} and the figure")
    return 0


def cmd_bdmc(args) -> int:
    import json

    import torch

    from .run import Run

    run = Run(args.run_dir)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = run.bdmc(args.steps, args.chains, args.num_datapoints, args.seed, args.device,
                    progress=not args.no_progress, write=False)
    # printed first: a disk too full for bdmc.json does not lose the bounds
    if args.json:
        print(json.dumps(runs, indent=2), flush=True)
        run.write_bdmc(runs, args.seed)
        return 0
    print(f"BDMC on {args.num_datapoints} datapoints simulated from the model, {args.chains} chains")
    print(f"{'steps':>7}  {'lower':>10}  {'upper':>10}  {'width (nats)':>14}  acceptance")
    for r in runs:
        print(f"{r['num_steps']:>7}  {r['lower']:>10.3f}  {r['upper']:>10.3f}  "
              f"{r['mean_width']:>7.3f} ± {r['width_stderr']:.3f}  {r['acceptance']:.2f}")
    sys.stdout.flush()
    print(f"written to {run.write_bdmc(runs, args.seed)}")
    return 0


def cmd_compare(args) -> int:
    import shlex

    from .reports.compare import compare
    from .data import load_split, load_train_valid

    guides = [g.strip() for g in args.guides.split(",") if g.strip()]
    model_flags = [f for f in MODEL_FLAGS if f.name != "guide"]
    training = TrainConfig(**given_flags(args, [f for f in TRAIN_FLAGS if f.name in COMPARE_TRAIN_OPTIONS]))
    model = ModelConfig(**given_flags(args, model_flags))
    data_cfg = DataConfig(**given_flags(args, DATA_FLAGS)).to_dict()
    if args.shared_decoder:
        from .run import Run

        given = given_flags(args, model_flags)
        if given:
            raise ConfigError(f"--shared-decoder takes the model from its run; drop "
                              f"{', '.join('--' + k.replace('_', '-') for k in given)}")
        run_cfg = Run(args.shared_decoder).config
        # the run's data unless data flags are given
        data_cfg = {**run_cfg.data.to_dict(), **given_flags(args, DATA_FLAGS)}
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
            shared_decoder=args.shared_decoder, common_guide_options=given_flags(args, GUIDE_FLAGS),
            refine_steps=args.refine_steps, refine_size=args.refine_size, ais_steps=args.ais_steps,
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
