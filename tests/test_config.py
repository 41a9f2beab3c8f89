"""pyvae.config: one default and one check per option, config.json round trips, old configs."""
import inspect
import json
import os

import pytest
import torch

import pyvae
from pyvae import ConfigError
from pyvae.cli import main
from pyvae.config import (DataConfig, FlowOptions, ModelConfig, NoOptions, RunConfig,
                          SylvesterOptions, TrainConfig)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

# config.json as the first version of pyvae wrote it: no num_threads/beta/kl_warmup/jit, no
# arch or prior_components, only the guide options that were given
FIRST_VERSION = {
    "vae": {"x_dim": 784, "z_dim": 50, "hidden": [200, 200], "activation": "tanh",
            "likelihood": "bernoulli", "guide": "diagonal", "prior": "normal"},
    "trainer": {"lr": 0.001, "batch_size": 100, "epochs": 10, "loss": "trace_elbo",
                "particles": 1, "optimizer": "adam", "schedule": "constant", "clip_norm": None,
                "seed": 0},
    "data": {"dataset": "mnist", "data_file": None, "binarize": "dynamic", "valid_size": None,
             "seed": 0},
}


def test_config_json_of_this_version_round_trips_exactly():
    with open(os.path.join(FIXTURES, "run_v0_1", "config.json")) as f:
        stored = json.load(f)
    config = RunConfig.from_dict(stored)
    # the options added since the fixture was written come back with their defaults
    added = {"estimator": "reparam", "groups": 1, "ciwae_beta": 0.5}
    # and jit, a bool then, is written as the mode it meant
    assert stored["trainer"]["jit"] is False
    added["jit"] = "off"
    assert config.to_dict() == {**stored, "trainer": {**stored["trainer"], **added}}
    assert isinstance(config.model.guide_options, FlowOptions)
    assert config.model.guide_options.flow_length == 1 and config.model.guide_options.flow_hidden == (6,)
    assert config.model.prior_components == 3 and config.train.kl_warmup == 2.0


def test_first_version_config_reads_with_the_later_defaults():
    config = RunConfig.from_dict(FIRST_VERSION)
    # a run written before jit existed trained uncompiled, and resumes so
    assert config.train.beta == 1.0 and config.train.kl_warmup == 0.0 and config.train.jit == "off"
    assert config.train.num_threads is None and config.model.arch == "mlp"
    assert isinstance(config.model.guide_options, NoOptions)
    # and writes the keys added since, so that the run resumes with the same settings
    assert RunConfig.from_dict(config.to_dict()) == config
    vae = pyvae.VAE.from_config(config.model)
    assert vae.config == config.model.to_dict()


def test_flow_options_given_partially_are_completed_with_the_family_defaults():
    model = ModelConfig.from_dict({"x_dim": 12, "guide": "sylvester", "flow_length": 3})
    assert model.guide_options == SylvesterOptions(flow_length=3)
    assert model.to_dict()["sylvester_kind"] == "orthogonal"


def test_custom_component_runs_have_no_model_config():
    assert RunConfig.from_dict({"vae": None, "trainer": {}, "data": {}}).model is None


@pytest.mark.parametrize("cls, kwargs, message", [
    (TrainConfig, dict(lr=0), "learning rate must be a positive number"),
    (TrainConfig, dict(batch_size=0), "batch size must be positive"),
    (TrainConfig, dict(loss="nope"), "unknown loss 'nope'; choose one of: trace_elbo"),
    (TrainConfig, dict(schedule="nope"), "unknown schedule"),
    (TrainConfig, dict(beta=-1), "beta must be a number >= 0"),
    (ModelConfig, dict(z_dim=0), "z_dim must be positive"),
    (ModelConfig, dict(guide="nope"), "unknown guide 'nope'"),
    (ModelConfig, dict(hidden=(0,)), "layer sizes must be positive"),
    (ModelConfig, dict(guide="iaf", guide_options={"flow_length": 0}), "flow_length must be >= 1"),
    (ModelConfig, dict(guide_options={"flow_lenght": 2}), "unknown guide option flow_lenght"),
    (DataConfig, dict(binarize="sometimes"), "unknown binarize"),
    (RunConfig.from_dict, dict(d={"trainer": {"learning_rate": 1}}), "unknown TrainConfig option"),
])
def test_each_check_raises_one_config_error(cls, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        cls(**kwargs)


def test_library_signatures_take_their_defaults_from_the_dataclasses():
    vae = inspect.signature(pyvae.VAE).parameters
    for name in ("z_dim", "hidden", "activation", "likelihood", "guide", "prior", "arch"):
        assert vae[name].default == getattr(ModelConfig, name), name
    # the Trainer takes TrainConfig's fields as keyword options; its signature spells them out
    trainer = inspect.signature(pyvae.Trainer).parameters
    for name in ("lr", "batch_size", "epochs", "loss", "particles", "optimizer", "schedule",
                 "clip_norm", "seed", "beta", "kl_warmup", "jit", "estimator", "groups"):
        assert trainer[name].default == getattr(TrainConfig, name), name
        assert trainer[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    assert pyvae.Trainer(pyvae.VAE(x_dim=4, z_dim=2, hidden=(3,)),
                         lr=0.5).train_config == TrainConfig(lr=0.5)
    cmp = inspect.signature(pyvae.compare).parameters
    for name in ("z_dim", "hidden", "activation", "likelihood", "prior"):
        assert cmp[name].default == getattr(ModelConfig, name), name
    for name in ("lr", "batch_size", "seed", "epochs"):
        assert cmp[name].default == getattr(TrainConfig, name), name


@pytest.fixture
def data_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    path = str(tmp_path / "x.pt")
    torch.save(torch.bernoulli(torch.full((200, 12), 0.3), generator=g), path)
    return path


def test_cli_defaults_are_the_dataclass_defaults(data_file, tmp_path):
    out = str(tmp_path / "run")
    assert main(["train", "--data-file", data_file, "--out", out, "--epochs", "1",
                 "--no-progress"]) == 0
    with open(os.path.join(out, "config.json")) as f:
        stored = json.load(f)
    assert stored["trainer"] == TrainConfig(epochs=1).to_dict()
    assert stored["vae"] == ModelConfig(x_dim=12).to_dict()
    assert len(stored["data"].pop("fingerprint")["train"]) == 64  # sha256 of the training data
    assert stored["data"] == DataConfig(data_file=data_file, binarize="dynamic",
                                        valid_size=20).to_dict()


def test_cli_help_shows_each_default_and_registry(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default {TrainConfig.lr})" in text and "(default 200,200)" in text
    assert "one of: diagonal, full-rank, low-rank, iaf" in text


def test_cli_refuses_a_bad_number_with_the_dataclass_message(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--flow-length", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "flow_length must be >= 1" in err and err.count("\n") == 1
