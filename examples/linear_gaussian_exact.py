"""The ELBO against an exact log p(x): train amortized guides on a linear-Gaussian model.

    python examples/linear_gaussian_exact.py --steps 1000

The model z ~ N(0, I), x | z ~ N(W z, sigma^2 I) has an exact log p(x) and an exact Gaussian
posterior, so every number variational inference estimates can be checked:

  * a trained diagonal q(z|x) cannot beat the best diagonal Gaussian: its gap log p(x) - ELBO is
    at least KL(q* || p(z|x)) (``LinearGaussian.best_diagonal_kl``), the approximation gap;
    what it loses beyond that is the amortization gap;
  * a trained full-rank q(z|x) can represent the exact posterior: its gap goes to 0;
  * the importance-weighted log p^(x) sits between the ELBO and the exact log p(x).
"""
import argparse

import torch

import pyro
import pyro.optim
from pyro.infer import SVI, Trace_ELBO

from pyvae import LinearGaussian, evaluate
from pyvae.guides import make_guide

W = [[1.0, 0.8], [0.8, 1.0], [1.0, 1.0]]  # the tutorial's model: two look-alike causes


def fit_guide(lg, x, family, steps, seed=0, lr=1e-2, particles=8):
    """Train an amortized q(z|x) of ``family`` by SVI against the fixed model ``lg``."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    q = make_guide(family, lg.x_dim, lg.z_dim, hidden=(32,)).double()

    def guide(x):
        pyro.module("encoder", q)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", q(x))

    svi = SVI(lg.model, guide, pyro.optim.Adam({"lr": lr}),
              Trace_ELBO(num_particles=particles, vectorize_particles=True))
    for _ in range(steps):
        svi.step(x)
    return guide


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="SVI steps per guide (default 1000)")
    parser.add_argument("--num-data", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=1000, help="K for log p^(x)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    lg = LinearGaussian(torch.tensor(W, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 0.5)
    x = lg.sample(args.num_data, seed=1)
    log_px = lg.log_marginal(x).mean().item()
    best_kl = lg.best_diagonal_kl()
    print(f"exact log p(x)                         {log_px:8.3f}")
    print(f"best diagonal ELBO, log p(x) - KL(q*|p) {log_px - best_kl:8.3f}  (KL = {best_kl:.3f})")
    for family in ("diagonal", "full-rank"):
        guide = fit_guide(lg, x, family, args.steps)
        pyro.set_rng_seed(0)
        ll = evaluate.log_likelihood(lg.model, guide, x, num_samples=args.num_samples, progress=False)
        elbo = evaluate.elbo(lg.model, guide, x, num_samples=100).mean
        print(f"{family:>9} q(z|x) after {args.steps} steps: ELBO {elbo:8.3f}, "
              f"log p^(x) {ll.mean:8.3f}, gap to exact {log_px - elbo:.3f}")
        if family == "diagonal":
            print(f"          approximation gap {best_kl:.3f} (exact) + amortization gap "
                  f"{log_px - elbo - best_kl:.3f}")


if __name__ == "__main__":
    main()
