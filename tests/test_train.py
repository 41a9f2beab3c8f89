import json
import math
import os

import pyro
import pytest
import torch

import pyvae
from pyvae import ConfigError, Trainer
from pyvae.checkpoint import load_checkpoint
from pyvae.data import TensorData
from pyvae.train import SCHEDULES


def small_vae(x_dim=12):
    return pyvae.VAE(x_dim=x_dim, z_dim=2, hidden=(16,))


def test_fit_returns_history_and_learns(binary_data):
    history = Trainer(small_vae(), epochs=8, batch_size=50, lr=1e-2, progress=False).fit(
        binary_data[:500], binary_data[500:])
    assert [r["epoch"] for r in history] == list(range(1, 9))
    for r in history:
        assert set(r) >= {"epoch", "train_elbo", "valid_elbo", "seconds", "lr"}
        assert math.isfinite(r["train_elbo"]) and math.isfinite(r["valid_elbo"])
    # 12 fair coins cost 12 log 2 = 8.32 nats; four prototypes with 10% noise cost far less
    assert history[0]["valid_elbo"] < -7.0
    assert history[-1]["valid_elbo"] > -6.5


@pytest.mark.parametrize("kwargs, name", [
    ({}, "ELBO"),
    ({"loss": "tracemeanfield_elbo"}, "ELBO"),
    ({"loss": "iwae", "particles": 3}, "IWAE_3"),
    ({"beta": 0.5}, "beta-ELBO"),
    ({"kl_warmup": 2}, "beta-ELBO"),
])
def test_records_name_the_training_objective(binary_data, kwargs, name):
    trainer = Trainer(small_vae(), epochs=1, batch_size=100, progress=False, **kwargs)
    assert trainer.objective_name == name
    history = trainer.fit(binary_data[:200], binary_data[500:])
    assert history[0]["train_objective"] == name


def test_same_seed_same_history(binary_data):
    """The Trainer's seed alone fixes the run: the VAE starts from the same weights each time,
    the global random state is moved elsewhere before each fit, and only ``seed`` differs."""
    def run(seed, disturb):
        pyro.set_rng_seed(3)  # the same initial weights for every run
        vae = small_vae()
        pyro.set_rng_seed(disturb)
        return Trainer(vae, epochs=2, batch_size=64, seed=seed, progress=False).fit(
            TensorData(binary_data, binarize="dynamic"), binary_data[:100])
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]
    a, b, c = run(5, 100), run(5, 200), run(6, 100)
    assert strip(a) == strip(b)
    assert [r["train_elbo"] for r in c] != [r["train_elbo"] for r in a]


def test_valid_elbo_is_trace_elbo_per_datapoint(binary_data):
    trainer = Trainer(small_vae(), epochs=1, batch_size=100, progress=False)
    trainer.fit(binary_data)
    pyro.set_rng_seed(0)
    value = trainer.evaluate_elbo(TensorData(binary_data), batch_size=600)
    pyro.set_rng_seed(0)
    loss = pyro.infer.Trace_ELBO().loss(trainer.vae.model, trainer.vae.guide, binary_data)
    assert value == pytest.approx(-loss / 600, rel=1e-6)


def test_burda_schedule_stages():
    burda = SCHEDULES["burda"]
    # stage i lasts 3^i epochs: epoch 0 -> i=0, epochs 1..3 -> i=1, 4..12 -> i=2
    assert burda(0) == 1.0
    assert burda(1) == burda(3) == pytest.approx(10 ** (-1 / 7))
    assert burda(4) == pytest.approx(10 ** (-2 / 7))
    assert burda(3279) == pytest.approx(10 ** (-1)) and burda(3280) == pytest.approx(0.1)


def test_cosine_schedule_runs_from_one_to_a_hundredth():
    cosine = SCHEDULES["cosine"]
    assert cosine(0, 100) == 1.0
    assert cosine(50, 100) == pytest.approx(0.505)
    assert cosine(100, 100) == pytest.approx(0.01)
    values = [cosine(e, 100) for e in range(101)]
    assert values == sorted(values, reverse=True)


def test_run_directory_files_and_checkpoint_round_trip(binary_data, tmp_path):
    out = str(tmp_path / "run")
    vae = small_vae()
    trainer = Trainer(vae, epochs=2, batch_size=100, out=out, progress=False)
    history = trainer.fit(binary_data[:500], binary_data[500:])
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["vae"]["z_dim"] == 2 and config["trainer"]["batch_size"] == 100
    lines = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    assert lines == history
    payload = load_checkpoint(os.path.join(out, "checkpoint.pt"))
    assert payload["epoch"] == 2 and payload["step"] == 0
    restored = pyvae.VAE.from_config(payload["vae_config"])
    restored.load_state_dict(payload["model_state"])
    for (name, a), (_, b) in zip(vae.state_dict().items(), restored.state_dict().items()):
        assert torch.equal(a, b), name
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]


