"""``pyvae compare``: one VAE per variational family, trained with the same seed, data and
decoder (or guides fitted to a trained run's frozen decoder), evaluated side by side; or, with
``--runs``, trained runs side by side from their kept evaluations."""
import shlex

from ..models.config import ModelConfig
from ..training.config import DataConfig, TrainConfig
from ..data import load_split, load_train_valid
from ..errors import ConfigError
from ..reports.compare import compare, compare_runs
from ..run import Run
from .data import recorded_data_config
from .flags import (DATA_FLAGS, MODEL_FLAGS, TRAIN_FLAGS, add_config_flags,
                    add_runtime_flags, given_flags, guide_flags, int_list_type, positive_int,
                    progress_of, refuse_given)

# the training options a comparison shares between its families
COMPARE_TRAIN_OPTIONS = ("lr", "batch_size", "seed")
# the model options: every one but the family, which --guides names
COMPARE_MODEL_FLAGS = [f for f in MODEL_FLAGS if f.name != "guide"]
COMPARE_TRAIN_FLAGS = [f for f in TRAIN_FLAGS if f.name in COMPARE_TRAIN_OPTIONS]


def add_parser(sub) -> None:
    cmp = sub.add_parser("compare", help="train and evaluate one VAE per variational family", description=(
        "Train one VAE per variational family with the same seed, data and decoder architecture "
        "(or, with --shared-decoder, fit only guides to a trained run's frozen decoder), then "
        "measure on test data the ELBO, IWAE_k, the log-likelihood estimate log p(x) and the gap "
        "between them; writes OUT/compare.md, compare.csv, compare.json, gap.png, curves.png and "
        "one run directory per family. With --runs, the same report of runs already trained "
        "and evaluated, from their kept evaluations."))
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
    cmp.add_argument("--refine-size", type=positive_int, default=None, help="with --refine-steps: test datapoints refined (default 100)")
    cmp.add_argument("--runs", metavar="DIR1,DIR2,...", default=None, help=(
        "compare these trained runs from their kept evaluations instead: nothing is trained or "
        "evaluated; only --out, --overwrite and --evaluation go with it"))
    cmp.add_argument("--evaluation", metavar="NAME", default=None, help=(
        "with --runs: the kept evaluation read from every run, by file name or number, e.g. "
        "0002 (default: each run's latest); their split, K and datapoints must agree"))
    add_runtime_flags(cmp, "device", "threads", "data-dir", "no-download", "no-progress", "debug")
    add_config_flags(cmp, COMPARE_MODEL_FLAGS)
    add_config_flags(cmp, guide_flags())  # each family gets the options it takes
    add_config_flags(cmp, COMPARE_TRAIN_FLAGS)
    add_config_flags(cmp, DATA_FLAGS)
    cmp.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    if args.runs is not None:
        return compare_trained_runs(args)
    if args.evaluation is not None:
        raise ConfigError("--evaluation goes with --runs (a comparison that trains its families "
                          "evaluates them itself)")
    guides = [g.strip() for g in args.guides.split(",") if g.strip()]
    training = TrainConfig(**given_flags(args, COMPARE_TRAIN_FLAGS))
    model = ModelConfig(**given_flags(args, COMPARE_MODEL_FLAGS))
    data_cfg = DataConfig(**given_flags(args, DATA_FLAGS)).to_dict()
    if args.shared_decoder:
        given = given_flags(args, COMPARE_MODEL_FLAGS)
        if given:
            raise ConfigError(f"--shared-decoder takes the model from its run; drop "
                              f"{', '.join('--' + k.replace('_', '-') for k in given)}")
        run_cfg = Run(args.shared_decoder).config
        if run_cfg.model is None:
            raise ConfigError(f"--shared-decoder {args.shared_decoder}: its config.json records no "
                              "model (\"vae\"), so its decoder cannot be rebuilt")
        # the run's data unless data flags are given
        data_cfg = {**run_cfg.data.to_dict(), **given_flags(args, DATA_FLAGS)}
        model = run_cfg.model
    data_cfg["seed"] = training.seed
    download = not args.no_download
    data_cfg = recorded_data_config(DataConfig(**data_cfg), model.likelihood, args.data_dir)
    train, valid = load_train_valid(data_cfg, args.data_dir, download)
    test = load_split(data_cfg, "test", args.data_dir, download)
    given = " ".join(
        f"--{k.replace('_', '-')}" + ("" if v is True else " " + shlex.quote(
            ",".join(map(str, v)) if isinstance(v, list) else str(v)))
        for k, v in vars(args).items()
        if k not in ("command", "func", "debug", "given") and v not in (None, False)
        and not (k == "guides"))
    command = f"pyvae compare --guides {','.join(guides)} {given}"
    compare(guides, train, test, valid, epochs=args.epochs, num_samples=args.num_samples,
            iwae_k=args.iwae_k, test_size=args.test_size, out=args.out,
            shared_decoder=args.shared_decoder, common_guide_options=given_flags(args, guide_flags()),
            refine_steps=args.refine_steps, refine_size=args.refine_size, ais_steps=args.ais_steps,
            num_threads=args.threads, device=args.device, progress=progress_of(args),
            overwrite=args.overwrite, data_config=data_cfg, command=command, log=print,
            model=model, training=training)  # its last line names every file it wrote
    return 0


def compare_trained_runs(args) -> int:
    """``pyvae compare --runs DIR1,DIR2 --out OUT [--evaluation NAME]``: the runs' kept
    evaluations side by side (``pyvae.reports.compare.compare_runs``).

    Args:
        args: the parsed command line (``runs``, ``out``, ``evaluation``, ``overwrite``).
    """
    refuse_given(args, ("runs", "out", "overwrite", "evaluation"), (
        "with --runs: trained runs are compared from their kept evaluations, nothing is trained "
        "or evaluated"))
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    command = " ".join(["pyvae compare --runs", shlex.quote(",".join(runs)), "--out",
                        shlex.quote(args.out)]
                       + (["--evaluation", shlex.quote(args.evaluation)] if args.evaluation else [])
                       + (["--overwrite"] if args.overwrite else []))
    compare_runs(runs, out=args.out, evaluation=args.evaluation, overwrite=args.overwrite,
                 command=command, log=print)
    return 0
