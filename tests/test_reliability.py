"""Guarantees of docs/reliability.md: nothing lost, nothing silently wrong."""
import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyro
import pytest
import torch

import pyvae
from pyvae import evaluate
import pyvae.cli.train
from pyvae.cli import main
from pyvae.errors import ConfigError, TrainingDiverged
from pyvae.training import checkpoint as checkpoint_module, evalrun
from pyvae.training.rundir import RunDir
from bad_inputs import CASES
from runs import file_contents

SMALL = ["--valid-size", "100", "--batch-size", "50", "--z-dim", "2", "--hidden", "8",
         "--no-progress"]


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "pyvae", *args], capture_output=True, text=True,
                          **kwargs)


@pytest.fixture
def data(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((400, 12), 0.3), generator=g)
    path = tmp_path / "data.pt"
    torch.save(x, path)
    return x, str(path)


def _train(data_file, out, *extra, epochs=1):
    return main(["train", "--data-file", data_file, *SMALL, "--epochs", str(epochs),
                 "--out", str(out), *extra])


# ---------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16", "int64", "bool"])
def test_data_of_any_real_dtype_trains(dtype, data, tmp_path, capsys):
    x, _ = data
    if dtype == "bfloat16":  # NumPy has no bfloat16: a .pt file
        path = str(tmp_path / "x.pt")
        torch.save(x.to(torch.bfloat16), path)
    else:
        path = str(tmp_path / "x.npy")
        np.save(path, x.numpy().astype(dtype))
    assert _train(path, tmp_path / "run") == 0
    assert "epoch 1: train ELBO" in capsys.readouterr().out


def test_trainer_and_log_likelihood_convert_dtypes(data):
    x, _ = data
    vae = pyvae.VAE(x_dim=12, z_dim=2, hidden=[8])
    pyvae.Trainer(vae, epochs=1, batch_size=100, progress=False).fit(x.double())
    values = [evaluate.log_likelihood(vae.model, vae.guide, x[:20].to(dtype), num_samples=10,
                                      progress=False).mean
              for dtype in (torch.float64, torch.int64, torch.bool, torch.float16)]
    assert all(np.isfinite(values))


@pytest.mark.parametrize("x, message", [
    (torch.zeros(10, 12, dtype=torch.complex64), "complex"),
    (torch.full((10, 12), 0.5), "outside the support of its Bernoulli"),
    (torch.zeros(12), "shape (N, x_dim)"),
])
def test_log_likelihood_refuses(x, message):
    vae = pyvae.VAE(x_dim=12, z_dim=2, hidden=[8])
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        evaluate.log_likelihood(vae.model, vae.guide, x, num_samples=5, progress=False)


def test_complex_and_sparse_training_data_are_refused():
    with pytest.raises(ConfigError, match="complex data are not supported"):
        pyvae.TensorData(torch.zeros(10, 3, dtype=torch.complex64))
    with pytest.raises(ConfigError, match="sparse tensors are not supported"):
        pyvae.TensorData(torch.eye(4).to_sparse())


@pytest.mark.parametrize("hidden", ["88", [8, "8"], [8.5], [True]])
def test_vae_hidden_must_be_integers(hidden):
    with pytest.raises(ConfigError, match="hidden must be a sequence of integers"):
        pyvae.VAE(x_dim=12, z_dim=2, hidden=hidden)


# ---------------------------------------------------------------------------- overwrite
def test_failed_overwrite_leaves_the_old_run_untouched(data, tmp_path, capsys):
    _, path = data
    run = tmp_path / "run"
    assert _train(path, run) == 0
    (run / "eval.json").write_text("{}")
    before = file_contents(run)
    # the new run diverges in its first epoch: the old directory must stay as it was
    assert _train(path, run, "--overwrite", "--lr", "1e10", "--batch-size", "300") == 1
    assert file_contents(run) == before
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
    # a successful overwrite replaces everything: no eval.json of the old model survives
    assert _train(path, run, "--overwrite", "--z-dim", "3") == 0
    assert not (run / "eval.json").exists()
    assert json.load(open(run / "config.json"))["vae"]["z_dim"] == 3


