"""``pyvae bdmc``: log p(x) sandwiched by forward and reverse AIS on data simulated from a run's
model, as a table or JSON, written to RUN_DIR/bdmc.json, with the smallest number of steps
whose width is within the tolerance."""
import json
import sys

import torch

from ..infer.ais import BDMC_TOLERANCE, NUM_CHAINS, recommend_steps
from ..run import Run
from ..run.bdmc import NUM_DATAPOINTS, STEPS
from ..training.evalrun import locked
from .flags import add_runtime_flags, int_list_type, positive_int, progress_of, seed_type


def add_parser(sub) -> None:
    bd = sub.add_parser("bdmc", help="sandwich log p(x) on data simulated from a run's model (BDMC)", description=(
        "Bidirectional Monte Carlo: simulate datapoints from the run's model, bound log p(x) from "
        "below by forward AIS and from above by reverse AIS from the exact latents; the gap between "
        "the bounds says how far AIS with these settings can be from log p(x). Names the smallest "
        "number of steps whose width is within --tolerance. Writes RUN_DIR/bdmc.json."))
    bd.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by pyvae train")
    bd.add_argument("--num-datapoints", type=positive_int, default=NUM_DATAPOINTS, help=f"datapoints simulated (default {NUM_DATAPOINTS})")
    bd.add_argument("--steps", type=int_list_type, default=list(STEPS), help=f"AIS steps, one run each, e.g. 100,1000 (default {','.join(map(str, STEPS))})")
    bd.add_argument("--chains", type=positive_int, default=NUM_CHAINS, help=f"chains per datapoint (default {NUM_CHAINS})")
    # checked by recommend_steps before any work (one ConfigError line, exit 2)
    bd.add_argument("--tolerance", type=float, default=BDMC_TOLERANCE,
                    help=f"the mean width (nats) that counts as enough steps (default {BDMC_TOLERANCE})")
    bd.add_argument("--seed", type=seed_type, default=0, help="seeds the simulation and the chains (default 0)")
    bd.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    add_runtime_flags(bd, "device", "threads", "no-progress", "debug")
    bd.set_defaults(func=cmd_bdmc)


def cmd_bdmc(args) -> int:
    run = Run(args.run_dir)
    if args.threads:
        torch.set_num_threads(args.threads)
    # the run's writer lock while its weights are read and bdmc.json is written: a run
    # replaced meanwhile (train --overwrite) cannot receive the bounds of the old weights
    with locked(args.run_dir):
        return _bdmc(run, args)


def _bdmc(run, args) -> int:
    runs = run.bdmc(args.steps, args.chains, args.num_datapoints, args.seed, args.device,
                    progress=progress_of(args), write=False, tolerance=args.tolerance)
    recommended = recommend_steps({r["num_steps"]: r["mean_width"] for r in runs}, args.tolerance)
    # printed first: a disk too full for bdmc.json does not lose the bounds
    if args.json:
        print(json.dumps({"runs": runs, "tolerance": args.tolerance,
                          "recommended_steps": recommended}, indent=2), flush=True)
        run.write_bdmc(runs, args.seed, args.tolerance)
        return 0
    print(f"BDMC on {args.num_datapoints} datapoints simulated from the model, {args.chains} chains")
    print(f"{'steps':>7}  {'lower':>10}  {'upper':>10}  {'width (nats)':>14}  acceptance  "
          f"low chain ESS (lower/upper)")
    for r in runs:
        print(f"{r['num_steps']:>7}  {r['lower']:>10.3f}  {r['upper']:>10.3f}  "
              f"{r['mean_width']:>7.3f} ± {r['width_stderr']:.3f}  {r['acceptance']:>10.2f}  "
              f"{r['lower_unreliable']}/{r['upper_unreliable']} of {r['num_datapoints']}")
    if recommended is None:
        print(f"no step count in {','.join(str(r['num_steps']) for r in runs)} reaches a width "
              f"within {args.tolerance:g} nats: try more steps (or a larger --tolerance)")
    else:
        print(f"{recommended} steps give a width within {args.tolerance:g} nats: pass "
              f"--ais-steps {recommended} --ais-chains {args.chains} to pyvae evaluate --ais")
    sys.stdout.flush()
    print(f"written to {run.write_bdmc(runs, args.seed, args.tolerance)}")
    return 0
