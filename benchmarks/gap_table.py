"""The inference-gap split of trained runs on MNIST test images (Cremer, Li & Duvenaud 2018, Table 2).

    python benchmarks/gap_table.py RUN_DIR [RUN_DIR ...] --num 100 --refine-steps 300 \
        --ais-steps 300 --ais-chains 8 --out gap_table.json

For each run (e.g. one trained with the diagonal (FFG) encoder and one with an IAF encoder,
same budget) and the first ``--num`` test images (binarized once, seed 0, as ``pyvae
evaluate`` does):

    L[q]          the amortized ELBO, mean of 1000 log-weights from the run's encoder
    L[q*_FFG]     ELBO of per-datapoint refined diagonal Gaussians (``pyvae.refine``), started
                  at the encoder's mean and variances
    L[q*_IAF]     ELBO of per-datapoint refined IAFs: for an IAF-trained run started at its own
                  encoder, otherwise a fresh IAF that starts as the identity around q*_FFG (so it
                  starts at L[q*_FFG] and can only improve on it, up to the optimiser's noise)
    log p^(x)     AIS (``pyvae.ais``) from q*_FFG: any q0 that can score z is a valid start, and
                  the refined diagonal is close to the posterior and cheap to score (an IAF
                  scores an arbitrary z only by its sequential inverse, z_dim passes per layer)

approximation gap = log p^(x) - L[q*], amortization gap = L[q*] - L[q] for the run's family.
Each refined ELBO from 1000 samples. The output JSON is written atomically.
"""
import argparse
import json
import os
import platform
import tempfile
import time

import pyro
import torch

from pyvae import Run, evaluate
from pyvae.infer.ais import ais
from pyvae.refine import refine


def gap_row(run_dir, args):
    run = Run(run_dir)
    vae, epoch = run.load_vae(), run.checkpoint["epoch"]
    family = vae.config["guide"]
    x = run.data("test", args.data_dir, download=False).batch(
        torch.arange(args.num), torch.Generator().manual_seed(0))
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    row = {"run_dir": run_dir, "trained_with": family, "epoch": epoch, "num": args.num,
           "seconds": {}}
    started = time.perf_counter()
    amortized = evaluate.elbo(vae.model, vae.guide, x, num_samples=1000, batch_size=len(x))
    row["L_q"], row["seconds"]["L_q"] = amortized.mean, time.perf_counter() - started
    refined = {}
    for refine_family in ("diagonal", "iaf"):
        started = time.perf_counter()
        # the diagonal family starts at the encoder's mean and variances; a flow family at the
        # run's own flow encoder if it is one, else as the identity around q*_FFG
        if refine_family == "diagonal":
            init, features = vae.encode, None
        elif refine_family == family:
            init, features = vae.encoder, vae.encoder_body(x)
        else:
            init, features = refined["diagonal"].distribution(), None
        guide = refine(vae.model, x, init=init, family=refine_family, steps=args.refine_steps,
                       seed=0, features=features)
        est = evaluate.elbo(vae.model, guide, x, num_samples=1000, batch_size=len(x))
        refined[refine_family] = guide
        row[f"L_q*_{refine_family}"] = est.mean
        row[f"L_q*_{refine_family}_stderr"] = est.mean_stderr
        row["seconds"][f"refine_{refine_family}"] = time.perf_counter() - started
        print(run_dir, refine_family, est.mean, row["seconds"][f"refine_{refine_family}"],
              flush=True)
    started = time.perf_counter()
    est = ais(vae.model, refined["diagonal"], x, num_steps=args.ais_steps,
              num_chains=args.ais_chains, seed=0, batch_size=len(x), progress=False)
    row.update(ais_log_px=est.mean, ais_stderr=est.mean_stderr,
               ais_unreliable=int(est.unreliable.sum()), ais_acceptance=float(est.acceptance.mean()))
    row["seconds"]["ais"] = time.perf_counter() - started
    own = "iaf" if family == "iaf" else "diagonal"
    row["approximation_gap"] = row["ais_log_px"] - row[f"L_q*_{own}"]
    row["amortization_gap"] = row[f"L_q*_{own}"] - row["L_q"]
    print(json.dumps(row), flush=True)
    return row


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--num", type=int, default=100)
    p.add_argument("--refine-steps", type=int, default=300)
    p.add_argument("--ais-steps", type=int, default=300)
    p.add_argument("--ais-chains", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=os.environ.get(
        "PYVAE_DATA", os.path.expanduser("~/.cache/pyvae-data")))
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    rows = [gap_row(run_dir, args) for run_dir in args.run_dirs]
    out = {"rows": rows, "refine_steps": args.refine_steps, "ais_steps": args.ais_steps,
           "ais_chains": args.ais_chains, "threads": args.threads,
           "machine": platform.processor() or platform.machine(),
           "seconds": time.perf_counter() - started}
    folder = os.path.dirname(os.path.abspath(args.out))
    with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as f:
        json.dump(out, f, indent=1)
    os.replace(f.name, args.out)


if __name__ == "__main__":
    main()
