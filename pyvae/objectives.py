"""Training objectives, chosen by name. Each is a Pyro ELBO object whose ``loss`` is -objective."""
import pyro.infer

from .errors import ConfigError


def _trace_elbo(num_particles):
    # ELBO = E_q[log p(x,z) - log q(z|x)], estimated with num_particles reparameterised draws
    return pyro.infer.Trace_ELBO(num_particles=num_particles,
                                 vectorize_particles=num_particles > 1)


def _mean_field_elbo(num_particles):
    # the same ELBO with KL(q || p) computed in closed form where Pyro knows it
    return pyro.infer.TraceMeanField_ELBO(num_particles=num_particles,
                                          vectorize_particles=num_particles > 1)


OBJECTIVES = {"trace_elbo": _trace_elbo, "tracemeanfield_elbo": _mean_field_elbo}


def make_objective(name: str, num_particles: int = 1):
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown loss {name!r}; choose one of: {', '.join(sorted(OBJECTIVES))}")
    if int(num_particles) < 1:
        raise ConfigError(f"particles must be >= 1, got {num_particles}")
    return OBJECTIVES[name](int(num_particles))