def test_a_directory_of_user_files_is_not_replaced_without_overwrite(data, tmp_path, capsys):
    _, path = data
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("my notes")
    assert _train(path, mine) == 2
    assert "is not empty and is not a pyvae run" in capsys.readouterr().err
    assert (mine / "config.json").read_text() == "my notes"
    assert _train(path, mine, "--overwrite") == 0
    assert (mine / "checkpoint.pt").exists()


def test_compare_does_not_replace_a_family_run_without_overwrite(data, tmp_path):
    x, _ = data
    out = tmp_path / "cmp"
    Trainer = pyvae.Trainer
    Trainer(pyvae.VAE(x_dim=12, z_dim=2, hidden=[8]), epochs=1, batch_size=100,
            out=str(out / "diagonal"), progress=False).fit(x)
    before = file_contents(out / "diagonal")
    kw = dict(epochs=1, num_samples=10, iwae_k=[2], z_dim=2, hidden=[8], batch_size=100,
              out=str(out), log=None)
    with pytest.raises(ConfigError, match="is not empty and is not a pyvae comparison"):
        pyvae.compare(["diagonal"], x[:300], x[300:], **kw)
    assert file_contents(out / "diagonal") == before
    pyvae.compare(["diagonal"], x[:300], x[300:], overwrite=True, **kw)
    assert file_contents(out / "diagonal") != before


def test_epochs_zero_writes_an_untrained_run_and_no_temp_files(data, tmp_path):
    x, _ = data
    out = tmp_path / "run"
    pyvae.Trainer(pyvae.VAE(x_dim=12, z_dim=2, hidden=[8]), epochs=0, out=str(out),
                  progress=False).fit(x)
    assert sorted(os.listdir(tmp_path)) == ["data.pt", "run"]
    assert not [name for name in os.listdir(out) if name.startswith(".tmp-")]
    assert pyvae.Run(str(out)).checkpoint["epoch"] == 0


# ---------------------------------------------------------------------------- NaN
def test_nan_parameters_after_the_last_step_are_never_checkpointed(data, tmp_path):
    x, _ = data
    out = str(tmp_path / "run")

    def blow_up(trainer, record):  # from epoch 2 on, one step of lr 1e10 sends weights to NaN
        for group in trainer.optimizer.param_groups:
            group["lr"] = 1e10

    trainer = pyvae.Trainer(pyvae.VAE(x_dim=12, z_dim=2, hidden=[8]), epochs=3, batch_size=300,
                            out=out, progress=False, callbacks=[blow_up])
    with pytest.raises(TrainingDiverged, match="NaN or Inf at epoch 2"):
        trainer.fit(x[:300], x[300:])
    payload = checkpoint_module.load_checkpoint(os.path.join(out, "checkpoint.pt"))
    assert payload["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in payload["model_state"].values())
    lines = open(os.path.join(out, "metrics.jsonl")).read()
    assert "NaN" not in lines and len(lines.splitlines()) == 1


# ---------------------------------------------------------------------------- lock
def test_one_writer_per_run_directory(data, tmp_path):
    _, path = data
    run = tmp_path / "run"
    assert _train(path, run) == 0
    with RunDir(str(run), resume=True):
        proc = _cli("train", "--resume", str(run), "--epochs", "2")
        assert proc.returncode == 2 and "in use by another pyvae process" in proc.stderr
        proc = _cli("evaluate", str(run), "--num-samples", "5")
        assert proc.returncode == 2 and "in use" in proc.stderr
        proc = _cli("bdmc", str(run), "--steps", "2", "--chains", "2", "--num-datapoints", "2")
        assert proc.returncode == 2 and "in use" in proc.stderr
        proc = _cli("snr", str(run), "--k", "1", "--repeats", "2", "--batch-size", "4")
        assert proc.returncode == 2 and "in use" in proc.stderr
        assert not (run / "bdmc.json").exists() and not (run / "snr.json").exists()
        proc = _cli("train", "--data-file", path, *SMALL, "--out", str(run), "--overwrite")
        assert proc.returncode == 2 and "in use" in proc.stderr
    # the kernel releases a lock when its process dies, kill -9 included
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pyvae.training.rundir import RunDir; "
        f"d = RunDir({str(run)!r}, resume=True); print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(ConfigError, match="in use"):
        RunDir(str(run), resume=True)
    holder.kill()
    holder.wait()
    RunDir(str(run), resume=True).close()


# ---------------------------------------------------------------------------- resume
def test_resume_checks_data_and_records_paths(data, tmp_path, monkeypatch, capsys):
    x, _ = data
    monkeypatch.chdir(tmp_path)
    assert _train("data.pt", "run", "--data-dir", "somewhere") == 0
    stored = json.load(open(tmp_path / "run" / "config.json"))["data"]
    assert stored["data_file"] == str(tmp_path / "data.pt")
    assert stored["data_dir"] == str(tmp_path / "somewhere")
    assert len(stored["fingerprint"]["train"]) == 64
    monkeypatch.chdir("/")  # resume and evaluate from elsewhere
    assert main(["train", "--resume", str(tmp_path / "run"), "--epochs", "2", "--no-progress"]) == 0
    torch.save(1 - x, tmp_path / "data.pt")  # the data changed under the run
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "run"), "--epochs", "3", "--no-progress"]) == 2
    assert "training data differ" in capsys.readouterr().err


