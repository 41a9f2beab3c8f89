"""A VAE written in plain PyTorch: the same nets, the same single-sample reparameterised ELBO,
no Pyro. The yardstick for pyvae's quality and speed.

    ELBO(x) ~= log p(x|z) + log p(z) - log q(z|x),   z = mu(x) + sigma(x) * eps,  eps ~ N(0, I)

which is what Pyro's Trace_ELBO computes for ``pyvae.VAE`` with a diagonal guide.

    python benchmarks/torch_reference.py --epochs 10            # Burda et al. 784-200-200-50, tanh
"""
import argparse
import json
import math
import platform
import time

import torch
import torch.nn.functional as F

from pyvae.data import load_dataset
from pyvae.nets import MLP

LOG_2PI = math.log(2 * math.pi)


class TorchVAE(torch.nn.Module):
    """``log_density(logits, x)``: the Bernoulli log-density per pixel; by default torch's
    softplus form, as a PyTorch user writes it."""

    def __init__(self, x_dim=784, z_dim=50, hidden=(200, 200), activation="tanh",
                 log_density=None):
        super().__init__()
        self.encoder = MLP(x_dim, hidden, 2 * z_dim, activation)
        self.decoder = MLP(z_dim, tuple(hidden)[::-1], x_dim, activation)
        self.log_density = log_density or (lambda logits, x: x * logits - F.softplus(logits))

    def elbo(self, x):
        """Per-datapoint single-sample ELBO estimate, shape (batch,)."""
        loc, log_scale = self.encoder(x).chunk(2, dim=-1)
        eps = torch.randn_like(loc)
        z = loc + log_scale.exp() * eps
        logits = self.decoder(z)
        log_px_z = self.log_density(logits, x).sum(-1)
        log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
        log_qz = -0.5 * (eps.pow(2) + LOG_2PI).sum(-1) - log_scale.sum(-1)
        return log_px_z + log_pz - log_qz


def train(epochs=10, batch_size=100, lr=1e-3, seed=0, hidden=(200, 200), z_dim=50,
          activation="tanh", data_dir=None, threads=None, log=print):
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    train_set = load_dataset("mnist", "train", data_dir=data_dir, download=False, seed=seed)
    valid_set = load_dataset("mnist", "valid", data_dir=data_dir, download=False, seed=seed)
    vae = TorchVAE(784, z_dim, hidden, activation)
    optim = torch.optim.Adam(vae.parameters(), lr=lr)
    history = []
    n = len(train_set)
    for epoch in range(epochs):
        started = time.perf_counter()
        order = torch.randperm(n)
        total = torch.zeros(())
        for start in range(0, n, batch_size):
            x = torch.bernoulli(train_set.x[order[start:start + batch_size]])
            loss = -vae.elbo(x).sum()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            total += loss.detach()
        seconds = time.perf_counter() - started
        with torch.no_grad():
            valid_elbo = sum(float(vae.elbo(valid_set.x[i:i + 1000]).sum())
                             for i in range(0, len(valid_set), 1000)) / len(valid_set)
        record = {"epoch": epoch + 1, "train_elbo": -float(total) / n, "valid_elbo": valid_elbo,
                  "seconds": seconds}
        history.append(record)
        log(json.dumps(record))
    return history


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    train(args.epochs, args.batch_size, args.lr, args.seed, data_dir=args.data_dir, threads=args.threads)


if __name__ == "__main__":
    main()
