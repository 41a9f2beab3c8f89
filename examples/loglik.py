"""Estimate log p(x) of a trained VAE by importance sampling, and the gap to its ELBO.

    pyvae train --epochs 1 --out runs/quick
    python examples/loglik.py runs/quick --num-samples 1000 --max-datapoints 500

    log p^(x) = logsumexp_k [log p(x, z_k) - log q(z_k|x)] - log K,   z_k ~ q(z|x)

is a lower bound in expectation that tightens as K grows (IWAE_K); the ELBO is the mean of the
same log-weights. Their difference estimates KL(q(z|x) || p(z|x)).
"""
import argparse
import math

import pyro
import torch

from pyvae import evaluate
from pyvae.data import load_split
from pyvae.plots import load_run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory written by pyvae train")
    parser.add_argument("--num-samples", type=int, default=1000, help="K (default 1000)")
    parser.add_argument("--max-datapoints", type=int, default=1000)
    parser.add_argument("--ks", default="1,10,100", help="k of the IWAE_k bounds to print")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    vae, config = load_run(args.run_dir)
    x = load_split(config["data"], "test").x[:args.max_datapoints]
    pyro.set_rng_seed(0)
    for k in [int(k) for k in args.ks.split(",")]:
        bound = evaluate.iwae_bound(vae.model, vae.guide, x, k=k, repeats=max(1, 100 // k))
        print(f"IWAE_{k:<6} {bound.mean:10.3f} ± {bound.mean_stderr:.3f} nats")
    ll = evaluate.log_likelihood(vae.model, vae.guide, x, num_samples=args.num_samples,
                                 progress=False)
    s = ll.summary()
    print(f"log p^(x)   {s['log_px']:10.3f} ± {s['log_px_stderr']:.3f} nats, K = {args.num_samples}, "
          f"{len(x)} test datapoints ({-s['log_px'] / (vae.x_dim * math.log(2)):.4f} bits/dim)")
    print(f"ELBO        {s['elbo']:10.3f} nats;  gap log p^(x) - ELBO = {s['log_px'] - s['elbo']:.3f}")
    print(f"ESS         {s['ess_mean']:.1f} of {args.num_samples} on average")


if __name__ == "__main__":
    main()
