import copy

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

import pyvae
from pyvae.errors import TrainingDiverged
from pyvae.optim import JointOptim


def _train(optim, x, steps=5):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae = pyvae.VAE(x_dim=12, z_dim=2, hidden=(8,))
    svi = SVI(vae.model, vae.guide, optim, Trace_ELBO())
    losses = [svi.step(x) for _ in range(steps)]
    return vae, losses, svi


def test_joint_optimizer_equals_pyro_per_parameter_adam(binary_data):
    x = binary_data[:64]
    vae_a, losses_a, _ = _train(pyro.optim.Adam({"lr": 0.01}), x)
    vae_b, losses_b, _ = _train(JointOptim(torch.optim.Adam, {"lr": 0.01}, fused=False), x)
    assert losses_a == losses_b
    for a, b in zip(vae_a.parameters(), vae_b.parameters()):
        assert torch.equal(a, b)
    vae_c, losses_c, _ = _train(JointOptim(torch.optim.Adam, {"lr": 0.01}), x)  # fused kernel
    for a, c in zip(vae_a.parameters(), vae_c.parameters()):
        assert torch.allclose(a, c, atol=1e-6)


def test_state_round_trip_in_pyro_format(binary_data):
    x = binary_data[:64]
    _, _, svi_pyro = _train(pyro.optim.Adam({"lr": 0.01}), x, steps=3)
    pyro_state = svi_pyro.optim.get_state()
    _, _, svi_joint = _train(JointOptim(torch.optim.Adam, {"lr": 0.01}, fused=False), x, steps=3)
    joint_state = svi_joint.optim.get_state()
    assert set(joint_state) == set(pyro_state)
    for name in pyro_state:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(joint_state[name]["state"][0][key], pyro_state[name]["state"][0][key])
    # a fresh model + JointOptim given the parameters and that state continues exactly
    vae_a, _, svi_a = _train(JointOptim(torch.optim.Adam, {"lr": 0.01}, fused=False), x, steps=3)
    params_a = {k: v.clone() for k, v in vae_a.state_dict().items()}
    state_a = copy.deepcopy(svi_a.optim.get_state())  # get_state aliases the live tensors
    pyro.set_rng_seed(7)
    svi_a.step(x)
    pyro.clear_param_store()
    vae_b = pyvae.VAE(x_dim=12, z_dim=2, hidden=(8,))
    vae_b.load_state_dict(params_a)
    optim_b = JointOptim(torch.optim.Adam, {"lr": 0.01}, fused=False)
    optim_b.set_state(state_a)
    pyro.set_rng_seed(7)
    SVI(vae_b.model, vae_b.guide, optim_b, Trace_ELBO()).step(x)
    for a, b in zip(vae_a.parameters(), vae_b.parameters()):
        assert torch.equal(a, b)


def test_non_finite_gradient_is_refused_and_parameters_untouched():
    p = torch.nn.Parameter(torch.ones(3))
    pyro.clear_param_store()
    pyro.param("p", p)
    optim = JointOptim(torch.optim.Adam, {"lr": 0.1})
    p.grad = torch.tensor([1.0, float("nan"), 0.0])
    with pytest.raises(TrainingDiverged, match="non-finite gradient for p"):
        optim([p])
    assert torch.equal(p.detach(), torch.ones(3))


def test_clip_norm_limits_each_gradient():
    p = torch.nn.Parameter(torch.zeros(4))
    pyro.clear_param_store()
    pyro.param("p", p)
    optim = JointOptim(torch.optim.SGD, {"lr": 1.0}, clip_norm=0.5)
    p.grad = torch.full((4,), 10.0)
    optim([p])
    assert float(p.detach().norm()) == pytest.approx(0.5, rel=1e-5)
