"""The compiled training step (``TrainConfig.jit``) computes what the plain step computes.

A traced step replays one recorded pass of the model and guide, so every component that the
default ("auto") compiles is checked here: the same loss and the same gradient as the plain
ELBO, from the same random numbers, for every guide family, prior and likelihood; then which
configurations "auto" compiles, and which "on" refuses.
"""
import pytest
import torch

import pyro

from pyvae import VAE, TensorData, Trainer
from pyvae.errors import ConfigError
from pyvae.infer.objectives import compiled_objective, make_objective
from pyvae.models.guides import GUIDES, SelfScoringNormal
from pyvae.models.likelihoods import LIKELIHOODS
from pyvae.models.priors import PRIORS, StandardNormal, SummedOverEvent
from pyvae.training.callbacks import Callback

pytestmark = pytest.mark.usefixtures("one_thread")

D, Z, BATCH = 12, 3, 16


def _data(likelihood):
    g = torch.Generator().manual_seed(1)
    if LIKELIHOODS[likelihood].binary_data:
        return torch.bernoulli(torch.full((BATCH, D), 0.4), generator=g)
    return torch.randint(0, 256, (BATCH, D), generator=g).float() / 255  # on every grid


def _loss_and_grads(objective, vae, x, seed):
    pyro.set_rng_seed(seed)
    for p in vae.parameters():
        p.grad = None
    loss = objective.differentiable_loss(vae.model, vae.guide, x)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in vae.named_parameters() if p.grad is not None}


def _compiled_equals_plain(vae, x, particles=1):
    pyro.clear_param_store()
    plain = make_objective("trace_elbo", particles)
    compiled = compiled_objective("trace_elbo", particles)
    model, guide = vae.model, vae.guide
    with torch.random.fork_rng():  # tracing, and the plain ELBO's first count of the plates
        compiled.differentiable_loss(model, guide, x)  # with particles > 1, draw on the side
        plain.differentiable_loss(model, guide, x)
    for seed in (3, 4):  # the trace's first replays run the profiling executor, later ones not
        want, want_grads = _loss_and_grads(plain, vae, x, seed)
        pyro.set_rng_seed(seed)
        for p in vae.parameters():
            p.grad = None
        got = compiled.differentiable_loss(model, guide, x)
        got.backward()
        assert got.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-5)
        assert set(want_grads) == {n for n, p in vae.named_parameters() if p.grad is not None}
        for name, grad in want_grads.items():
            torch.testing.assert_close(dict(vae.named_parameters())[name].grad, grad,
                                       rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("guide", [g for g in GUIDES if GUIDES[g].traceable])
def test_every_traceable_family_compiles_to_the_plain_elbo(guide):
    vae = VAE(D, Z, hidden=(8,), guide=guide)
    _compiled_equals_plain(vae, _data("bernoulli"))
    _compiled_equals_plain(vae, _data("bernoulli"), particles=3)  # vectorized particles


@pytest.mark.parametrize("prior", sorted(PRIORS))
def test_every_prior_compiles(prior):
    components = None if prior == "normal" else 3
    _compiled_equals_plain(VAE(D, Z, hidden=(8,), prior=prior, prior_components=components),
                           _data("bernoulli"))


@pytest.mark.parametrize("likelihood", sorted(LIKELIHOODS))
def test_every_likelihood_compiles(likelihood):
    _compiled_equals_plain(VAE(D, Z, hidden=(8,), likelihood=likelihood), _data(likelihood))


def test_the_diagonal_guide_scores_its_own_sample_as_normal_does():
    loc = torch.randn(5, 4, requires_grad=True)
    log_scale = (0.5 * torch.randn(5, 4)).requires_grad_()
    torch.manual_seed(0)
    plain = torch.distributions.Normal(loc, log_scale.exp()).rsample((2,))
    torch.manual_seed(0)
    q = SelfScoringNormal(loc, log_scale.exp())
    z = q.rsample((2,))
    assert torch.equal(z, plain)  # the same random numbers
    reference = torch.distributions.Normal(loc, log_scale.exp())
    torch.testing.assert_close(q.log_prob(z), reference.log_prob(z))
    # the total derivative along the sample path is Normal's: d/dloc = 0, d/dlog_scale = -1
    fast = torch.autograd.grad(q.log_prob(z).sum(), [loc, log_scale], retain_graph=True,
                               allow_unused=True)
    slow = torch.autograd.grad(reference.log_prob(z).sum(), [loc, log_scale])
    assert fast[0] is None and torch.allclose(slow[0], torch.zeros(()), atol=1e-5)
    torch.testing.assert_close(fast[1], slow[1])
    torch.testing.assert_close(fast[1], torch.full((5, 4), -2.0))
    # any other tensor, a detached copy included, is scored by Normal.log_prob: d/dz is usable
    leaf = z.detach().requires_grad_()
    dz, = torch.autograd.grad(q.log_prob(leaf).sum(), leaf)
    torch.testing.assert_close(dz, -(leaf - loc) / log_scale.exp() ** 2)


def test_log_densities_summed_over_the_event_equal_independent_ones():
    """SummedOverEvent (the diagonal guide's and the unit-normal prior's event form) scores as
    Independent(base, 1) does: its own sample, any other tensor, broadcast over particles, and
    the derivatives in the guide's parameters."""
    loc = torch.randn(5, 4, requires_grad=True)
    log_scale = (0.5 * torch.randn(5, 4)).requires_grad_()
    q = SelfScoringNormal(loc, log_scale.exp())
    summed, independent = SummedOverEvent(q, 1), torch.distributions.Independent(q, 1)
    z = summed.rsample((3,))
    assert summed.batch_shape == (5,) and summed.event_shape == (4,)
    for value in (z, z.detach().clone()):
        ours, theirs = summed.log_prob(value), independent.log_prob(value)
        assert ours.shape == (3, 5)
        torch.testing.assert_close(ours, theirs)
        grads = [torch.autograd.grad(v.sum(), [loc, log_scale], retain_graph=True, allow_unused=True)
                 for v in (ours, theirs)]
        for g_ours, g_theirs in zip(*grads):
            assert (g_ours is None) == (g_theirs is None)
            if g_ours is not None:
                torch.testing.assert_close(g_ours, g_theirs)
    deeper = SummedOverEvent(q, 2)  # over two dimensions: Independent's own sum
    torch.testing.assert_close(deeper.log_prob(z), torch.distributions.Independent(q, 2).log_prob(z))
    prior = StandardNormal(4)().expand((5,))
    reference = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(4), torch.ones(4)), 1)
    for value in (z, torch.randn(4), torch.randn(2, 1, 4)):
        expected = reference.log_prob(value).expand(torch.broadcast_shapes(value.shape[:-1], (5,)))
        torch.testing.assert_close(prior.log_prob(value), expected)


