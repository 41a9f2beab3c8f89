"""Cost of a training step per gradient estimator: IWAE_k on MNIST-sized data, Burda's nets.

One step is ``objective.differentiable_loss(vae.model, vae.guide, x).backward()`` and an Adam
update, on a batch of 100 binarized images. The estimators are timed in turn within each
repeat (so the machine's load hits all alike); we report the median process CPU time per step
and its ratio to "reparam".

    python benchmarks/estimator_cost.py --k 5 --steps 30 --repeats 5 --threads 1
"""
import argparse
import statistics
import time

import torch

import pyro

from pyvae import VAE
from pyvae.objectives import make_objective


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--estimators", default="reparam,stl,dreg")
    parser.add_argument("--guide", default="diagonal")
    parser.add_argument("--steps", type=int, default=30, help="steps per timing")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(0)
    x = torch.bernoulli(torch.rand(100, 784))
    vae = VAE(guide=args.guide)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-4)
    estimators = args.estimators.split(",")
    objectives = {e: make_objective("iwae", args.k, e) for e in estimators}
    seconds = {e: [] for e in estimators}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for e in estimators:
            started = time.process_time()
            for _ in range(args.steps):
                optimizer.zero_grad()
                objectives[e].differentiable_loss(vae.model, vae.guide, x).backward()
                optimizer.step()
            if repeat:
                seconds[e].append((time.process_time() - started) / args.steps)
    base = statistics.median(seconds[estimators[0]])
    print(f"| estimator | ms per step (CPU, median of {args.repeats}) | ratio to {estimators[0]} |")
    print("| --- | ---: | ---: |")
    for e in estimators:
        m = statistics.median(seconds[e])
        print(f"| {e} | {1000 * m:.1f} | {m / base:.2f} |")


if __name__ == "__main__":
    main()