def test_recorded_data_dir_is_used(monkeypatch):
    seen = {}

    def fake(name, split, data_dir=None, **kw):
        seen["data_dir"] = data_dir
        raise ConfigError("stop")
    monkeypatch.setattr(pyvae.data.recorded, "load_dataset", fake)
    with pytest.raises(ConfigError, match="stop"):
        pyvae.data.load_split({"dataset": "mnist", "data_dir": "/data/mnist", "valid_size": None,
                               "binarize": "dynamic", "seed": 0}, "test")
    assert seen["data_dir"] == "/data/mnist"


# ---------------------------------------------------------------------------- files
def test_run_files_get_the_umask_mode(data, tmp_path):
    _, path = data
    old = os.umask(0o027)
    try:
        assert _train(path, tmp_path / "run") == 0
    finally:
        os.umask(old)
    for name in ("checkpoint.pt", "config.json", "metrics.jsonl"):
        assert os.stat(tmp_path / "run" / name).st_mode & 0o777 == 0o640, name
    assert os.stat(tmp_path / "run").st_mode & 0o777 == 0o750


def test_stale_temp_files_are_removed_when_a_writer_opens_the_run(data, tmp_path):
    _, path = data
    run = tmp_path / "run"
    assert _train(path, run) == 0
    (run / ".tmp-abc123").write_bytes(b"x" * 1000)  # what a kill -9 inside a write leaves
    stale = tmp_path / ".tmp-run-zzz"  # a new run killed before its first checkpoint
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    assert not (run / ".tmp-abc123").exists()
    assert _train(path, run, "--overwrite") == 0
    assert not stale.exists()


def test_metrics_never_lag_the_checkpoint(data, tmp_path):
    _, path = data
    run = tmp_path / "run"
    assert _train(path, run, epochs=2) == 0
    (run / "metrics.jsonl").write_text("")  # as if killed between the two writes
    with RunDir(str(run), resume=True):
        pass
    trainer = pyvae.Trainer.resume(str(run), epochs=3, progress=False)
    trainer.fit(*pyvae.data.load_train_valid(trainer.extra_config))
    assert len(open(run / "metrics.jsonl").read().splitlines()) == 3


@pytest.mark.parametrize("command", ["train", "resume", "evaluate"])
def test_disk_full_is_one_line(command, data, tmp_path, monkeypatch, capsys):
    _, path = data
    run = tmp_path / "run"
    if command != "train":
        assert _train(path, run) == 0
    before = file_contents(tmp_path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "checkpoint.pt")
    if command == "evaluate":
        monkeypatch.setattr(evalrun, "write_json", full)
        code = main(["evaluate", str(run), "--num-samples", "5", "--no-progress"])
    else:
        monkeypatch.setattr(checkpoint_module, "atomic_write", full)
        code = (_train(path, run) if command == "train" else
                main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]))
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "No space left on device" in captured.err and captured.err.count("\n") == 1
    if command == "evaluate":  # the finished work is printed and kept
        assert "log p(x), K=5" in captured.out
        assert (run / "eval-progress.pt").exists()
    else:
        assert file_contents(tmp_path) == before


