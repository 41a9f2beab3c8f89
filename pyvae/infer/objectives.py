"""Training objectives, chosen by name. Each is a Pyro ELBO object whose ``loss`` is -objective."""
import math

import torch

import pyro.infer
import pyro.poutine as poutine

from ..errors import ConfigError


def _trace_elbo(num_particles):
    # ELBO = E_q[log p(x,z) - log q(z|x)], estimated with num_particles reparameterised draws
    return pyro.infer.Trace_ELBO(num_particles=num_particles,
                                 vectorize_particles=num_particles > 1)


def _mean_field_elbo(num_particles):
    # the same ELBO with KL(q || p) computed in closed form where Pyro knows it
    return pyro.infer.TraceMeanField_ELBO(num_particles=num_particles,
                                          vectorize_particles=num_particles > 1)


class IWAE(pyro.infer.ELBO):
    """The importance-weighted bound of Burda et al. (2016) with k particles, as a Pyro ELBO:

        IWAE_k(x) = E[ logsumexp_{i<=k} (log p(x, z_i) - log q(z_i|x)) - log k ],  z_i ~ q(z|x)

    ``loss = -sum_n s * IWAE_k(x_n)`` over the minibatch, where s = N / batch is the scale of a
    subsampled ``"data"`` plate (1 otherwise). The scale multiplies each datapoint's bound
    *after* its logsumexp; Pyro's ``RenyiELBO`` scales the log-weights before it, which changes
    (biases) the bound whenever the data plate is subsampled. Other scales (``poutine.scale``,
    e.g. KL annealing) stay inside the log-weights. The k particles are vectorised: the guide
    and model run once inside a particle plate (see ``pyvae.evaluate.log_weights``), so the
    guide scores its own samples. Needs reparameterised guide sites (``rsample``).

    ``loss_and_grads`` backpropagates through the reparameterised samples; the gradient is that
    of the bound (the estimator of Burda et al.). Use it as the ``loss`` of ``pyro.infer.SVI``.
    """

    def __init__(self, num_particles: int = 50):
        super().__init__(num_particles=int(num_particles))
        self._nesting = None

    def per_datapoint(self, model, guide, *args, **kwargs):
        """(bound, scale): the k-sample bound per datapoint, shape (batch,), and the data scale."""
        from .weights import log_weights, max_plate_nesting

        if kwargs or len(args) != 1:
            raise ConfigError("the iwae objective expects model(x) and guide(x) with one argument x")
        x = args[0]
        if self._nesting is None:
            self._nesting = max_plate_nesting(model, guide, x)
            self._check_reparameterized(guide, x)
        log_w, scale = log_weights(model, guide, x, self.num_particles, self._nesting, scaled=True)
        return torch.logsumexp(log_w, dim=0) - math.log(self.num_particles), scale

    @staticmethod
    def _check_reparameterized(guide, x):
        with torch.no_grad(), poutine.block():
            trace = poutine.trace(guide).get_trace(x)
        for name, site in trace.nodes.items():
            if site["type"] == "sample" and not site["is_observed"] and \
                    type(site["fn"]).__name__ != "_Subsample" and not site["fn"].has_rsample:
                raise ConfigError(f"the iwae objective needs reparameterised guide sites; "
                                  f"site {name!r} ({type(site['fn']).__name__}) has no rsample")

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("IWAE draws its particles vectorised; see per_datapoint")

    def differentiable_loss(self, model, guide, *args, **kwargs):
        bound, scale = self.per_datapoint(model, guide, *args, **kwargs)
        return -(scale * bound).sum()

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return float(loss.detach())


def _iwae(num_particles):
    # IWAE_k: the k-sample importance-weighted bound; k = particles
    return IWAE(num_particles)


OBJECTIVES = {"trace_elbo": _trace_elbo, "tracemeanfield_elbo": _mean_field_elbo, "iwae": _iwae}


def make_objective(name: str, num_particles: int = 1):
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown loss {name!r}; choose one of: {', '.join(sorted(OBJECTIVES))}")
    if int(num_particles) < 1:
        raise ConfigError(f"particles must be >= 1, got {num_particles}")
    return OBJECTIVES[name](int(num_particles))


class JitTrace_ELBO(pyro.infer.JitTrace_ELBO):
    """Pyro's compiled ``Trace_ELBO`` whose ``differentiable_loss`` carries the gradient of the
    surrogate loss only, as its ``loss_and_grads`` does. (Pyro's own returns
    ``loss + (surrogate - surrogate.detach())`` with a ``loss`` that is itself differentiable
    under the JIT, which doubles the gradient of reparameterized sites.)"""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss, surrogate = self.loss_and_surrogate_loss(model, guide, *args, **kwargs)
        return loss.detach() + (surrogate - surrogate.detach())


# Pyro's compiled (torch.jit-traced) versions of the ELBO objectives, for ``jit=True``
JIT_OBJECTIVES = {"trace_elbo": JitTrace_ELBO,
                  "tracemeanfield_elbo": pyro.infer.JitTraceMeanField_ELBO}
