"""Trainer callbacks: the hooks, their order, and the TensorBoard writer."""
import json
import math
import os

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import pyvae
from pyvae import Trainer
from pyvae.cli import main
from pyvae.training.callbacks import Callback


class Recorder(Callback):
    def __init__(self, name, log):
        self.name, self.log = name, log

    def wrap(self, trainer, model, guide):
        self.log.append((self.name, "wrap"))
        return model, guide

    def on_fit_start(self, trainer):
        self.log.append((self.name, "fit_start"))

    def on_epoch_start(self, trainer, epoch):
        self.log.append((self.name, "epoch_start", epoch))

    def on_step_start(self, trainer, epoch, step, steps):
        self.log.append((self.name, "step_start", epoch, step, steps))

    def on_step_end(self, trainer, epoch, step, loss):
        assert isinstance(loss, float)
        self.log.append((self.name, "step_end", epoch, step))

    def on_epoch_end(self, trainer, record):
        self.log.append((self.name, "epoch_end", record["epoch"]))

    def on_fit_end(self, trainer):
        self.log.append((self.name, "fit_end"))


def small_vae():
    return pyvae.VAE(x_dim=12, z_dim=2, hidden=(8,))


def test_hooks_run_in_order_for_each_callback(binary_data):
    log = []
    Trainer(small_vae(), epochs=2, batch_size=300, progress=False,
            callbacks=[Recorder("a", log), Recorder("b", log)]).fit(binary_data)
    expected = [("wrap",), ("fit_start",)]
    for epoch in range(2):
        expected.append(("epoch_start", epoch))
        for step in range(2):
            expected += [("step_start", epoch, step, 2), ("step_end", epoch, step)]
        expected.append(("epoch_end", epoch + 1))
    expected.append(("fit_end",))
    assert log == [(name, *event) for event in expected for name in ("a", "b")]


def test_user_callbacks_run_after_the_run_directory_is_written(binary_data, tmp_path):
    out = str(tmp_path / "run")
    seen = []

    def check(trainer, record):  # a plain function is an on_epoch_end hook
        with open(os.path.join(out, "metrics.jsonl")) as f:
            seen.append(len(f.readlines()) == record["epoch"])

    Trainer(small_vae(), epochs=2, batch_size=100, out=out, progress=False,
            callbacks=[check]).fit(binary_data)
    assert seen == [True, True]


def test_fit_end_runs_after_an_error(binary_data):
    log = []

    class Boom(Callback):
        def on_step_end(self, trainer, epoch, step, loss):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        Trainer(small_vae(), epochs=1, batch_size=100, progress=False,
                callbacks=[Boom(), Recorder("r", log)]).fit(binary_data)
    assert log[-1] == ("r", "fit_end")


def test_kl_weight_callback_scales_the_latent_site(binary_data):
    history = Trainer(small_vae(), epochs=2, batch_size=100, beta=0.5, kl_warmup=1.0,
                      progress=False).fit(binary_data)
    assert [r["beta"] for r in history] == [pytest.approx(0.5 * 5 / 6), 0.5]
    assert history[0]["train_objective"] == "beta-ELBO"


def test_tensorboard_run_writes_scalars_that_tensorboard_reads(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = str(tmp_path / "x.pt")
    torch.save(torch.bernoulli(torch.full((200, 12), 0.3), generator=g), data)
    out = str(tmp_path / "run")
    assert main(["train", "--data-file", data, "--z-dim", "2", "--hidden", "8", "--epochs", "3",
                 "--batch-size", "50", "--schedule", "cosine", "--out", out, "--tensorboard",
                 "--no-progress"]) == 0
    events = EventAccumulator(os.path.join(out, "tensorboard"))
    events.Reload()
    assert {"train_elbo", "valid_elbo", "lr"} <= set(events.Tags()["scalars"])
    with open(os.path.join(out, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    for key in ("train_elbo", "valid_elbo", "lr"):
        scalars = events.Scalars(key)
        assert [s.step for s in scalars] == [1, 2, 3]
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in records], rel=1e-6)
    # the cosine schedule, through torch's LambdaLR: lr_e = lr (0.01 + 0.99 (1 + cos(pi e / E)) / 2)
    assert [r["lr"] for r in records] == pytest.approx(
        [1e-3 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * e / 3))) for e in range(3)])
