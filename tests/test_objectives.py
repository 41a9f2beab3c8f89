"""pyvae.infer.objectives: the training objectives by name, their bounds and weights, checked on
the linear-Gaussian model, where log p(x) and p(z|x) are exact. (The statistics of the guide
gradient estimators reparam, stl and dreg are in tests/test_estimators.py, the compiled ELBO in
tests/test_compiled.py.)"""
import math

import pytest
import torch

import pyro
import pyro.distributions as dist

from pyvae import ConfigError
from pyvae.evaluate import log_weights
from pyvae.infer.objectives import (CIWAE, ESTIMATORS, IWAE, MIWAE, OBJECTIVES, PIWAE,
                                    ImportanceWeighted, JitTrace_ELBO, bound_name,
                                    compile_refusal, compiled_objective, estimators_of,
                                    make_objective, path_score)
from test_evaluate import diagonal_q

N = 20


@pytest.fixture
def x(lg):
    return lg.sample(N, seed=1)


# ------------------------------------------------------------------------------ the bounds
@pytest.mark.parametrize("k", [1, 3, 17])
@pytest.mark.parametrize("name, estimator, options", [
    ("iwae", "reparam", {}), ("iwae", "dreg", {}), ("miwae", "reparam", {"groups": 3}),
    ("ciwae", "reparam", {"ciwae_beta": 0.3}), ("piwae", "stl", {"groups": 2}),
    ("trace_elbo", "reparam", {}), ("trace_elbo", "stl", {})])
def test_every_bound_is_log_px_at_the_exact_posterior_for_any_k(lg, x, name, estimator, options, k):
    # with q = p(z|x) every log w_i is log p(x): each bound, and each surrogate's value, is
    # log p(x) whatever the number of particles and groups
    objective = make_objective(name, k, estimator, **options)
    exact = lg.log_marginal(x)
    assert objective.loss(lg.model, lg.exact_guide, x) == pytest.approx(-exact.sum().item(), abs=1e-8)
    loss = objective.differentiable_loss(lg.model, lg.exact_guide, x)
    assert loss.item() == pytest.approx(-exact.sum().item(), abs=1e-8)
    if isinstance(objective, ImportanceWeighted):
        bound, scale = objective.per_datapoint(lg.model, lg.exact_guide, x)
        assert scale == 1.0 and bound.dtype == torch.float64
        torch.testing.assert_close(bound, exact, rtol=0, atol=1e-10)


@pytest.mark.parametrize("objective", [IWAE(6), MIWAE(2, 3), CIWAE(6, 0.3), PIWAE(2, 3)],
                         ids=["iwae", "miwae", "ciwae", "piwae"])
def test_the_model_weights_are_the_derivative_of_the_bound(objective):
    # a_i = d bound / d log w_i (the model's gradient is the standard one); under reparam the
    # guide's weights b are the same, except for piwae, whose guide follows MIWAE_{2,3}
    log_w = (3 * torch.randn(6, 4, dtype=torch.float64,
                             generator=torch.Generator().manual_seed(0))).requires_grad_()
    a, b = objective.weights(log_w.detach())
    grad, = torch.autograd.grad(objective.bound(log_w).sum(), log_w)
    torch.testing.assert_close(a, grad, rtol=0, atol=1e-12)
    guide_bound = MIWAE(2, 3).bound(log_w) if isinstance(objective, PIWAE) else objective.bound(log_w)
    grad, = torch.autograd.grad(guide_bound.sum(), log_w)
    torch.testing.assert_close(b, grad, rtol=0, atol=1e-12)


def test_dreg_squares_the_normalised_weights():
    log_w = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    wt = torch.softmax(log_w, 0)
    for estimator, want in (("reparam", wt), ("stl", wt), ("dreg", wt * wt)):
        a, b = IWAE(5, estimator).weights(log_w)
        torch.testing.assert_close(a, wt, rtol=0, atol=1e-12)
        torch.testing.assert_close(b, want, rtol=0, atol=1e-12)


def test_the_checks_of_the_first_call_leave_the_random_state_alone(lg, x):
    # the first call traces model and guide once to check them: a fresh objective then draws
    # what one that has already checked draws (a resumed run repeats the uninterrupted one)
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", diagonal_q(lg, x))
    checked = IWAE(4)
    checked.loss(lg.model, guide, x)
    pyro.set_rng_seed(3)
    fresh = IWAE(4).loss(lg.model, guide, x)
    pyro.set_rng_seed(3)
    assert checked.loss(lg.model, guide, x) == fresh


