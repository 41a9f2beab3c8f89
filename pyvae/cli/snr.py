"""``pyvae snr``: the signal-to-noise ratio of a run's gradients against k, as a table,
RUN_DIR/snr.json and a figure."""
import json
import os

import torch

from ..training.config import TrainConfig
from ..infer.diagnostics import snr_table
from ..reports.plots import plot_snr
from ..run import FIGURES, SNR, Run
from ..training.evalrun import locked
from .flags import SNR_FLAGS, add_config_flags, add_runtime_flags, given_flags, int_list_type, \
    positive_int, seed_type


def add_parser(sub) -> None:
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


def cmd_snr(args) -> int:
    # checked against --loss: an option the loss does not take is refused
    options = TrainConfig(loss=args.loss, **given_flags(args, SNR_FLAGS))
    options.refuse_options_of_other_losses(args.given)
    run = Run(args.run_dir)
    if args.threads:
        torch.set_num_threads(args.threads)
    with locked(args.run_dir):  # as bdmc: snr.json belongs to the weights it measured
        return _snr(run, args, options)


def _snr(run, args, options: TrainConfig) -> int:
    rows = run.snr(args.k, [e.strip() for e in args.estimator.split(",") if e.strip()], args.loss,
                   options.groups, options.ciwae_beta, args.repeats, args.batch_size, args.split,
                   args.data_dir, args.seed, args.device, not args.no_download, log=print)
    with open(run.file(SNR)) as f:  # the batch as measured: at most --batch-size datapoints
        n = json.load(f)["batch_size"]
    plot_snr(rows, args.plot or run.file(os.path.join(FIGURES, "snr.png")),
             title=f"{args.loss}, {n} {args.split} datapoints, {args.repeats} draws")
    print(snr_table(rows) + f"\nwrote {run.file(SNR)} and the figure")
    return 0
