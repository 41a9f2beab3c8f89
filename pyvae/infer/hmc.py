"""Hamiltonian Monte Carlo transitions for annealing (``pyvae.infer.ais``), vectorised over
(chains, datapoints): every datapoint's chains are independent Markov chains, so the
Metropolis accept/reject is per (chain, datapoint) and the leapfrog step size per datapoint.

Step sizes: ``tune`` fits each datapoint's step to one fixed target before annealing (a
multiplicative search towards acceptance 0.65: the step is multiplied or divided by a factor
that starts at 4 and is square-rooted whenever the search changes direction, so it brackets the
step and then narrows in on it); during annealing ``transition`` keeps adapting it towards the
same rate, log step += 2 (acceptance now - 0.65) per transition (a proportional controller: at
acceptance 0 the step halves in about one transition, fast enough to follow targets that narrow
by orders of magnitude early in the schedule). Each transition uses step * U(0.7, 1.3), drawn
per chain, so that no fixed trajectory length resonates with the period of a Gaussian target.

The target f_beta(u) = q0^(1 - beta) p(x, z)^beta |det dz/du| is given by an object with
``evaluate(u)`` -> (log p, log q0, log det, and their gradients), ``broadcast(name, t, like)``
and ``per_cn(name, t)`` (sum a site's per-element tensor to (chains, datapoints)).
"""
import torch

TARGET_ACCEPTANCE = 0.65
ADAPT_RATE = 2.0   # log step += ADAPT_RATE (acceptance now - TARGET_ACCEPTANCE), per transition
STEP_JITTER = 0.3  # each transition's step: step * U(1 - 0.3, 1 + 0.3), per chain
INITIAL_STEP = 0.1       # where the search of ``tune`` starts
TUNE_FACTOR = 4.0        # its first multiplicative move
TUNE_TRANSITIONS = 12    # its transitions: 4^(+-3) brackets 1e-3..6, then 8 narrowing moves


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
        self.accept_sum = torch.zeros(n, **kw)
        self.transitions = 0
        self.tuned_step = None  # the step ``tune`` found, per datapoint

    @staticmethod
    def log_f(state, beta):
        lp, lq, ld = state[:3]
        return (1 - beta) * lq.double() + beta * lp.double() + ld.double()

    @staticmethod
    def grad(state, beta):
        gp, gq, gd = state[3:]
        return {k: (1 - beta) * gq[k] + beta * gp[k] + gd[k] for k in gp}

    def tune(self, u, state, beta, transitions: int = TUNE_TRANSITIONS):
        """Fit each datapoint's step to f_beta by ``transitions`` HMC transitions that leave
        f_beta invariant (chains that are exact draws of f_beta stay exact draws); returns
        the new (u, state). Nothing is counted in the acceptance statistics."""
        factor = torch.full_like(self.step, TUNE_FACTOR)
        direction = torch.zeros_like(self.step)
        for _ in range(transitions):
            u, state, prob = self.move(u, state, beta)
            up = prob.mean(0) > TARGET_ACCEPTANCE
            now = torch.where(up, 1.0, -1.0).to(direction)
            factor = torch.where((direction != 0) & (now != direction), factor.sqrt(), factor)
            self.step = torch.where(up, self.step * factor, self.step / factor)
            direction = now
        self.tuned_step = self.step.clone()
        return u, state

    def transition(self, u, state, beta):
        """One annealing transition leaving f_beta invariant, then the step adapted towards
        TARGET_ACCEPTANCE; returns the new (u, state)."""
        u, state, prob = self.move(u, state, beta)
        now = prob.mean(0)
        self.step = self.step * torch.exp(ADAPT_RATE * (now - TARGET_ACCEPTANCE))
        self.accept_sum += now
        self.transitions += 1
        return u, state

    def move(self, u, state, beta):
        """One HMC transition with the current steps: (u, state, acceptance probability (C, N))."""
        t = self.target
        c = state[0].shape[0]
        step = self.step.expand(c, -1)
        if STEP_JITTER:
            step = step * (1 + STEP_JITTER * (2 * torch.rand_like(step) - 1))
        eps = {k: t.broadcast(k, step, v).to(v.dtype) for k, v in u.items()}

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
        return u, state, prob
