import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pyvae.cli import main
from conftest import requires_mnist, MNIST_DIR


@pytest.fixture
def data_file(tmp_path, binary_data):
    path = tmp_path / "data.pt"
    torch.save({"x": binary_data}, path)
    return str(path)


def run_cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "pyvae", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def without_seconds(records):
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in records]


def test_help_for_every_command():
    for args in (["--help"], ["train", "--help"]):
        proc = run_cli(*args)
        assert "usage: pyvae" in proc.stdout


def test_train_writes_run_directory(data_file, tmp_path):
    out = str(tmp_path / "run")
    assert main(["train", "--data-file", data_file, "--valid-size", "100", "--epochs", "2",
                 "--batch-size", "50", "--z-dim", "2", "--hidden", "16", "--out", out,
                 "--no-progress"]) == 0
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["vae"]["hidden"] == [16] and config["data"]["valid_size"] == 100
    records = read_metrics(out)
    assert [r["epoch"] for r in records] == [1, 2]
    assert {"epoch", "train_elbo", "valid_elbo", "seconds"} <= set(records[0])


def test_train_reports_the_objective_it_maximised(data_file, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--data-file", data_file, "--epochs", "1", "--batch-size", "50",
                 "--z-dim", "2", "--hidden", "16", "--loss", "iwae", "--particles", "4",
                 "--out", out, "--no-progress"]) == 0
    assert "epoch 1: train IWAE_4 " in capsys.readouterr().out
    assert read_metrics(out)[0]["train_objective"] == "IWAE_4"


@pytest.mark.parametrize("args, message", [
    (["train", "--epochs", "x"], "argument --epochs: invalid int value"),
    (["train", "--lr", "-1"], "must be a positive number"),
    (["train", "--hidden", "200,a"], "expected comma-separated integers"),
    (["train", "--z-dim", "0"], "must be positive"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_flags_one_line_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("extra, message", [
    (["--guide", "nope"], "unknown guide 'nope'; choose one of"),
    (["--batch-size", "100000"], "larger than the training set"),
    (["--binarize", "sometimes"], "unknown binarize"),
])
def test_bad_config_one_line_exit_2(extra, message, data_file, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train", "--data-file", data_file, "--valid-size", "100", "--out", str(out),
                   "--no-progress", *extra, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr
    assert not (out / "checkpoint.pt").exists()


def test_debug_shows_traceback(data_file, tmp_path):
    proc = run_cli("--debug", "train", "--data-file", data_file, "--guide", "nope",
                   "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_missing_dataset_with_no_download(tmp_path):
    proc = run_cli("train", "--dataset", "mnist", "--data-dir", str(tmp_path / "empty"),
                   "--no-download", "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2
    assert "not found under" in proc.stderr and "download disabled" in proc.stderr


def test_existing_run_refused_and_resume_mismatch(data_file, tmp_path):
    out = str(tmp_path / "run")
    common = ["--data-file", data_file, "--valid-size", "100", "--batch-size", "50",
              "--z-dim", "2", "--hidden", "16", "--no-progress"]
    assert main(["train", *common, "--epochs", "1", "--out", out]) == 0
    before = open(os.path.join(out, "checkpoint.pt"), "rb").read()
    proc = run_cli("train", *common, "--epochs", "1", "--out", out, check=False)
    assert proc.returncode == 2 and "already holds a run" in proc.stderr
    proc = run_cli("train", "--resume", out, "--lr", "0.5", check=False)
    assert proc.returncode == 2 and "config mismatch on resume: --lr 0.5" in proc.stderr
    proc = run_cli("train", "--resume", str(tmp_path), check=False)
    assert proc.returncode == 2 and "not a pyvae run" in proc.stderr
    assert open(os.path.join(out, "checkpoint.pt"), "rb").read() == before


def _train_args(data_file, out, epochs):
    # 8 threads-free, deterministic settings: one thread, many small steps per epoch
    return ["train", "--data-file", data_file, "--valid-size", "1000", "--binarize", "dynamic",
            "--batch-size", "10", "--z-dim", "2", "--hidden", "32", "--epochs", str(epochs),
            "--threads", "1", "--no-progress", "--out", out]


@pytest.fixture
def big_data_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6000, 12, generator=g)
    path = tmp_path / "big.pt"
    torch.save(x, path)
    return str(path)


def _wait_for_epochs(run_dir, n, proc, timeout=120):
    deadline = time.time() + timeout
    path = os.path.join(run_dir, "metrics.jsonl")
    while time.time() < deadline:
        if os.path.exists(path) and len(open(path).read().splitlines()) >= n:
            return
        assert proc.poll() is None, "training ended before it could be interrupted"
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.parametrize("how", ["kill9", "sigterm"])
def test_interrupted_run_resumes_to_identical_metrics(how, big_data_file, tmp_path):
    epochs = 4
    ref, cut = str(tmp_path / "ref"), str(tmp_path / "cut")
    proc = subprocess.Popen([sys.executable, "-m", "pyvae", *_train_args(big_data_file, cut, epochs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # epoch 1 is on disk: the signal lands in epoch 2 (600 steps long), and the loop stops
    # after the step it arrives in, whenever that is
    _wait_for_epochs(cut, 1, proc)
    proc.send_signal(signal.SIGKILL if how == "kill9" else signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if how == "sigterm":
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert "stopped by SIGTERM at epoch 2" in err
        payload = torch.load(os.path.join(cut, "checkpoint.pt"), weights_only=True)
        assert payload["epoch"] == 1 and payload["step"] > 0  # mid-epoch checkpoint
    else:
        assert proc.returncode == -signal.SIGKILL
    assert len(read_metrics(cut)) < epochs
    run_cli("train", "--resume", cut)
    run_cli(*_train_args(big_data_file, ref, epochs))
    assert without_seconds(read_metrics(cut)) == without_seconds(read_metrics(ref))


@requires_mnist
def test_mnist_one_epoch_from_cli(tmp_path):
    """Integration: real MNIST, Burda et al.'s net, one epoch."""
    out = str(tmp_path / "mnist")
    proc = run_cli("train", "--dataset", "mnist", "--data-dir", MNIST_DIR, "--no-download",
                   "--epochs", "1", "--out", out, "--no-progress")
    (record,) = read_metrics(out)
    assert -record["valid_elbo"] < 200, record  # an untrained net scores ~543 nats
    assert "valid ELBO" in proc.stdout
