"""Helpers for tests that drive pyvae through its command line and read what it leaves on disk.

Only public surfaces are used: ``pyvae.cli.main``, the run directory's files (config.json,
metrics.jsonl, eval.json, compare.json, checkpoint.pt read with ``torch.load(weights_only=True)``),
``pyvae.VAE`` and the model's Pyro functions ``model(x)``/``guide(x)``.
"""
import json
import math
import os

import pyro.poutine as poutine
import torch

import pyvae
from pyvae.cli import main


def binary_rows(n, x_dim=12, seed=123, prototypes=4, flip=0.1):
    """n binary vectors from a few prototypes with flipped bits: learnable and tiny."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.bernoulli(torch.full((prototypes, x_dim), 0.5), generator=g)
    labels = torch.randint(0, prototypes, (n,), generator=g)
    flips = torch.bernoulli(torch.full((n, x_dim), flip), generator=g)
    return (protos[labels] + flips) % 2, labels


def write_data(path, x, labels=None):
    torch.save({"x": x} if labels is None else {"x": x, "labels": labels}, str(path))
    return str(path)


def cli(*args):
    """``pyvae ARGS`` in this process; its exit status (argparse's SystemExit included)."""
    try:
        return main([str(a) for a in args])
    except SystemExit as e:
        return e.code


def train(out, data_file, *flags, epochs=1):
    """A run trained by ``pyvae train`` on a data file; its directory."""
    code = cli("train", "--data-file", data_file, "--out", out, "--epochs", epochs,
               "--no-progress", *flags)
    assert code == 0, f"pyvae train exited {code}"
    return str(out)


def file_contents(directory):
    """Every file under ``directory``: {path relative to it: its bytes}."""
    out = {}
    for root, _dirs, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = f.read()
    return out


def read_json(path):
    with open(path) as f:
        return json.load(f)


def config(run_dir):
    return read_json(os.path.join(run_dir, "config.json"))


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def without_seconds(records):
    if isinstance(records, dict):
        return {k: v for k, v in records.items() if "seconds" not in k}
    return [without_seconds(r) for r in records]


def checkpoint(run_dir):
    return torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)


def load_vae(run_dir):
    """The trained VAE of a run directory, rebuilt from its checkpoint."""
    if hasattr(pyvae, "Run"):
        return pyvae.Run(run_dir).load_vae()
    payload = checkpoint(run_dir)
    vae = pyvae.VAE.from_config(payload["vae_config"])
    vae.load_state_dict(payload["model_state"])
    return vae.eval()


def data_rows(data_file, valid_size, split):
    """The rows of a data file that ``split`` names (a file's "test" rows are its last
    ``valid_size`` rows, as its "valid" rows are), with binarize "none"."""
    x = torch.load(data_file, weights_only=True)["x"]
    cut = x.shape[0] - valid_size
    return x[:cut] if split == "train" else x[cut:]


# ----------------------------------------------------------------------------- quadrature
def site_log_prob(fn, x, z, site):
    """Per-row log-density of ``site`` in the Pyro function ``fn(x)`` with z fixed to ``z``."""
    trace = poutine.trace(poutine.condition(fn, data={"z": z})).get_trace(x)
    trace.compute_log_prob()
    return trace.nodes[site]["log_prob"].to(torch.float64)


class Quadrature:
    """Exact (to quadrature accuracy) integrals over a 2-D latent on a regular grid.

    For each datapoint x_n, with log w(z) = log p(x_n, z) - log q(z | x_n) evaluated on an
    ``m`` x ``m`` grid over [-half, half]^2:

        log p(x)          = log  integral p(x, z) dz
        elbo              =      integral q(z|x) log w(z) dz
        Var_q[log w]      =      integral q(z|x) (log w - elbo)^2 dz

    (Not E_q[w^2]: where q's tails are lighter than p(z|x)'s it diverges, and the ESS and the
    delta-method error of log p^(x) are then checked against replicate draws instead.)
    """

    def __init__(self, vae, x, half=7.0, m=281):
        assert vae.z_dim == 2
        t = torch.linspace(-half, half, m, dtype=torch.float64)
        za, zb = torch.meshgrid(t, t, indexing="ij")
        grid = torch.stack([za.reshape(-1), zb.reshape(-1)], 1).float()
        log_cell = 2 * math.log(float(t[1] - t[0]))
        g = grid.shape[0]
        rows = []
        with torch.no_grad():
            for xn in x:
                xs = xn.expand(g, -1)
                log_joint = (site_log_prob(vae.model, xs, grid, "x") + site_log_prob(vae.model, xs, grid, "z"))
                log_q = site_log_prob(vae.guide, xs, grid, "z")
                log_w = log_joint - log_q
                q = torch.exp(log_q + log_cell)
                log_px = torch.logsumexp(log_joint, 0) + log_cell
                elbo = (q * log_w).sum() / q.sum()
                var = (q * (log_w - elbo).square()).sum() / q.sum()
                rows.append((log_px, elbo, var, q.sum()))
        self.log_px, self.elbo, self.var_log_w, self.q_mass = (
            torch.stack(c) for c in zip(*rows))

    def elbo_stderr(self, k):
        return float((self.var_log_w / k).sum().sqrt() / len(self.elbo))
