"""``pyvae.Trainer`` on a Pyro model and guide of a user's own (``tests/user_pair.py``)."""
import os
import signal

import pytest
import torch

import pyro
from torch.utils.data import TensorDataset

from pyvae import ConfigError, Trainer
from pyvae.errors import TrainingInterrupted
from pyvae.training.callbacks import Callback
from pyvae.training.checkpoint import load_checkpoint

from user_pair import UserPair, user_data

strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]


def _store():
    return {name: p.detach().clone() for name, p in pyro.get_param_store().named_parameters()}


def _trainer(pair, out=None, epochs=4, **kwargs):
    return Trainer(pair.model, pair.guide, epochs=epochs, batch_size=50, lr=1e-2, seed=3,
                   out=out, progress=False, **kwargs)


def test_a_user_model_trains_and_its_checkpoint_holds_its_parameters(tmp_path):
    x = user_data()
    pair = UserPair()
    history = _trainer(pair, out=str(tmp_path / "run")).fit(x[:150], x[150:])
    assert history[-1]["train_elbo"] > history[0]["train_elbo"] + 1  # it learned
    assert history[-1]["valid_elbo"] is not None
    payload = load_checkpoint(str(tmp_path / "run" / "checkpoint.pt"))
    assert payload["model_kind"] == "pyro" and payload["vae_config"] is None
    # the param store's names: pyro.module's "decoder$$$0.weight" and the user's "noise"
    assert {"decoder$$$0.weight", "encoder$$$2.bias", "noise"} <= set(payload["model_state"])
    # the modules are what was trained (pyro.module registers their own tensors)
    assert torch.equal(payload["model_state"]["decoder$$$0.weight"], pair.decoder[0].weight.detach())


def test_a_user_model_resumes_exactly_after_an_interruption_mid_epoch(tmp_path):
    x = user_data()
    pair = UserPair()
    full = _trainer(pair, out=str(tmp_path / "a")).fit(x[:150], x[150:])
    full_state = _store()

    class Interrupt(Callback):  # SIGINT after epoch 2's first step: it stops after the second
        def on_step_end(self, trainer, epoch, step, loss):
            if (epoch, step) == (1, 0):
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        _trainer(UserPair(), out=str(tmp_path / "b"), callbacks=[Interrupt()]).fit(x[:150], x[150:])
    assert load_checkpoint(str(tmp_path / "b" / "checkpoint.pt"))["step"] == 2
    pyro.set_rng_seed(99)  # disturb the global RNG: resume must restore it
    fresh = UserPair(seed=5)  # other initial weights: the checkpoint's must replace them
    resumed = Trainer.resume(str(tmp_path / "b"), fresh.model, fresh.guide,
                             progress=False).fit(x[:150], x[150:])
    assert strip(resumed) == strip(full)
    state = _store()
    assert state.keys() == full_state.keys()
    for name in state:
        assert torch.equal(state[name], full_state[name]), name  # bit-identical


def test_resuming_a_user_run_needs_its_model_and_guide(tmp_path):
    x = user_data()
    _trainer(UserPair(), out=str(tmp_path / "run"), epochs=1).fit(x)
    with pytest.raises(ConfigError, match="pass them, Trainer.resume"):
        Trainer.resume(str(tmp_path / "run"))

    class Other(UserPair):  # another architecture: the checkpoint does not fit it
        def __init__(self):
            super().__init__()
            self.decoder = torch.nn.Linear(2, 12)
    other = Other()
    with pytest.raises(ConfigError, match="does not fit the model"):
        Trainer.resume(str(tmp_path / "run"), other.model, other.guide, epochs=2,
                       progress=False).fit(x)


def test_the_first_batch_is_validated_then_training_runs_unvalidated():
    pair = UserPair()
    bad = user_data()
    bad[3, 2] = float("nan")  # Pyro's validation refuses a NaN observation of a Normal
    with pytest.raises(ConfigError, match="under Pyro.s validation: Expected parameter loc .* invalid values$"):
        _trainer(pair, epochs=1).fit(TensorDataset(bad))  # (a TensorData would refuse it itself)

    seen = []

    class Watch(Callback):
        def on_step_start(self, trainer, epoch, step, steps):
            seen.append(pyro.infer.util.is_validation_enabled())
    _trainer(UserPair(), epochs=1, callbacks=[Watch()]).fit(user_data())
    assert seen and not any(seen)


@pytest.mark.parametrize("kwargs, message", [
    (dict(beta=0.5), "weight the latent site 'z' of pyvae.VAE"),
    (dict(jit="on"), "--jit traces only pyvae's own VAE"),
])
def test_options_of_the_vae_alone_are_refused_for_a_user_model(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        _trainer(UserPair(), **kwargs)


def test_a_model_without_its_guide_is_refused():
    pair = UserPair()
    with pytest.raises(ConfigError, match="a Pyro model and its guide"):
        Trainer(pair.model)