# ---------------------------------------------------------------------------- README's Python
def test_a_run_written_from_python_works_with_the_cli(tmp_path, capsys):
    train = pyvae.load_dataset("linear-gaussian", "train", valid_size=1000)
    valid = pyvae.load_dataset("linear-gaussian", "valid", valid_size=1000)
    out = str(tmp_path / "py")
    pyro.set_rng_seed(0)
    vae = pyvae.VAE(x_dim=5, z_dim=2, hidden=(16,), likelihood="gaussian")
    pyvae.Trainer(vae, batch_size=1000, epochs=1, out=out, progress=False).fit(train, valid)
    assert main(["evaluate", out, "--num-samples", "5", "--max-datapoints", "50",
                 "--no-progress"]) == 0
    assert main(["train", "--resume", out, "--epochs", "2", "--no-progress"]) == 0
    assert main(["plot", out, "--num-points", "50"]) == 0


def test_a_run_on_bare_tensors_says_so(data, tmp_path, capsys):
    x, _ = data
    out = str(tmp_path / "bare")
    pyvae.Trainer(pyvae.VAE(x_dim=12, z_dim=2, hidden=[8]), epochs=1, out=out,
                  progress=False).fit(x)
    assert main(["evaluate", out, "--num-samples", "5"]) == 2
    assert "does not record its data" in capsys.readouterr().err


