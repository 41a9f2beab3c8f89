"""Cost per element of the Bernoulli log-density's passes next to the matmul that feeds it.

The importance-sampling estimator spends its time on the decoder's output layer (a GEMM) and on
log p(x|z) = x * logits - softplus(logits) over (samples x pixels) logits. This times each on a
tensor of the estimator's default chunk (20,000 samples x 784 pixels, float32), in nanoseconds
per output element, one thread by default:

    python benchmarks/elementwise_cost.py
"""
import argparse
import platform

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer


def ns_per_element(fn, numel, repeats=2):
    """Best of ``repeats`` medians, each over calls filling half a second."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        timer = Timer("fn()", globals={"fn": fn})
        best = min(best, timer.blocked_autorange(min_run_time=0.5).median)
    return 1e9 * best / numel


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(args.rows, 784, generator=g)
    x = torch.bernoulli(torch.full((784,), 0.3), generator=g).expand(args.rows, 784)
    hidden = torch.randn(args.rows, 200, generator=g)
    weight = torch.randn(784, 200, generator=g)
    n = logits.numel()
    rows = {
        "output-layer GEMM (200 -> 784)": lambda: hidden @ weight.T,
        "softplus": lambda: F.softplus(logits),
        "log1p": lambda: torch.log1p(logits.abs()),
        "log": lambda: torch.log(logits.abs()),
        "exp": lambda: torch.exp(logits),
        "tanh": lambda: torch.tanh(logits),
        "multiply": lambda: x * logits,
        "x*l - softplus(l), summed over pixels": lambda: (x * logits - F.softplus(logits)).sum(-1),
        "max(l,0) + log(1+exp(-|l|)) (softplus by hand)":
            lambda: logits.clamp_min(0) + torch.log(1 + torch.exp(-logits.abs())),
    }
    print(f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{args.rows} x 784 float32")
    for name, fn in rows.items():
        print(f"  {name:<48} {ns_per_element(fn, n):6.2f} ns/element")
    gemm = ns_per_element(rows["output-layer GEMM (200 -> 784)"], n)
    print(f"  GEMM rate: {2 * 200 / gemm:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
