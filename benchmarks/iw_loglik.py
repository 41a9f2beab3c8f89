"""Speed of the importance-weighted log-likelihood estimate, ``pyvae.evaluate.log_likelihood``,
against a hand-written PyTorch estimator of the same math, on MNIST test images.

All compute, per image, log p^(x) = logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K
with z_k = mu(x) + sigma(x) * eps_k, in chunks of samples, accumulating in float64 (sums of w and
w^2 for the ESS and standard error). Three estimators:
  * pyvae:         ``log_likelihood(vae.model, vae.guide, ...)``: for pyvae's own VAE the weights
                   come from ``VAE.log_weights`` (the model and guide written out, no tracing);
  * pyvae-generic: the same model and guide passed as plain functions, as a user's model would
                   be: Pyro traces them under a particle plate;
  * hand-written:  the fastest plain-PyTorch form we know: the encoder once per batch of images,
                   log q from the noise eps, the Bernoulli log-density as x*l - softplus(l) with
                   softplus(l) = max(l, 0) + log(1 + exp(-|l|)) (torch's CPU softplus, log-sigmoid
                   and BCE-with-logits kernels are several times slower, elementwise_cost.py),
                   the same chunk size, the streaming logsumexp only (pyvae also keeps the ELBO's sums and the largest weights for k^).

Reported, from one process:
  * samples/s of each and their ratios (pyvae / hand-written; 1.0 means no overhead);
  * the machine's GEMM FLOP/s (a large float32 matmul timed here) and the fraction of it the
    decoder's matmuls reach inside each estimator (2 * (50*200 + 200*200 + 200*784) FLOP per sample);
  * peak resident memory above the baseline for several chunk sizes (one subprocess each, RSS
    sampled every 0.5 ms).

    python benchmarks/iw_loglik.py                           # K=5000 over the 10,000 test images
    python benchmarks/iw_loglik.py --num-images 200 --run /tmp/burda10
"""
import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

import torch

import pyro

from pyvae import Run, VAE, evaluate
from pyvae.data import load_dataset

LOG_2PI = math.log(2 * math.pi)


def build(run, seed):
    if run:
        vae = Run(run).load_vae()
    else:  # untrained Burda et al. 784-200-200-50 tanh: the cost is the same
        torch.manual_seed(seed)
        vae = VAE(784, 50, (200, 200), "tanh")
    return vae.eval()


def load_images(n, data_dir, seed):
    return load_dataset("mnist", "test", data_dir=data_dir, download=False, seed=seed).x[:n]


@torch.no_grad()
def handwritten(encoder, decoder, x, num_samples, chunk, batch):
    """The same estimator in plain PyTorch; returns (log p^(x), ESS), shape (N,)."""
    out, ess = [], []
    for start in range(0, x.shape[0], batch):
        xb = x[start:start + batch]
        loc, log_scale = encoder(xb).chunk(2, dim=-1)
        scale = log_scale.exp()
        log_q_const = -log_scale.sum(-1) - 0.5 * LOG_2PI * loc.shape[-1]
        m = torch.full((xb.shape[0],), -math.inf, dtype=torch.float64)
        s1 = torch.zeros(xb.shape[0], dtype=torch.float64)
        s2 = torch.zeros_like(s1)
        done = 0
        while done < num_samples:
            c = min(chunk, num_samples - done)
            eps = torch.randn(c, *loc.shape)
            z = loc + scale * eps
            logits = decoder(z)
            softplus = logits.clamp(min=0) + torch.log(torch.exp(-logits.abs()) + 1)
            log_px_z = (xb * logits - softplus).sum(-1)      # Bernoulli
            log_pz = -0.5 * (z.square().sum(-1) + LOG_2PI * z.shape[-1])
            log_qz = log_q_const - 0.5 * eps.square().sum(-1)
            lw = (log_px_z + log_pz - log_qz).double()
            m_new = torch.maximum(m, lw.max(0).values)
            rescale = torch.exp(m - m_new)
            w = torch.exp(lw - m_new)
            s1 = s1 * rescale + w.sum(0)
            s2 = s2 * rescale.square() + w.square().sum(0)
            m = m_new
            done += c
        out.append(m + s1.log() - math.log(num_samples))
        ess.append(s1.square() / s2)
    return torch.cat(out), torch.cat(ess)