def test_importance_weighted_objectives_take_model_and_guide_of_x_alone(lg, x):
    with pytest.raises(ConfigError, match="expect model\\(x\\) and guide\\(x\\) with one argument x"):
        IWAE(3).loss(lg.model, lg.exact_guide, x, x)
    with pytest.raises(ConfigError, match="with one argument x"):
        IWAE(3).differentiable_loss(lg.model, lg.exact_guide, x=x)


# ------------------------------------------------------------------------------ by name
def test_make_objective_builds_the_named_objective_with_its_options():
    built = {name: make_objective(name, 4, "reparam", groups=3, ciwae_beta=0.2) for name in OBJECTIVES}
    assert type(built["iwae"]) is IWAE and built["iwae"].num_particles == 4
    assert type(built["miwae"]) is MIWAE and (built["miwae"].groups, built["miwae"].num_particles) == (3, 4)
    assert type(built["piwae"]) is PIWAE and built["piwae"].groups == 3
    assert type(built["ciwae"]) is CIWAE and built["ciwae"].beta == 0.2
    assert type(built["trace_elbo"]) is pyro.infer.Trace_ELBO
    assert type(built["tracemeanfield_elbo"]) is pyro.infer.TraceMeanField_ELBO
    assert built["trace_elbo"].num_particles == 4 and built["trace_elbo"].vectorize_particles
    assert make_objective("iwae", 4, "dreg").estimator == "dreg"
    # the ELBO with stl: k groups of one particle, whose bound is the mean of the log-weights
    stl = make_objective("trace_elbo", 5, "stl")
    assert type(stl) is ImportanceWeighted and (stl.groups, stl.num_particles) == (5, 1)
    assert stl.estimator == "stl"
    assert not make_objective("trace_elbo", 1).vectorize_particles


@pytest.mark.parametrize("config, name", [
    ({"loss": "trace_elbo", "particles": 3}, "ELBO"),
    ({"loss": "tracemeanfield_elbo", "particles": 1}, "ELBO"),
    ({"loss": "iwae", "particles": 5}, "IWAE_5"),
    ({"loss": "miwae", "particles": 5, "groups": 2}, "MIWAE_2,5"),
    ({"loss": "piwae", "particles": 5, "groups": 2}, "IWAE_10"),
    ({"loss": "ciwae", "particles": 5, "ciwae_beta": 0.25}, "CIWAE_0.25"),
])
def test_bound_name_names_what_the_model_is_trained_on(config, name):
    assert bound_name(config) == name


def test_estimators_of_each_objective():
    assert estimators_of("trace_elbo") == ("reparam", "stl")
    assert estimators_of("tracemeanfield_elbo") == ("reparam",)
    for name in ("iwae", "miwae", "ciwae", "piwae"):
        assert estimators_of(name) == ESTIMATORS == ("reparam", "stl", "dreg")


def test_only_the_reparameterised_elbo_is_compiled():
    assert compile_refusal("trace_elbo", "reparam") is None
    for loss, estimator in (("trace_elbo", "stl"), ("iwae", "reparam"), ("tracemeanfield_elbo", "reparam")):
        why = compile_refusal(loss, estimator)
        assert why.startswith("--jit works with the losses trace_elbo and the reparam estimator")
        assert f"not {loss!r} with {estimator!r}" in why
    compiled = compiled_objective("trace_elbo", 3)
    assert type(compiled) is JitTrace_ELBO and compiled.num_particles == 3
    assert compiled.vectorize_particles


def test_path_score_of_a_normal_is_its_analytic_score():
    loc, scale = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.5])
    z = dist.Normal(loc, scale).rsample((4,))
    score = path_score(dist.Normal(loc, scale).to_event(1), z)
    torch.testing.assert_close(score, -(z - loc) / scale ** 2)
    assert not score.requires_grad

# ------------------------------------------------------------------------------ minibatches, gradients
def _fixed_noise_guide(lg, eps, plate):
    """A diagonal guide whose draws come from a fixed noise table indexed by datapoint, so a
    minibatch sees exactly the draws the full batch gave those rows."""
    def guide(x):
        q = diagonal_q(lg, x)
        loc, scale = q.base_dist.loc, q.base_dist.scale
        with plate(x) as idx:
            z = loc + scale * eps[:, idx]
            pyro.sample("z", dist.Delta(z, log_density=q.log_prob(z), event_dim=1))
    return guide


