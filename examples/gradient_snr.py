"""Gradient SNR against k on the linear-Gaussian model, at a near-optimal guide.

    python examples/gradient_snr.py --out docs/figures/snr-linear-gaussian.png

The model z ~ N(0, I_2), x | z ~ N(W z + b, 0.5^2 I_5) has a learnable bias b (the decoder side);
the guide q(z|x) = N(A x + c, diag s^2) (the encoder side) starts at the best mean-field
Gaussian: A x + c is the exact posterior mean and s_i^2 = 1 / Lambda_ii, with Lambda the
posterior precision. For IWAE_k the standard estimator's encoder SNR falls with k while the
decoder's rises (Rainforth et al. 2018); DReG's encoder SNR rises too (Tucker et al. 2018).
"""
import argparse

import torch

import pyro
import pyro.distributions as dist

from pyvae.diagnostics import gradient_snr, snr_table
from pyvae.plots import plot_snr
from pyvae.linear_gaussian import LinearGaussian
from pyvae.objectives import IWAE


def model_and_guide(lg, x):
    post = lg.posterior(x)
    # the posterior mean is linear in x: mu = (x - b) W S^T / sigma^2
    gain = lg.weight @ post.covariance_matrix[0].T / lg.sigma ** 2
    precision = torch.linalg.inv(post.covariance_matrix[0])

    def model(x):
        bias = pyro.param("decoder_bias", lg.bias.clone())
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", lg.prior())
            pyro.sample("x", dist.Normal(z @ lg.weight.T + bias, lg.sigma).to_event(1), obs=x)

    def guide(x):
        a = pyro.param("encoder_gain", gain.clone())
        c = pyro.param("encoder_offset", -lg.bias @ gain)
        log_s = pyro.param("encoder_log_scale", -0.5 * precision.diagonal().log())
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ a + c, log_s.exp()).to_event(1))

    return model, guide


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", default="1,4,16,64,256", help="comma-separated k (default 1,4,16,64,256)")
    parser.add_argument("--estimators", default="reparam,stl,dreg")
    parser.add_argument("--repeats", type=int, default=200, help="gradient draws per point (default 200)")
    parser.add_argument("--datapoints", type=int, default=20)
    parser.add_argument("--out", default="snr-linear-gaussian.png", help="figure path")
    args = parser.parse_args(argv)

    lg = LinearGaussian.random(x_dim=5, z_dim=2, sigma=0.5, seed=0)
    x = lg.sample(args.datapoints, seed=1)
    rows = []
    for k in [int(v) for v in args.k.split(",")]:
        for estimator in args.estimators.split(","):
            pyro.clear_param_store()
            model, guide = model_and_guide(lg, x)
            result = gradient_snr((model, guide), x, IWAE(k, estimator), repeats=args.repeats)
            rows.append(dict(k=k, estimator=estimator, **result.summary()))
    print(snr_table(rows))
    plot_snr(rows, args.out, title=f"linear-Gaussian, IWAE_k, {args.datapoints} datapoints, "
                                   f"{args.repeats} draws")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
