"""The inference-gap split of a trained run on MNIST test images (Cremer, Li & Duvenaud 2018).

    python benchmarks/gap_table.py RUN_DIR --num 100 --refine-steps 1000 \
        --ais RUN_DIR/ais_vs_iw.json --out RUN_DIR/gap_table.json

For the first ``--num`` test images (binarized once, seed 0, as ``pyvae evaluate`` does):
L[q], the amortized ELBO (mean of K = 5000 log-weights); log p^ by IW (same samples); log p^ by
AIS (read from benchmarks/ais_mnist.py's output); and L[q*] for per-datapoint refined members of
the diagonal (FFG) family and of flow families (``pyvae.refine``, a fresh flow with no hidden
layers whose base starts at the encoder's Gaussian; base, context and transforms all fitted on
these images), each ELBO from 1000 samples.
"""
import argparse
import json
import os
import time

import pyro
import torch

from pyvae import Run, evaluate
from pyvae.refine import refine


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--num", type=int, default=100)
    p.add_argument("--refine-steps", type=int, default=1000)
    p.add_argument("--flows", default="iaf,planar")
    p.add_argument("--ais", default=None, help="JSON written by benchmarks/ais_mnist.py")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=os.path.expanduser("~/.cache/pyvae-data"))
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run = Run(args.run_dir)
    vae, epoch = run.load_vae(), run.checkpoint["epoch"]
    x = run.data("test", args.data_dir, download=False).batch(
        torch.arange(args.num), torch.Generator().manual_seed(0))
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    ll = evaluate.log_likelihood(vae.model, vae.guide, x, num_samples=5000, progress=False)
    out = {"num": args.num, "refine_steps": args.refine_steps, "epoch": epoch,
           "iw_log_px": ll.mean, "L_q": float(ll.elbo.mean()),
           "khat_over_0.7": int((ll.khat > 0.7).sum()), "refined": {}, "seconds": {}}
    families = [vae.config["guide"]] + [f for f in args.flows.split(",") if f]
    for family in families:
        started = time.perf_counter()
        init = vae.encode  # flows: a fresh flow whose base starts at the encoder's Gaussian
        guide = refine(vae.model, x, init=init, family=family, steps=args.refine_steps, seed=0)
        est = evaluate.elbo(vae.model, guide, x, num_samples=1000, batch_size=len(x))
        out["refined"][family] = {"elbo": est.mean, "stderr": est.mean_stderr,
                                  "per_datapoint": est.value.tolist()}
        out["seconds"][family] = time.perf_counter() - started
        print(family, est.mean, out["seconds"][family], flush=True)
    if args.ais:
        ais = json.load(open(args.ais))["ais"]
        out["ais_log_px"] = float(torch.tensor(ais["value"][:args.num]).mean())
    with open(args.out, "w") as f:
        json.dump(out, f)
    print(json.dumps({k: v for k, v in out.items() if k != "refined"}, indent=1))


if __name__ == "__main__":
    main()