def _data_model(lg, plate):
    def model(x):
        with plate(x):
            z = pyro.sample("z", lg.prior())
            pyro.sample("x", lg.likelihood(z), obs=x)
    return model


def test_iwae_minibatch_equals_full_batch_per_datapoint(lg, x):
    k = 16
    eps = torch.randn(k, N, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    full_plate = lambda x: pyro.plate("data", x.shape[0])  # noqa: E731
    full = make_objective("iwae", k)
    assert isinstance(full, IWAE)
    bound, scale = full.per_datapoint(_data_model(lg, full_plate),
                                      _fixed_noise_guide(lg, eps, full_plate), x)
    assert scale == 1.0 and bound.shape == (N,)
    idx = torch.tensor([2, 3, 11, 17])
    mini_plate = lambda x: pyro.plate("data", N, subsample=idx)  # noqa: E731
    mini_model, mini_guide = _data_model(lg, mini_plate), _fixed_noise_guide(lg, eps, mini_plate)
    mini = make_objective("iwae", k)
    mini_bound, mini_scale = mini.per_datapoint(mini_model, mini_guide, x[idx])
    assert mini_scale == N / len(idx)
    assert torch.allclose(mini_bound, bound[idx], atol=1e-12, rtol=0)
    # the loss is the bound of each datapoint, scaled by N / batch after its logsumexp
    loss = mini.loss(mini_model, mini_guide, x[idx])
    assert loss == pytest.approx(-(N / len(idx)) * bound[idx].sum().item(), abs=1e-9)
    # scaling before the logsumexp (Pyro's RenyiELBO) would give another number
    lw, _ = log_weights(mini_model, mini_guide, x[idx], k)
    wrong = -(torch.logsumexp(mini_scale * lw, 0) - math.log(k)).sum().item()
    assert abs(wrong - loss) > 1.0


def test_iwae_objective_values_and_gradients(lg, x):
    # exact posterior: the bound is log p(x) for every k
    objective = IWAE(5)
    assert objective.loss(lg.model, lg.exact_guide, x) == pytest.approx(-lg.log_marginal(x).sum().item(), abs=1e-8)
    # a learnable guide gets gradients through its reparameterised samples
    shift = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)

    def guide(x):
        loc = lg.posterior(x).loc + shift
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, 0.5).to_event(1))
    loss = IWAE(50).loss_and_grads(lg.model, guide, x)
    assert math.isfinite(loss) and shift.grad is not None and shift.grad > 0


def test_iwae_needs_reparameterised_guide(lg, x):
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2, dtype=x.dtype), 1.0).to_event(1))
            pyro.sample("c", dist.Bernoulli(0.5 * torch.ones(x.shape[0], dtype=x.dtype)))
    with pytest.raises(ConfigError, match="site 'c'"):
        IWAE(3).loss(lg.model, guide, x)




def test_objective_values_match_their_definitions(lg):
    # every objective's value from one matrix of log-weights, against its formula
    log_w = torch.randn(12, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    lse = lambda t: torch.logsumexp(t, 0)  # noqa: E731
    assert torch.allclose(IWAE(12).bound(log_w), lse(log_w) - math.log(12))
    miwae = torch.stack([lse(g) - math.log(4) for g in log_w.split(4)]).mean(0)
    assert torch.allclose(MIWAE(3, 4).bound(log_w), miwae)
    assert torch.allclose(PIWAE(3, 4).bound(log_w), lse(log_w) - math.log(12))
    ciwae = 0.3 * log_w.mean(0) + 0.7 * (lse(log_w) - math.log(12))
    assert torch.allclose(CIWAE(12, 0.3).bound(log_w), ciwae)
    # CIWAE at beta = 1 is the ELBO, at beta = 0 IWAE
    assert torch.allclose(CIWAE(12, 1.0).bound(log_w), log_w.mean(0))
    # and the bounds are ordered: ELBO <= MIWAE_{3,4} <= IWAE_12
    assert (log_w.mean(0) <= miwae + 1e-12).all() and (miwae <= lse(log_w) - math.log(12)).all()
