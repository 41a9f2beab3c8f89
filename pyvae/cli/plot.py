"""``pyvae plot``: the figures of a training run or of a comparison."""
from ..reports.plots import plot_run
from .flags import add_runtime_flags, positive_int, seed_type


def add_parser(sub) -> None:
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


def cmd_plot(args) -> int:
    written = plot_run(args.run_dir, out=args.out, fmt=args.fmt, split=args.split,
                       data_dir=args.data_dir, download=not args.no_download,
                       num_points=args.num_points, seed=args.seed)
    for path in written:
        print(path)
    return 0
