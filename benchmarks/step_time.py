"""Training speed: pyvae's Trainer vs a hand-written PyTorch VAE vs a Pyro-tutorial-style loop.

All of them compute the same single-sample reparameterised ELBO with the same nets and Adam.
  * torch:    benchmarks/torch_reference.py (no Pyro), one torch.optim.Adam, data as a tensor.
  * torch-fused: the same with torch's fused Adam (``fused=True``), the update pyvae's
              optimizer uses.
  * torch-fused-same-density: torch-fused with pyvae's Bernoulli log-density
              (``pyvae.models.likelihoods.bernoulli_log_density``, cheaper than torch's softplus
              on the CPU): the same arithmetic as pyvae's step, so the ratio to it is Pyro's
              overhead alone.
  * tutorial: the loop of Pyro's VAE tutorial: DataLoader over a TensorDataset, pyro.optim.Adam,
              ``svi.step`` per batch, Pyro's validation left on (its default).
  * pyvae:    ``pyvae.Trainer`` as it comes (SVI + Trace_ELBO over the same model/guide
              functions; its default ``jit="auto"`` compiles the step with Pyro's JitTrace_ELBO).
  * pyvae-uncompiled: the same with ``jit="off"``.
Each repeat times one warm epoch of each, interleaved, so the machine's load hits all alike;
we report medians and the ratios per repeat, in wall time and in process CPU time (the
latter is robust to other work on a shared machine; with --threads 1 the two agree on an idle one).

    python benchmarks/step_time.py --arch burda --images 10000 --repeats 5
    python benchmarks/step_time.py --arch tutorial --images 10000 --repeats 5   # 784-400-50, batch 128
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

import pyro
from pyro.infer import SVI, Trace_ELBO

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pyvae  # noqa: E402
from torch_reference import TorchVAE  # noqa: E402
from pyvae.models.likelihoods import bernoulli_log_density  # noqa: E402

ARCHS = {"burda": dict(hidden=(200, 200), z_dim=50, batch=100),
         "tutorial": dict(hidden=(400,), z_dim=50, batch=128)}


def load_images(n, real):
    if real:
        return pyvae.load_dataset("mnist", "train", download=False, binarize="none").x[:n]
    return torch.rand(torch.Size([n, 784]), generator=torch.Generator().manual_seed(0))


class Clock:
    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def elapsed(self):
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def epoch_torch(x, arch, fused=False, log_density=None):
    vae = TorchVAE(784, arch["z_dim"], arch["hidden"], log_density=log_density)
    optim = torch.optim.Adam(vae.parameters(), lr=1e-3, fused=fused or None)

    def one_epoch():
        order = torch.randperm(x.shape[0])
        total = torch.zeros(())
        for s in range(0, x.shape[0], arch["batch"]):
            xb = torch.bernoulli(x[order[s:s + arch["batch"]]])
            loss = -vae.elbo(xb).sum()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            total += loss.detach()
        return float(total)
    one_epoch()  # warm-up
    clock = Clock()
    one_epoch()
    return clock.elapsed()


def epoch_torch_fused(x, arch):
    return epoch_torch(x, arch, fused=True)


def epoch_torch_same_density(x, arch):
    return epoch_torch(x, arch, fused=True, log_density=bernoulli_log_density)


def epoch_tutorial(x, arch):
    pyro.clear_param_store()
    vae = pyvae.VAE(784, arch["z_dim"], arch["hidden"])
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=arch["batch"],
                                         shuffle=True)

    def one_epoch():
        total = 0.0
        for (xb,) in loader:
            total += svi.step(torch.bernoulli(xb))
        return total
    one_epoch()
    clock = Clock()
    one_epoch()
    return clock.elapsed()


def epoch_pyvae(x, arch, jit="auto"):
    vae = pyvae.VAE(784, arch["z_dim"], arch["hidden"])
    clocks = []
    trainer = pyvae.Trainer(vae, batch_size=arch["batch"], epochs=2, progress=False, jit=jit,
                            callbacks=[lambda trainer, record: clocks.append(Clock())])
    trainer.fit(pyvae.TensorData(x, binarize="dynamic"))
    first, second = clocks
    return second.wall - first.wall, second.cpu - first.cpu


def epoch_pyvae_uncompiled(x, arch):
    return epoch_pyvae(x, arch, jit="off")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=sorted(ARCHS), default="burda")
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--real-mnist", action="store_true", help="use real MNIST pixels (needs the data)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    arch = ARCHS[args.arch]
    x = load_images(args.images, args.real_mnist)
    runners = {"torch": epoch_torch, "torch-fused": epoch_torch_fused,
               "torch-fused-same-density": epoch_torch_same_density, "tutorial": epoch_tutorial,
               "pyvae": epoch_pyvae, "pyvae-uncompiled": epoch_pyvae_uncompiled}
    runs = {name: [] for name in runners}
    for r in range(args.repeats):
        for name, fn in runners.items():
            runs[name].append(fn(x, arch))
        print(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1][0]:.2f}s wall/{v[-1][1]:.2f}s cpu"
                                              for k, v in runs.items()), flush=True)
    med, ratios = {}, {}
    for i, clock in enumerate(("wall", "cpu")):
        med[clock] = {k: statistics.median(t[i] for t in v) for k, v in runs.items()}
        ratio = lambda a, b: statistics.median(p[i] / q[i] for p, q in zip(runs[a], runs[b]))
        ratios[clock] = {"pyvae/torch": ratio("pyvae", "torch"),
                         "pyvae/torch-fused": ratio("pyvae", "torch-fused"),
                         "pyvae/torch-fused-same-density": ratio("pyvae", "torch-fused-same-density"),
                         "pyvae-uncompiled/torch": ratio("pyvae-uncompiled", "torch"),
                         "pyvae-uncompiled/torch-fused": ratio("pyvae-uncompiled", "torch-fused"),
                         "tutorial/torch": ratio("tutorial", "torch"),
                         "tutorial/pyvae": ratio("tutorial", "pyvae")}
    info = {"machine": platform.machine(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "pyro": pyro.__version__, "arch": args.arch, "images": args.images,
            "batch": arch["batch"], "repeats": args.repeats}
    print(json.dumps({"info": info, "median_epoch_seconds": med, "median_ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
