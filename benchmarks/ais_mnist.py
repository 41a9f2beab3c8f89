"""AIS against importance sampling on MNIST test images of a trained run, per datapoint.

    python benchmarks/ais_mnist.py RUN_DIR --num 100 --ais-steps 1000 --ais-chains 16 \
        --num-samples 5000 --out RUN_DIR/ais_vs_iw.json

Loads the run as ``pyvae evaluate`` does (test split binarized once, seed 0), then writes, for
the first ``--num`` test images: log p^ by IW (K samples from the guide, with ESS and Pareto k),
log p^ by AIS from the guide, and both timings.
"""
import argparse
import json
import os
import platform
import time

import pyro
import torch

from pyvae import Run, evaluate
from pyvae.infer.ais import ais


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--num", type=int, default=100)
    p.add_argument("--ais-steps", type=int, default=1000)
    p.add_argument("--ais-chains", type=int, default=16)
    p.add_argument("--num-samples", type=int, default=5000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=os.path.expanduser("~/.cache/pyvae-data"))
    p.add_argument("--skip-ais", action="store_true")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run = Run(args.run_dir)
    vae, epoch = run.load_vae(), run.checkpoint["epoch"]
    data = run.data("test", args.data_dir, download=False)
    x = data.batch(torch.arange(args.num), torch.Generator().manual_seed(0))
    out = {"run_dir": args.run_dir, "epoch": epoch, "num": args.num,
           "threads": args.threads, "machine": platform.processor() or platform.machine()}
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    t = time.perf_counter()
    ll = evaluate.log_likelihood(vae.model, vae.guide, x, num_samples=args.num_samples,
                                 progress=False)
    out["iw"] = {"K": args.num_samples, "seconds": time.perf_counter() - t,
                 "value": ll.value.tolist(), "stderr": ll.stderr.tolist(),
                 "ess": ll.ess.tolist(), "elbo": ll.elbo.tolist()}
    if getattr(ll, "khat", None) is not None:
        out["iw"]["khat"] = ll.khat.tolist()
    if not args.skip_ais:
        t = time.perf_counter()
        res = ais(vae.model, vae.guide, x, num_steps=args.ais_steps, num_chains=args.ais_chains,
                  seed=0, progress=True)
        out["ais"] = {"steps": args.ais_steps, "chains": args.ais_chains,
                      "seconds": time.perf_counter() - t, "value": res.value.tolist(),
                      "stderr": res.stderr.tolist(), "acceptance": res.acceptance.tolist(),
                      "step_size": res.step_size.tolist()}
    with open(args.out, "w") as f:
        json.dump(out, f)
    print(json.dumps({k: v for k, v in out.items() if not isinstance(v, dict)}))
    for key in ("iw", "ais"):
        if key in out:
            v = torch.tensor(out[key]["value"])
            print(key, "mean", float(v.mean()), "seconds", out[key]["seconds"])


if __name__ == "__main__":
    main()
