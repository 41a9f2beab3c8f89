"""Your own Pyro VAE, trained with plain SVI and measured by pyvae: log p(x), AIS, the gap split.

    python examples/own_model.py                       # synthetic binary data, about a minute
    python examples/own_model.py --data-file data.pt   # a torch.save({"x": x}) of binary rows
    python examples/own_model.py --guide iaf           # a pyvae guide family as the encoder

The model is written as Pyro's examples/vae/vae.py writes it: its own nn.Module decoder
registered with pyro.module, sites "latent" and "obs", Bernoulli pixels. pyvae needs nothing
else from it than a plate named "data" over the rows of x.
"""
import argparse

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from torch import nn

import pyvae
from pyvae import evaluate


class Decoder(nn.Module):
    def __init__(self, z_dim, hidden_dim, x_dim):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z_dim, hidden_dim), nn.Softplus(),
                                 nn.Linear(hidden_dim, x_dim), nn.Sigmoid())

    def forward(self, z):
        return self.net(z)


class Encoder(nn.Module):
    def __init__(self, z_dim, hidden_dim, x_dim):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(x_dim, hidden_dim), nn.Softplus())
        self.loc, self.log_scale = nn.Linear(hidden_dim, z_dim), nn.Linear(hidden_dim, z_dim)

    def forward(self, x):
        h = self.body(x)
        return dist.Normal(self.loc(h), self.log_scale(h).exp()).to_event(1)


class MyVAE(nn.Module):
    """p(z) = N(0, I), p(x|z) = Bernoulli(decoder(z)); q(z|x) = encoder(x), any module that
    returns a distribution over z (the example's own Gaussian, or a pyvae guide family)."""

    def __init__(self, x_dim, z_dim, hidden_dim, encoder=None):
        super().__init__()
        self.z_dim = z_dim
        self.decoder = Decoder(z_dim, hidden_dim, x_dim)
        self.encoder = encoder if encoder is not None else Encoder(z_dim, hidden_dim, x_dim)

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1))
            pyro.sample("obs", dist.Bernoulli(self.decoder(z), validate_args=False).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("latent", self.encoder(x))


def synthetic(n, x_dim, seed=0):
    """Binary rows near four random prototypes (each pixel flipped with probability 0.1)."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.bernoulli(torch.full((4, x_dim), 0.5), generator=g)
    labels = torch.randint(0, 4, (n,), generator=g)
    return (prototypes[labels] + torch.bernoulli(torch.full((n, x_dim), 0.1), generator=g)) % 2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-file", help="a .pt file holding {'x': (N, x_dim) binary tensor}")
    parser.add_argument("--guide", default="own",
                        help="'own' (the example's encoder) or a pyvae family, e.g. iaf")
    parser.add_argument("--z-dim", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2000, help="SVI steps (default 2000)")
    parser.add_argument("--eval-size", type=int, default=20, help="rows evaluated (default 20)")
    parser.add_argument("--num-samples", type=int, default=2000, help="IW samples K")
    parser.add_argument("--ais-steps", type=int, default=500)
    parser.add_argument("--refine-steps", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = torch.load(args.data_file, weights_only=True)["x"].float() if args.data_file else synthetic(1000, 16)
    x_dim = x.shape[1]

    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    encoder = None if args.guide == "own" else pyvae.guides.make_guide(
        args.guide, x_dim, args.z_dim, hidden=(args.hidden,))
    vae = MyVAE(x_dim, args.z_dim, args.hidden, encoder)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    for step in range(args.steps):
        batch = x[torch.randint(0, len(x), (100,))]
        loss = svi.step(batch)
    print(f"after {args.steps} SVI steps: ELBO of the last batch {-loss / 100:.2f} nats")

    xe = x[:args.eval_size]
    ll = pyvae.log_likelihood(vae.model, vae.guide, xe, num_samples=args.num_samples,
                              progress=False, seed=0)
    print(f"IW log p(x)     {ll.mean:8.3f} ± {ll.mean_stderr:.3f}   (ELBO {ll.summary()['elbo']:.3f})")
    a = pyvae.ais(vae.model, vae.guide, xe, num_steps=args.ais_steps, num_chains=16,
                  progress=False, seed=0)
    print(f"AIS log p(x)    {a.mean:8.3f} ± {a.mean_stderr:.3f}")
    refined = pyvae.refine(vae.model, xe, init=vae.guide, family="full-rank",
                           steps=args.refine_steps, lr=0.05, lr_final=0.002, seed=0)
    g = evaluate.gaps(vae.model, vae.guide, xe, num_samples=args.num_samples, elbo_samples=1000,
                      refined_guide=refined, progress=False).summary()
    print(f"refined ELBO    {g['elbo_refined']:8.3f} ± {g['elbo_refined_stderr']:.3f}")
    print(f"approximation gap {g['approximation_gap']:6.3f} ± {g['approximation_gap_stderr']:.3f}")
    print(f"amortization gap  {g['amortization_gap']:6.3f} ± {g['amortization_gap_stderr']:.3f}")


if __name__ == "__main__":
    main()
