"""A run that diverges or is interrupted stops cleanly, keeps a checkpoint it can resume from, and
the resumed run ends exactly where an uninterrupted one does.

Nothing here races a clock: the fault (a non-finite loss, a SIGINT) is injected from inside the
model's Pyro function at the first step after the epoch-1 checkpoint has appeared on disk. (The
exit status of the real process on a signal is checked in test_cli.py.)"""
import os
import signal

import pytest
import torch

import pyvae
from runs import binary_rows, checkpoint, cli, metrics, train, without_seconds, write_data

# --jit off: the faults are injected from the model's Python code, which a compiled step
# traces once and then no longer runs
FLAGS = ["--z-dim", "2", "--hidden", "8", "--batch-size", "20", "--valid-size", "20",
         "--threads", "1", "--seed", "3", "--jit", "off"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    x, _ = binary_rows(120)  # 100 training rows: 5 steps per epoch
    return write_data(tmp_path_factory.mktemp("signals") / "data.pt", x)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_file):
    """The same run, never interrupted."""
    return train(tmp_path_factory.mktemp("signals-ref") / "ref", data_file, *FLAGS, epochs=3)


def _after_first_checkpoint(monkeypatch, out, action):
    """Run ``action(x)`` in the model at every step once ``out``/checkpoint.pt exists; it returns
    the x the model then sees."""
    model = pyvae.VAE.model
    state = {"calls": 0, "checkpoint": None}

    def wrapped(self, x):
        path = os.path.join(out, "checkpoint.pt")
        if os.path.exists(path):
            if state["checkpoint"] is None:
                with open(path, "rb") as f:
                    state["checkpoint"] = f.read()
            state["calls"] += 1
            x = action(x, state)
        return model(self, x)

    monkeypatch.setattr(pyvae.VAE, "model", wrapped)
    return state


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_divergence_exits_1_keeps_the_last_good_checkpoint_and_resumes(
        tmp_path, data_file, reference, monkeypatch, capsys, one_thread):
    out = str(tmp_path / "run")
    state = _after_first_checkpoint(monkeypatch, out, lambda x, s: x * float("nan"))
    code = cli("train", "--data-file", data_file, "--out", out, "--epochs", "3", "--no-progress", *FLAGS)
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "at epoch 2, step 1" in err and "last good checkpoint is kept" in err
    assert state["calls"] >= 1
    # the checkpoint on disk is the one written after epoch 1, byte for byte, with finite weights
    with open(os.path.join(out, "checkpoint.pt"), "rb") as f:
        assert f.read() == state["checkpoint"]
    payload = checkpoint(out)
    assert payload["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in payload["model_state"].values())
    assert [r["epoch"] for r in metrics(out)] == [1]

    monkeypatch.undo()  # the fault is gone: resuming finishes the run as if nothing happened
    assert cli("train", "--resume", out, "--no-progress") == 0
    assert [r["epoch"] for r in metrics(out)] == [1, 2, 3] and checkpoint(out)["epoch"] == 3
    assert without_seconds(metrics(out)) == without_seconds(metrics(reference))
    ref = checkpoint(reference)["model_state"]
    assert all(torch.equal(v, ref[k]) for k, v in checkpoint(out)["model_state"].items())


class _Unhandled(Exception):
    pass


def test_sigint_exits_130_with_a_mid_epoch_checkpoint_and_resumes(
        tmp_path, data_file, reference, monkeypatch, capsys, one_thread):
    out = str(tmp_path / "run")

    def interrupt(x, state):
        if state["calls"] == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return x

    def unhandled(signum, frame):  # the trainer must have installed its own handler
        raise _Unhandled("SIGINT reached the handler outside the training loop")

    previous = signal.signal(signal.SIGINT, unhandled)
    try:
        _after_first_checkpoint(monkeypatch, out, interrupt)
        code = cli("train", "--data-file", data_file, "--out", out, "--epochs", "3", "--no-progress", *FLAGS)
        assert signal.getsignal(signal.SIGINT) is unhandled  # restored after training
    finally:
        signal.signal(signal.SIGINT, previous)
    err = capsys.readouterr().err
    assert code == 130, err
    assert err.count("\n") == 1 and "stopped by SIGINT at epoch 2, step 1" in err
    payload = checkpoint(out)
    assert payload["epoch"] == 1 and payload["step"] == 1  # inside epoch 2, after one step
    assert [r["epoch"] for r in metrics(out)] == [1]

    monkeypatch.undo()
    assert cli("train", "--resume", out, "--no-progress") == 0
    assert [r["epoch"] for r in metrics(out)] == [1, 2, 3] and checkpoint(out)["epoch"] == 3
    assert without_seconds(metrics(out)) == without_seconds(metrics(reference))
