"""``pyvae bdmc``: log p(x) sandwiched by forward and reverse AIS on data simulated from a run's
model, as a table or JSON, written to RUN_DIR/bdmc.json."""
import json

import torch

from ..run import BDMC, Run
from .flags import add_runtime_flags, int_list_type, positive_int, seed_type


def add_parser(sub) -> None:
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


def cmd_bdmc(args) -> int:
    run = Run(args.run_dir)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = run.bdmc(args.steps, args.chains, args.num_datapoints, args.seed, args.device,
                    progress=not args.no_progress)
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    print(f"BDMC on {args.num_datapoints} datapoints simulated from the model, {args.chains} chains")
    print(f"{'steps':>7}  {'lower':>10}  {'upper':>10}  {'width (nats)':>14}  acceptance")
    for r in runs:
        print(f"{r['num_steps']:>7}  {r['lower']:>10.3f}  {r['upper']:>10.3f}  "
              f"{r['mean_width']:>7.3f} ± {r['width_stderr']:.3f}  {r['acceptance']:.2f}")
    print(f"written to {run.file(BDMC)}")
    return 0
