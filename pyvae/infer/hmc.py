"""Hamiltonian Monte Carlo transitions for annealing (``pyvae.infer.ais``), vectorised over
(chains, datapoints): every datapoint's chains are independent Markov chains, so the
Metropolis accept/reject is per (chain, datapoint) and the leapfrog step size per datapoint,
adapted towards an acceptance rate of 0.65 (x1.02 above it, x0.98 below).

The target f_beta(u) = q0^(1 - beta) p(x, z)^beta |det dz/du| is given by an object with
``evaluate(u)`` -> (log p, log q0, log det, and their gradients), ``broadcast(name, t, like)``
and ``per_cn(name, t)`` (sum a site's per-element tensor to (chains, datapoints)).
"""
import torch

TARGET_ACCEPTANCE = 0.65
ADAPT_UP, ADAPT_DOWN = 1.02, 0.98
ACCEPTANCE_SMOOTHING = 0.9  # running acceptance rate: r <- 0.9 r + 0.1 (mean acceptance now)


class HMC:
    """Vectorised HMC over (chains, datapoints) with per-datapoint step sizes.

    The state carries log p, log q0, log det and their gradients separately, so the target
    log f_beta = (1 - beta) log q0 + beta log p + log det and its gradient are available for
    any beta without evaluating the model again.
    """

    def __init__(self, target, n: int, step_size: float, leapfrog_steps: int, device):
        self.target, self.leapfrog = target, leapfrog_steps
        kw = dict(dtype=torch.float64, device=device)
        self.step = torch.full((n,), step_size, **kw)
        self.rate = torch.full((n,), TARGET_ACCEPTANCE, **kw)
        self.accept_sum = torch.zeros(n, **kw)
        self.transitions = 0

    @staticmethod
    def log_f(state, beta):
        lp, lq, ld = state[:3]
        return (1 - beta) * lq.double() + beta * lp.double() + ld.double()

    @staticmethod
    def grad(state, beta):
        gp, gq, gd = state[3:]
        return {k: (1 - beta) * gq[k] + beta * gp[k] + gd[k] for k in gp}

    def transition(self, u, state, beta):
        """One HMC transition leaving f_beta invariant; returns the new (u, state)."""
        t = self.target
        c = state[0].shape[0]
        eps = {k: t.broadcast(k, self.step.expand(c, -1), v).to(v.dtype) for k, v in u.items()}

        def energy(st, mom):
            kinetic = sum(t.per_cn(k, 0.5 * m.double().pow(2)) for k, m in mom.items())
            return -self.log_f(st, beta) + kinetic

        momentum = {k: torch.randn_like(v) for k, v in u.items()}
        h0 = energy(state, momentum)
        g = self.grad(state, beta)
        mom = {k: momentum[k] + 0.5 * eps[k] * g[k] for k in u}
        new_u, new = u, state
        for i in range(self.leapfrog):
            new_u = {k: v + eps[k] * mom[k] for k, v in new_u.items()}
            new = t.evaluate(new_u)
            g = self.grad(new, beta)
            half = 0.5 if i == self.leapfrog - 1 else 1.0
            mom = {k: m + half * eps[k] * g[k] for k, m in mom.items()}
        h1 = energy(new, mom)
        prob = torch.exp(torch.clamp(h0 - h1, max=0.0))
        prob = torch.where(torch.isfinite(prob), prob, torch.zeros_like(prob))
        accept = torch.rand_like(prob) < prob

        def pick(a, b, name=None):
            mask = accept if name is None else t.broadcast(name, accept, a)
            return torch.where(mask, a, b)

        u = {k: pick(new_u[k], v, k) for k, v in u.items()}
        state = tuple(pick(a, b) for a, b in zip(new[:3], state[:3])) + tuple(
            {k: pick(ga[k], gb[k], k) for k in ga} for ga, gb in zip(new[3:], state[3:]))
        # per-datapoint adaptation towards TARGET_ACCEPTANCE
        now = prob.mean(0)
        self.rate = ACCEPTANCE_SMOOTHING * self.rate + (1 - ACCEPTANCE_SMOOTHING) * now
        self.step = torch.where(self.rate > TARGET_ACCEPTANCE, self.step * ADAPT_UP,
                                self.step * ADAPT_DOWN)
        self.accept_sum += now
        self.transitions += 1
        return u, state