def gemm_flops(seconds=2.0, n=2048):
    """Measured float32 matmul FLOP/s (n x n times n x n, best of repeated runs)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best, started = math.inf, time.perf_counter()
    while time.perf_counter() - started < seconds:
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def decoder_flops_per_sample(vae):
    return sum(2 * m.in_features * m.out_features for m in vae.decoder.modules()
               if isinstance(m, torch.nn.Linear))


def peak_memory_child(args):
    """Run one estimate in this process; print the resident-set growth it caused (bytes)."""
    torch.set_num_threads(args.threads)
    vae = build(args.run, args.seed)
    # random binary images: the cost does not depend on the pixel values, and loading the data
    # set would raise the peak before the measurement starts
    x = torch.bernoulli(torch.full((args.batch_size, vae.x_dim), 0.2),
                        generator=torch.Generator().manual_seed(args.seed))
    evaluate.log_likelihood(vae.model, vae.guide, x, 2, chunk_size=1, batch_size=args.batch_size,
                            progress=False)
    # ru_maxrss only rises, and import-time peaks can hide a chunk's: sample the current RSS
    # from /proc every half millisecond while the estimate runs (torch ops release the GIL)
    before = _rss()
    peak, running = [before], [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], _rss())
            time.sleep(0.0005)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    evaluate.log_likelihood(vae.model, vae.guide, x, 3 * args.memory_child,
                            chunk_size=args.memory_child, batch_size=args.batch_size, progress=False)
    running[0] = False
    thread.join()
    print(json.dumps({"chunk": args.memory_child, "peak_bytes": peak[0] - before}))


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-images", type=int, default=10000, help="MNIST test images (default 10000)")
    p.add_argument("--num-samples", type=int, default=5000, help="K (default 5000)")
    p.add_argument("--batch-size", type=int, default=100, help="images per pass (default 100)")
    p.add_argument("--chunk-size", type=int, default=None, help="samples per pass (default pyvae's: 4000 / batch on the CPU)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each estimator (default 3)")
    p.add_argument("--memory-chunks", default="50,200,500,1000", help="chunk sizes for the memory table")
    p.add_argument("--run", default=None, help="a pyvae run directory (default: an untrained Burda VAE)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        return peak_memory_child(args)

    torch.set_num_threads(args.threads)
    vae = build(args.run, args.seed)
    x = load_images(args.num_images, args.data_dir, args.seed)
    chunk = args.chunk_size or max(1, min(args.num_samples, evaluate.default_rows("cpu") // args.batch_size))
    samples = x.shape[0] * args.num_samples
    encoder_net = vae.encoder.net

    # wall-clock and process CPU seconds: on a shared machine the CPU time (with one thread) is
    # what the estimator itself costs; the wall clock also counts waiting for a core
    def user_model(x):  # the same functions, not recognisable as a pyvae VAE's own
        return vae.model(x)

    def user_guide(x):
        return vae.guide(x)

    estimate = lambda model, guide: lambda: evaluate.log_likelihood(
        model, guide, x, args.num_samples, chunk_size=chunk, batch_size=args.batch_size,
        progress=False)
    runs = {
        "pyvae": estimate(vae.model, vae.guide),
        "pyvae-generic": estimate(user_model, user_guide),
        "handwritten": lambda: handwritten(encoder_net, vae.decoder, x, args.num_samples, chunk,
                                           args.batch_size),
    }
    times = {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    results = {}
    for r in range(args.repeats):  # interleaved, so drifts in machine load hit both alike
        for name, run in runs.items():
            pyro.set_rng_seed(args.seed + r)
            t, c = time.perf_counter(), time.process_time()
            results[name] = run()
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    gemm = gemm_flops()
    per_sample = decoder_flops_per_sample(vae)
    best = {k: min(v) for k, v in times.items()}
    ours, ref = results["pyvae"], results["handwritten"]
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"torch {torch.__version__}, {args.threads} thread(s)",
        "num_images": x.shape[0], "num_samples": args.num_samples, "batch_size": args.batch_size,
        "chunk_size": chunk, "run": args.run,
        "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "samples_per_s": {k: samples / b for k, b in best.items()},
        "ratio_pyvae_to_handwritten": best["handwritten"] / best["pyvae"],
        "ratio_median": statistics.median(times["handwritten"]) / statistics.median(times["pyvae"]),
        "cpu_seconds": {k: [round(t, 3) for t in v] for k, v in cpu.items()},
        "cpu_samples_per_s": {k: samples / min(v) for k, v in cpu.items()},
        "cpu_ratio_pyvae_to_handwritten": min(cpu["handwritten"]) / min(cpu["pyvae"]),
        # per repeat (interleaved, so the same load), then the median over repeats
        "cpu_ratio_median": {k: statistics.median(h / p for h, p in zip(cpu["handwritten"], cpu[k]))
                             for k in ("pyvae", "pyvae-generic")},
        "gemm_flops": gemm,
        "decoder_flops_per_sample": per_sample,
        "fraction_of_gemm": {k: samples * per_sample / b / gemm for k, b in best.items()},
        "log_px_mean": {"pyvae": ours.mean, "pyvae-generic": results["pyvae-generic"].mean,
                        "handwritten": float(ref[0].mean())},
        "log_px_stderr_pyvae": ours.mean_stderr,
        "ess_mean": {"pyvae": float(ours.ess.mean()), "handwritten": float(ref[1].mean())},
    }
    memory = []
    for c in [int(c) for c in args.memory_chunks.split(",") if c]:
        cmd = [sys.executable, __file__, "--memory-child", str(c), "--batch-size", str(args.batch_size),
               "--threads", str(args.threads), "--seed", str(args.seed)]
        if args.run:
            cmd += ["--run", args.run]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        row["decoder_output_bytes"] = c * args.batch_size * 784 * 4
        memory.append(row)
    report["peak_memory"] = memory
    print(json.dumps(report, indent=2))
    print(f"\nCPU time: pyvae {report['cpu_samples_per_s']['pyvae']:.0f} samples/s, pyvae-generic "
          f"{report['cpu_samples_per_s']['pyvae-generic']:.0f}, hand-written "
          f"{report['cpu_samples_per_s']['handwritten']:.0f}: ratios to hand-written (median of "
          f"per-repeat ratios) pyvae {report['cpu_ratio_median']['pyvae']:.3f}, pyvae-generic "
          f"{report['cpu_ratio_median']['pyvae-generic']:.3f}")
    print(f"wall clock: pyvae {report['samples_per_s']['pyvae']:.0f} samples/s, hand-written "
          f"{report['samples_per_s']['handwritten']:.0f} samples/s: ratio "
          f"{report['ratio_pyvae_to_handwritten']:.3f} (median {report['ratio_median']:.3f}); GEMM "
          f"{gemm / 1e9:.1f} GFLOP/s, decoder matmuls at {report['fraction_of_gemm']['pyvae']:.1%} "
          f"(pyvae) / {report['fraction_of_gemm']['handwritten']:.1%} (hand-written) of it")
    print("chunk  batch  decoder output  peak RSS growth")
    for row in memory:
        print(f"{row['chunk']:>5}  {args.batch_size:>5}  {row['decoder_output_bytes'] / 2**20:>10.1f} MiB"
              f"  {row['peak_bytes'] / 2**20:>10.1f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