class _Wrapping(Callback):
    def wrap(self, trainer, model, guide):
        return model, guide


@pytest.mark.parametrize("kwargs, reason", [
    (dict(loss="iwae", particles=2), "losses"),
    (dict(loss="piwae", particles=2, groups=2), "losses"),
    (dict(loss="tracemeanfield_elbo"), "losses"),
    (dict(loss="iwae", particles=2, estimator="stl"), "losses"),
    (dict(beta=0.5), "beta"),
    (dict(kl_warmup=2.0), "beta"),
    (dict(validate=True), "validate"),
    (dict(callbacks=[_Wrapping()]), "wraps"),
])
def test_auto_leaves_uncompiled_what_on_refuses(kwargs, reason):
    vae = VAE(D, Z, hidden=(8,))
    assert not Trainer(vae, progress=False, **kwargs).compiled
    with pytest.raises(ConfigError, match=reason):
        Trainer(vae, progress=False, jit="on", **kwargs)


def test_auto_compiles_pyvae_components_only():
    assert Trainer(VAE(D, Z, hidden=(8,)), progress=False).compiled
    assert not Trainer(VAE(D, Z, hidden=(8,)), jit="off", progress=False).compiled
    for family in ("spline", "low-rank"):
        assert not Trainer(VAE(D, Z, hidden=(8,), guide=family), progress=False).compiled
        with pytest.raises(ConfigError, match="guide family"):
            Trainer(VAE(D, Z, hidden=(8,), guide=family), jit="on", progress=False)
    custom = VAE(D, Z, hidden=(8,), prior=PRIORS["normal"](Z))  # an object: custom code
    assert not Trainer(custom, progress=False).compiled
    with pytest.raises(ConfigError, match="named components"):
        Trainer(custom, jit="on", progress=False)


def test_an_iwae_run_resumes_exactly(binary_data, tmp_path):
    """The bound's one-off checks (plate count, reparameterised sites) leave the random state
    alone, so a resumed run draws what the uninterrupted one drew."""
    def trainer(out, epochs):
        pyro.set_rng_seed(0)
        return Trainer(VAE(12, 2, hidden=(8,)), loss="iwae", particles=3, epochs=epochs,
                       batch_size=64, out=str(tmp_path / out), progress=False)
    data = lambda: TensorData(binary_data, binarize="dynamic")
    full = trainer("a", 3).fit(data())
    trainer("b", 1).fit(data())
    resumed = Trainer.resume(str(tmp_path / "b"), epochs=3, progress=False).fit(data())
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]
    assert strip(resumed) == strip(full)
