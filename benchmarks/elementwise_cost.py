"""Cost per element of the Bernoulli log-density's passes next to the matmul that feeds it.

The importance-sampling estimator spends its time on the decoder's output layer (a GEMM) and on
log p(x|z) = x * logits - softplus(logits) over (samples x pixels) logits. This times each on a
tensor of the estimator's default chunk on the CPU (``pyvae.evaluate.ROWS_PER_CHUNK`` samples x
784 pixels, float32; ``--rows`` for others), in nanoseconds per output element, one thread by
default:

    python benchmarks/elementwise_cost.py

It then adds up what one importance sample of Burda's decoder (50 -> 200 -> 200 -> 784, tanh)
must cost at the least: its three matmuls at the estimator's shapes, tanh over its 400 hidden
units and pyvae's log-density (``bernoulli_log_density``) over its 784 logits, and divides the decoder's matmul FLOPs by that
time and by the rate of a 2048^3 matmul (``iw_loglik.gemm_flops``, the reference of that
benchmark's "fraction of GEMM"). That is the
highest "fraction of GEMM" any estimator built from these torch ops could reach here.
"""
import argparse
import os
import platform
import sys

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from iw_loglik import gemm_flops  # noqa: E402
from pyvae.evaluate import ROWS_PER_CHUNK  # noqa: E402
from pyvae.models.likelihoods import bernoulli_log_density  # noqa: E402


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
    p.add_argument("--rows", type=int, default=ROWS_PER_CHUNK)
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
        "pyvae's bernoulli_log_density, summed over pixels": lambda: bernoulli_log_density(logits, x).sum(-1),
    }
    print(f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{args.rows} x 784 float32")
    timings = {}
    for name, fn in rows.items():
        timings[name] = ns_per_element(fn, n)
        print(f"  {name:<48} {timings[name]:6.2f} ns/element")
    print(f"  GEMM rate: {2 * 200 / timings['output-layer GEMM (200 -> 784)']:.1f} GFLOP/s")

    # the ceiling: one sample's decoder at the estimator's shapes, nothing else
    big_rate = gemm_flops()
    layers, matmul_ns, flops = [(50, 200), (200, 200), (200, 784)], 0.0, 0
    for fan_in, fan_out in layers:
        inputs = torch.randn(args.rows, fan_in, generator=g)
        w, b = torch.randn(fan_out, fan_in, generator=g), torch.randn(fan_out, generator=g)
        ns = ns_per_element(lambda: torch.addmm(b, inputs, w.T), args.rows)  # per sample
        matmul_ns += ns
        flops += 2 * fan_in * fan_out
        print(f"  decoder layer {fan_in:>3} -> {fan_out:<3} (addmm)                     "
              f"{2 * fan_in * fan_out / ns:6.1f} GFLOP/s")
    tanh_ns = 400 * timings["tanh"]
    density_ns = 784 * timings["pyvae's bernoulli_log_density, summed over pixels"]
    print(f"  2048^3 matmul                                    {big_rate / 1e9:6.1f} GFLOP/s")
    print(f"  per sample: matmuls {matmul_ns / 1e3:.2f} us, tanh {tanh_ns / 1e3:.2f} us, "
          f"log-density {density_ns / 1e3:.2f} us")
    for name, ns in [("matmuls alone", matmul_ns), ("+ tanh", matmul_ns + tanh_ns),
                     ("+ tanh + log-density", matmul_ns + tanh_ns + density_ns)]:
        print(f"  ceiling on the fraction of 2048^3 GEMM, {name:<22} {flops / ns / (big_rate / 1e9):6.1%}")


if __name__ == "__main__":
    main()
