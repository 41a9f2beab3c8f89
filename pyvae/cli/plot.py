"""``pyvae plot``: the figures of a training run or of a comparison."""
import os
import sys

from ..reports.compare_dir import REPORT
from ..reports.plots import plot_run
from .flags import add_runtime_flags, positive_int, seed_type


#: the flags that choose a run's data and points, and their defaults
DATA_POINT_FLAGS = {"split": "test", "num_points": 2000, "seed": 0, "data_dir": None,
                    "no_download": False}


def add_parser(sub) -> None:
    plot = sub.add_parser("plot", help="draw the figures of a run or a comparison", description=(
        "Draw figures: for a training run, training curves, reconstructions, prior samples, the "
        "latent scatter (PCA when z-dim > 2), interpolations, the 2-D latent manifold (z-dim 2) and "
        "a kept evaluation's estimates, ESS, Pareto k and KL per dimension; "
        "for a directory written by `pyvae compare`, the gap plot and training curves."))
    plot.add_argument("run_dir", metavar="RUN_DIR", help="a run directory or a comparison directory")
    plot.add_argument("--out", default=None, help="where to write the figures (default RUN_DIR/figures)")
    plot.add_argument("--format", dest="fmt", default="png", choices=["png", "pdf", "svg"], help="default png")
    plot.add_argument("--split", default=DATA_POINT_FLAGS["split"], help="data split to draw from: test (default), valid, train")
    plot.add_argument("--num-points", type=positive_int, default=DATA_POINT_FLAGS["num_points"], help="datapoints in the latent scatter (default 2000)")
    plot.add_argument("--seed", type=seed_type, default=DATA_POINT_FLAGS["seed"], help="picks the datapoints shown and draws the samples (default 0)")
    plot.add_argument("--evaluation", metavar="NAME", default=None, help=(
        "the kept evaluation drawn to evaluation.FMT: its file name under RUN_DIR/evaluations/ "
        "or its number, e.g. 0003 (default: the latest; none for a run not evaluated yet)"))
    add_runtime_flags(plot, "data-dir", "no-download", "debug")
    plot.set_defaults(func=cmd_plot)


def cmd_plot(args) -> int:
    if os.path.isfile(os.path.join(args.run_dir, REPORT)):  # harmless where ignored: a note
        ignored = ["--" + k.replace("_", "-") for k, v in DATA_POINT_FLAGS.items()
                   if getattr(args, k) != v]
        if ignored:
            print(f"note: {', '.join(ignored)} do not apply to a comparison's figures (drawn "
                  "from compare.json); ignored", file=sys.stderr)
    written = plot_run(args.run_dir, out=args.out, fmt=args.fmt, split=args.split,
                       data_dir=args.data_dir, download=not args.no_download,
                       num_points=args.num_points, seed=args.seed, evaluation=args.evaluation)
    for path in written:
        print(path)
    return 0
