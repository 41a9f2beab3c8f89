"""``pyvae evaluate``: the importance-weighted log-likelihood of a trained run (and AIS), as a
table or JSON, written to RUN_DIR/eval.json; resumable, or shared over torchrun's processes."""
import json
import os
import sys

import torch

from ..errors import ConfigError
from ..infer.ais import MIN_CHAIN_ESS
from ..infer.evaluate import NUM_SAMPLES
from ..run import Run
from ..run.evaluation import AIS_CHAINS, AIS_STEPS, BATCH_SIZE
from ..training.checkpoint import EVALUATIONS
from ..training.distributed import joined
from ..training.evalrun import locked
from .flags import add_runtime_flags, positive_int, progress_of, refuse_given, seed_type

#: where the documentation says what an unreliable datapoint's estimate means and what to do
UNRELIABLE_DOCS = "docs/evaluation.md#when-to-trust-which-estimate"


def add_parser(sub) -> None:
    ev = sub.add_parser("evaluate", help="importance-weighted log-likelihood of a trained run", description=(
        "Estimate log p(x) per datapoint by importance sampling with the run's guide "
        "(logsumexp_k log w_k - log K), with its standard error, the ELBO, the gap between them, "
        "active units and KL; prints a table, keeps it under RUN_DIR/evaluations/ and writes "
        "RUN_DIR/eval.json (the latest)."))
    ev.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by pyvae train")
    ev.add_argument("--num-samples", type=positive_int, default=NUM_SAMPLES, help=f"importance samples K per datapoint (default {NUM_SAMPLES})")
    ev.add_argument("--split", default="test", help="test (default), valid, train")
    ev.add_argument("--chunk-size", type=positive_int, default=None, help="samples drawn per pass (default: about 4000 / batch size on the CPU, 20000 / batch size on CUDA)")
    ev.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE, help=f"datapoints per pass (default {BATCH_SIZE})")
    ev.add_argument("--max-datapoints", type=positive_int, default=None, help="evaluate only the first N datapoints")
    ev.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    ev.add_argument("--seed", type=seed_type, default=0, help="seeds the importance samples (default 0)")
    ev.add_argument("--ais", action="store_true", help="also estimate log p(x) by annealed importance sampling from the guide (pyvae.ais)")
    ev.add_argument("--ais-steps", type=positive_int, default=None, help=f"with --ais: AIS annealing steps (default {AIS_STEPS})")
    ev.add_argument("--ais-chains", type=positive_int, default=None, help=f"with --ais: AIS chains per datapoint (default {AIS_CHAINS})")
    ev.add_argument("--distributed", action="store_true", help=(
        "under torchrun (`torchrun ... -m pyvae evaluate RUN_DIR` and this flag): share the "
        "batches over its processes, with the numbers of one process and no progress file"))
    ev.add_argument("--backend", choices=("gloo", "nccl"), default=None, help=(
        "with --distributed: gloo (default on the CPU) or nccl (default with --device cuda)"))
    ev.add_argument("--list", action="store_true", help=(
        "list the run's kept evaluations (name, written, split, K, n, AIS steps, log p(x)), "
        "oldest first, and evaluate nothing; with --json, their index entries"))
    add_runtime_flags(ev, "device", "threads", "data-dir", "no-download", "no-progress", "debug")
    ev.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    if args.list:
        refuse_given(args, ("run_dir", "list", "json"), "with --list (it lists the kept "
                     "evaluations and evaluates nothing)")
        return list_evaluations(args)
    if not args.ais:  # an AIS setting without --ais would be ignored: refused
        given = [f for f, v in (("--ais-steps", args.ais_steps), ("--ais-chains", args.ais_chains))
                 if v is not None]
        if given:
            raise ConfigError(f"{given[0]} goes with --ais")
    args.ais_steps = AIS_STEPS if args.ais_steps is None else args.ais_steps
    args.ais_chains = AIS_CHAINS if args.ais_chains is None else args.ais_chains
    run = Run(args.run_dir)
    if args.threads:
        torch.set_num_threads(args.threads)
    with joined(args.distributed, args.device, args.backend) as ddp, locked(args.run_dir, ddp):
        main = ddp is None or ddp.is_main  # with --distributed, rank 0 reports and writes
        result = run.evaluate(args.split, args.num_samples, args.max_datapoints, args.data_dir,
                              args.seed, args.device if ddp is None else ddp.device,
                              chunk_size=args.chunk_size, batch_size=args.batch_size,
                              progress=progress_of(args) if main else False,
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
        print_table(args, result)
        latest = run.write_evaluation(result)
        kept = os.path.join(args.run_dir, EVALUATIONS, run.evaluations()[-1]["name"])
        print(f"written to {latest} (the latest) and kept as {kept}")
    return 0


def print_table(args, result) -> None:
    n, seconds = result["num_datapoints"], result["seconds"]
    unreliable = result["khat_over_0.7"]
    times = f"importance sampling {seconds:.1f} s" + (
        f", AIS {result['ais_seconds']:.1f} s" if "ais_seconds" in result else "")
    rows = [
        ("split", f"{args.split} ({n} datapoints)"),
        (f"log p(x), K={args.num_samples}", f"{result['log_px']:.3f} ± {result['log_px_stderr']:.3f} nats"),
        ("NLL", f"{result['nll']:.3f} nats ({result['bits_per_dim']:.4f} bits/dim)"),
        (f"ELBO, mean of {args.num_samples} log w", f"{result['elbo']:.3f} ± {result['elbo_stderr']:.3f} nats"),
        ("gap log p(x) - ELBO", f"{result['gap']:.3f} nats"),
        ("ESS (mean / min)", f"{result['ess_mean']:.1f} / {result['ess_min']:.1f} of {args.num_samples}"),
        ("Pareto k (max; > 0.7)", "not fitted (K too small)" if result["khat_max"] is None else
         f"{result['khat_max']:.2f}; {unreliable} of {n} datapoints unreliable"
         + (f": certify log p(x) with pyvae evaluate {args.run_dir} --ais ({UNRELIABLE_DOCS})"
            if unreliable else "")),
        ("active units", f"{result['active_units']} of {result['z_dim']}"),
        ("KL(q(z|x) || p(z))", f"{result['kl']:.3f} nats"),
        ("time", f"{result.get('total_seconds', seconds):.1f} s in all ({times})"),
    ]
    if "ais_log_px" in result:
        rows[3:3] = [(f"log p(x), AIS {args.ais_steps} steps x {args.ais_chains} chains",
                      f"{result['ais_log_px']:.3f} ± {result['ais_log_px_stderr']:.3f} nats "
                      f"(AIS - IW {result['ais_minus_iw']:+.3f}; acceptance "
                      f"{result['ais_acceptance']:.2f}; {result['ais_seconds']:.1f} s)"),
                     (f"AIS chain ESS < {MIN_CHAIN_ESS:g}",
                      f"{result['ais_unreliable']} of {n} datapoints unreliable")]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def list_evaluations(args) -> int:
    """``pyvae evaluate RUN_DIR --list``: the kept evaluations as a table (or JSON).

    Args:
        args: the parsed command line (``run_dir``, ``json``).
    """
    entries = Run(args.run_dir).evaluations()
    if args.json:
        print(json.dumps(entries, indent=2, sort_keys=True))
    elif not entries:
        print(f"{args.run_dir} keeps no evaluation yet: pyvae evaluate {args.run_dir} makes one")
    else:
        print(evaluations_table(entries))
    return 0


def evaluations_table(entries) -> str:
    """The kept evaluations (``Run.evaluations()``), one line each: name, when written (UTC),
    split, K, datapoints, AIS steps ("–": none) and log p^(x) in nats.

    Args:
        entries: index entries, as ``Run.evaluations()`` returns them.
    """
    def cell(value, fmt="{}"):
        return "–" if value is None else fmt.format(value)

    header = ("name", "written (UTC)", "split", "K", "n", "AIS steps", "log p^(x)")
    rows = [(e["name"], cell(e.get("written")), cell(e.get("split")), cell(e.get("num_samples")),
             cell(e.get("num_datapoints")), cell(e.get("ais_steps") or None),
             cell(e.get("log_px"), "{:.3f}")) for e in entries]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths))).rstrip() for row in [header, *rows]]
    return "\n".join(lines)
