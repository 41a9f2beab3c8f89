"""pyvae.infer.hmc: the transitions AIS uses leave each intermediate target invariant, per
datapoint, and adapt each datapoint's step size on its own. Analytic targets: per datapoint a
Gaussian p and the start q0 = N(0, 1), so f_beta = q0^(1 - beta) p^beta is a Gaussian with
precision (1 - beta) + beta / s^2 and mean (beta mu / s^2) / precision."""
import pytest
import torch
from torch.distributions import Normal

from pyvae.infer.hmc import HMC, TARGET_ACCEPTANCE


class Gaussians:
    """The target interface HMC expects, for z of shape (chains, datapoints, dim)."""

    def __init__(self, loc, scale):
        self.loc, self.scale = loc.double(), scale.double()

    def evaluate(self, u):
        with torch.enable_grad():
            z = u["z"].detach().requires_grad_()
            log_p = Normal(self.loc[:, None], self.scale[:, None]).log_prob(z).sum(-1)
            log_q = Normal(0.0, 1.0).log_prob(z).sum(-1)
            grad_p, = torch.autograd.grad(log_p.sum(), z)
            grad_q, = torch.autograd.grad(log_q.sum(), z)
        zero = torch.zeros_like(log_p)
        return (log_p.detach(), log_q.detach(), zero,
                {"z": grad_p}, {"z": grad_q}, {"z": torch.zeros_like(z)})

    def broadcast(self, name, per_cn, like):
        return per_cn.reshape(per_cn.shape + (1,) * (like.dim() - 2))

    def per_cn(self, name, t):
        return t.sum(-1)


def _exact(target, beta):
    precision = (1 - beta) + beta / target.scale ** 2
    return beta * target.loc / target.scale ** 2 / precision, precision.rsqrt()


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_transitions_keep_each_datapoints_target(beta):
    torch.manual_seed(0)
    target = Gaussians(torch.tensor([1.5, -3.0]), torch.tensor([0.1, 2.0]))
    mean, sd = _exact(target, beta)
    chains, dim = 1000, 2
    u = {"z": (mean[:, None] + sd[:, None] * torch.randn(chains, 2, dim, dtype=torch.float64))}
    hmc = HMC(target, n=2, step_size=0.5, leapfrog_steps=5, device="cpu")
    state = target.evaluate(u)
    for _ in range(120):
        u, state = hmc.transition(u, state, beta)
    z = u["z"]
    # started at the exact target, the chains stay there: mean within 5 standard errors, sd
    # within 10% (1000 x 2 draws per datapoint)
    err = sd[:, None] / (chains ** 0.5)
    assert ((z.mean(0) - mean[:, None]).abs() < 5 * err).all(), (z.mean(0), mean)
    torch.testing.assert_close(z.std(0), sd[:, None].expand(2, dim), rtol=0.1, atol=0)
    # each datapoint's step follows its own target: the narrow one takes the smaller steps
    assert hmc.step[0] < 0.5 * hmc.step[1]
    # and has kept the acceptance rate it aims at (the mean over the transitions)
    rate = hmc.accept_sum / hmc.transitions
    assert ((rate - TARGET_ACCEPTANCE).abs() < 0.15).all(), rate