# ---------------------------------------------------------------------------- plot
def test_plot_refuses_damaged_files(data, tmp_path, capsys):
    _, path = data
    run = tmp_path / "run"
    assert _train(path, run) == 0
    (run / "metrics.jsonl").write_text('{"epoch": 1, "train_elbo": -3.0}\n{"epo')
    assert main(["plot", str(run), "--num-points", "20"]) == 2
    assert "metrics.jsonl is damaged" in capsys.readouterr().err
    payload = checkpoint_module.load_checkpoint(str(run / "checkpoint.pt"))
    payload["vae_config"]["z_dim"] = 5
    checkpoint_module.save_checkpoint(str(run / "checkpoint.pt"), payload)
    for args in (["plot", str(run)], ["evaluate", str(run)],
                 ["compare", "--shared-decoder", str(run), "--out", str(tmp_path / "c"),
                  "--guides", "diagonal", "--epochs", "0", "--num-samples", "10",
                  "--iwae-k", "2"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "does not fit" in err and err.count("\n") == 1, err


# ---------------------------------------------------------------------------- signals
def test_ctrl_c_before_training_is_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(pyvae.cli.train, "cmd_train", interrupted)
    assert main(["train", "--out", "x", "--data-file", "y"]) == 130
    assert capsys.readouterr().err == "pyvae train: interrupted\n"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_evaluate_stops_cleanly_and_continues_where_it_stopped(sig, tmp_path):
    g = torch.Generator().manual_seed(1)
    path = tmp_path / "d.pt"
    torch.save(torch.bernoulli(torch.full((1000, 12), 0.3), generator=g), path)
    run = tmp_path / "run"
    assert _cli("train", "--data-file", str(path), *SMALL, "--valid-size", "600", "--epochs", "1",
                "--out", str(run)).returncode == 0
    args = ["evaluate", str(run), "--num-samples", "20000", "--batch-size", "10",
            "--max-datapoints", "200", "--json",
            "--no-progress", "--threads", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "pyvae", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "eval-progress.pt").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert f"stopped by {sig.name} after" in err and "Traceback" not in err
    assert err.strip().count("\n") == 0
    continued = _cli(*args)
    assert continued.returncode == 0 and "continuing from" in continued.stderr
    assert not (run / "eval-progress.pt").exists()
    whole = _cli(*args)
    strip = lambda text: {k: v for k, v in json.loads(text).items() if "seconds" not in k}
    assert strip(continued.stdout) == strip(whole.stdout)


# ---------------------------------------------------------------------------- kill -9 loop
@pytest.mark.slow
def test_kill9_loop_over_train_and_resume(tmp_path):
    """kill -9 at random moments of train and resume: never a stray temp file once a writer has
    opened the directory again, always a loadable run, and the finished run's metrics equal the
    uninterrupted run's."""
    trials = int(os.environ.get("PYVAE_KILL_TRIALS", "100"))
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "big.pt"
    torch.save(torch.rand(1500, 12, generator=g), path)
    common = ["--data-file", str(path), "--valid-size", "500", "--binarize", "dynamic",
              "--batch-size", "10", "--z-dim", "2", "--hidden", "16", "--epochs", "3",
              "--threads", "1", "--no-progress"]
    ref = tmp_path / "ref"
    started = time.perf_counter()
    assert _cli("train", *common, "--out", str(ref)).returncode == 0
    # kills land anywhere in a run as long as this machine takes for one (start-up included),
    # so that some cut runs have a checkpoint to resume from however loaded the machine is
    whole_run = time.perf_counter() - started
    reference = [{k: v for k, v in json.loads(line).items() if "seconds" not in k}
                 for line in open(ref / "metrics.jsonl")]
    rng = random.Random(0)
    cut, finished, killed, resumed = tmp_path / "cut", 0, 0, 0
    for trial in range(trials):
        is_run = (cut / "checkpoint.pt").exists()
        if is_run and len(checkpoint_module.load_checkpoint(str(cut / "checkpoint.pt"))["history"]) == 3:
            # killed after its last checkpoint: finished, start over
            got = [{k: v for k, v in json.loads(line).items() if "seconds" not in k}
                   for line in open(cut / "metrics.jsonl")]
            assert got == reference, trial
            shutil.rmtree(cut)
            is_run = False
        args = ["train", "--resume", str(cut)] if is_run else ["train", *common, "--out", str(cut)]
        resumed += is_run
        proc = subprocess.Popen([sys.executable, "-m", "pyvae", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            # mostly a kill at a random moment; now and then the run may finish
            proc.wait(timeout=rng.uniform(0.1, 1.0) * whole_run if rng.random() < 0.85 else 120)
        except subprocess.TimeoutExpired:
            proc.kill()
        _, err = proc.communicate()
        assert proc.returncode in (0, -signal.SIGKILL), err
        killed += proc.returncode == -signal.SIGKILL
        if (cut / "checkpoint.pt").exists():
            payload = checkpoint_module.load_checkpoint(str(cut / "checkpoint.pt"))
            lines = open(cut / "metrics.jsonl").read().splitlines()
            assert len(lines) >= len(payload["history"]), trial
        if proc.returncode == 0:  # finished: compare, then start over
            got = [{k: v for k, v in json.loads(line).items() if "seconds" not in k}
                   for line in open(cut / "metrics.jsonl")]
            assert got == reference, trial
            assert not [n for n in os.listdir(cut) if n.startswith(".tmp-")]
            finished += 1
            shutil.rmtree(cut)
    # finish the last one; afterwards no temp file is left anywhere
    while not (cut / "checkpoint.pt").exists() or len(
            checkpoint_module.load_checkpoint(str(cut / "checkpoint.pt"))["history"]) < 3:
        args = (["train", "--resume", str(cut), "--epochs", "3"] if (cut / "checkpoint.pt").exists()
                else ["train", *common, "--out", str(cut)])
        assert _cli(*args).returncode == 0
    got = [{k: v for k, v in json.loads(line).items() if "seconds" not in k}
           for line in open(cut / "metrics.jsonl")]
    assert got == reference
    leftovers = [os.path.join(root, n) for root, dirs, files in os.walk(tmp_path)
                 for n in dirs + files if n.startswith(".tmp-")]
    assert not leftovers
    # the loop must have cut runs and resumed cut runs, or it proved nothing
    assert killed >= 1 and resumed >= 1, (trials, killed, resumed, finished)


def test_every_test_named_in_reliability_md_exists():
    here = os.path.dirname(__file__)
    doc = open(os.path.join(here, "..", "docs", "reliability.md")).read()
    sources = "".join(open(os.path.join(here, n)).read() for n in os.listdir(here) if n.endswith(".py"))
    tests = set(re.findall(r"`(?:tests/\w+\.py::)?(test_\w+)(?:\[\w+\])?`", doc))
    assert len(tests) > 20
    assert [t for t in tests if f"def {t}(" not in sources] == []
    ids = {c[0] for c in CASES}
    cases = set()
    for cell in re.findall(r"corpus cases? ([^|;]*)", doc):
        cases |= set(re.findall(r"`([a-z0-9*-]+)`", cell))
    assert len(cases) > 20
    unknown = [c for c in cases if not any(i == c or (c.endswith("*") and i.startswith(c[:-1]))
                                           for i in ids)]
    assert unknown == []