def test_resume_in_process_matches_uninterrupted(binary_data, tmp_path):
    def fresh(out, epochs):
        pyro.set_rng_seed(0)
        return Trainer(small_vae(), epochs=epochs, batch_size=50, out=out, progress=False)
    full = fresh(str(tmp_path / "a"), 4).fit(TensorData(binary_data, binarize="dynamic"))
    fresh(str(tmp_path / "b"), 2).fit(TensorData(binary_data, binarize="dynamic"))
    pyro.set_rng_seed(99)  # disturb the global RNG: resume must restore it
    resumed = Trainer.resume(str(tmp_path / "b"), epochs=4, progress=False).fit(
        TensorData(binary_data, binarize="dynamic"))
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]
    assert strip(resumed) == strip(full)


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=0), "learning rate must be a positive number"),
    (dict(lr=float("nan")), "learning rate"),
    (dict(batch_size=0), "batch size must be positive"),
    (dict(loss="nope"), "unknown loss 'nope'; choose one of"),
    (dict(optimizer="sgd"), "unknown optimizer"),
    (dict(schedule="nope"), "unknown schedule"),
    (dict(device="tpu:0"), "bad device"),
])
def test_bad_trainer_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Trainer(small_vae(), **kwargs)


@pytest.mark.parametrize("data, message", [
    (torch.full((10, 12), float("nan")), "NaN or Inf"),
    (torch.zeros(0, 12), "empty"),
    (torch.zeros(10, 7), "datapoints have 7 values but the model's x_dim is 12"),
    (torch.full((10, 12), 0.5), "needs binary data"),
    (torch.full((10, 12), 2.0), r"must lie in \[0, 1\]"),
])
def test_bad_training_data(data, message):
    with pytest.raises(ConfigError, match=message):
        Trainer(small_vae(), batch_size=5, progress=False).fit(data)


def test_batch_larger_than_data(binary_data):
    with pytest.raises(ConfigError, match="larger than the training set"):
        Trainer(small_vae(), batch_size=1000, progress=False).fit(binary_data)


def test_existing_run_is_not_overwritten(binary_data, tmp_path):
    out = str(tmp_path / "run")
    Trainer(small_vae(), epochs=1, out=out, progress=False).fit(binary_data)
    before = open(os.path.join(out, "checkpoint.pt"), "rb").read()
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(small_vae(), epochs=1, out=out, progress=False).fit(binary_data)
    assert open(os.path.join(out, "checkpoint.pt"), "rb").read() == before
    Trainer(small_vae(), epochs=1, out=out, overwrite=True, progress=False).fit(binary_data)


def test_resume_of_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(ConfigError, match="not a pyvae run"):
        Trainer.resume(str(tmp_path))


def test_callbacks_get_each_record(binary_data):
    seen = []
    Trainer(small_vae(), epochs=3, batch_size=100, progress=False,
            callbacks=[lambda trainer, record: seen.append(record["epoch"])]).fit(binary_data)
    assert seen == [1, 2, 3]


def test_jit_training_matches_and_resumes_exactly(binary_data, tmp_path):
    """The compiled objective computes the same ELBO; a resumed compiled run repeats exactly."""
    def fresh(out, epochs, jit):
        pyro.set_rng_seed(0)
        return Trainer(small_vae(), epochs=epochs, batch_size=64, out=out, progress=False, jit=jit)
    data = lambda: TensorData(binary_data, binarize="dynamic")  # 600 rows: a last batch of 24
    plain = fresh(None, 3, False).fit(data())
    full = fresh(str(tmp_path / "a"), 3, True).fit(data())
    for p, j in zip(plain, full):
        assert j["train_elbo"] == pytest.approx(p["train_elbo"], abs=1e-4)
        assert j["valid_elbo"] is None
    fresh(str(tmp_path / "b"), 1, True).fit(data())
    resumed = Trainer.resume(str(tmp_path / "b"), epochs=3, progress=False).fit(data())
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]
    assert strip(resumed) == strip(full)


def test_jit_needs_a_compilable_loss():
    with pytest.raises(ConfigError, match="--jit works with the losses"):
        Trainer(small_vae(), loss="piwae", particles=5, groups=2, jit="on")
    with pytest.raises(ConfigError, match="--jit works with the losses"):
        Trainer(small_vae(), loss="iwae", particles=5, estimator="dreg", jit="on")
