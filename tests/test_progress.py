"""Progress bars on the command line follow tqdm's own rule: drawn where a terminal is attached,
not in a pipe or a log file, never with --no-progress. Every command passes ``progress=None``
(tqdm's ``disable=None``) down unless --no-progress makes it False; under a pseudo-terminal the
bars are drawn and train's one line per epoch still prints."""
import fcntl
import inspect
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

import pyvae
from pyvae.training.trainer import Trainer
from runs import binary_rows, cli, train, write_data

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
SMALL = ["--z-dim", "2", "--hidden", "4", "--batch-size", "20", "--valid-size", "20"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    x, labels = binary_rows(60)
    return write_data(tmp_path_factory.mktemp("progress") / "data.pt", x, labels)


@pytest.fixture(scope="module")
def run_dir(data_file, tmp_path_factory):
    return train(tmp_path_factory.mktemp("progress-run") / "run", data_file, *SMALL)


def _spy(monkeypatch, module, name, seen):
    """Replace ``module.name`` by a function that records the ``progress`` it is given."""
    real = getattr(module, name)

    def spy(*args, **kwargs):  # (given by name or by position)
        seen.append(inspect.signature(real).bind(*args, **kwargs).arguments["progress"])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)


@pytest.mark.parametrize("flags, expected", [([], None), (["--no-progress"], False)])
def test_every_command_passes_none_unless_no_progress(flags, expected, data_file, run_dir,
                                                      tmp_path, monkeypatch, one_thread):
    seen = {}

    class SpyTrainer(Trainer):  # train and train --resume build their Trainer through this
        def __init__(self, *args, **kwargs):
            seen.setdefault("train", []).append(kwargs["progress"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(pyvae.cli.train, "Trainer", SpyTrainer)
    out = str(tmp_path / "run")
    assert cli("train", "--data-file", data_file, "--out", out, "--epochs", "1", *SMALL, *flags) == 0
    assert cli("train", "--resume", out, "--epochs", "2", *flags) == 0
    _spy(monkeypatch, pyvae.run.evaluation, "evaluate_run", seen.setdefault("evaluate", []))
    assert cli("evaluate", run_dir, "--num-samples", "5", *flags) == 0
    _spy(monkeypatch, pyvae.run.bdmc, "bdmc_run", seen.setdefault("bdmc", []))
    assert cli("bdmc", run_dir, "--steps", "2", "--chains", "2", "--num-datapoints", "2", *flags) == 0
    _spy(monkeypatch, pyvae.cli.compare, "compare", seen.setdefault("compare", []))
    assert cli("compare", "--data-file", data_file, "--out", str(tmp_path / "cmp"), "--guides",
               "diagonal", "--epochs", "1", "--num-samples", "5", "--iwae-k", "2", *SMALL,
               *flags) == 0
    assert seen == {"train": [expected, expected], "evaluate": [expected],
                    "bdmc": [expected], "compare": [expected]}


def _in_terminal(*argv):
    """What ``python -m pyvae ARGV`` writes to a pseudo-terminal as its stdout and stderr."""
    master, slave = pty.openpty()
    # 30 rows x 100 columns: tqdm sizes its bar to the terminal (a 0 x 0 one gets none)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "pyvae", *map(str, argv)], stdin=slave,
                            stdout=slave, stderr=slave, env=env, cwd=ROOT)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=300) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_bars_where_a_terminal_is_attached_and_the_epoch_lines_still_print(data_file, tmp_path):
    text = _in_terminal("train", "--data-file", data_file, "--out", tmp_path / "a", "--epochs",
                        "2", "--threads", "1", *SMALL)
    assert "epoch 1/2" in text and "epoch 2/2" in text  # tqdm's bar, one per epoch
    assert "epoch 1: train ELBO" in text and "epoch 2: train ELBO" in text
    text = _in_terminal("train", "--data-file", data_file, "--out", tmp_path / "b", "--epochs",
                        "2", "--threads", "1", "--no-progress", *SMALL)
    assert "epoch 1/2" not in text and "epoch 2: train ELBO" in text
    text = _in_terminal("evaluate", tmp_path / "a", "--num-samples", "7", "--threads", "1")
    assert "log p(x), K=7" in text.split("split")[0]  # the bar's label, before the table


def test_no_bars_in_a_pipe_and_the_epoch_lines_still_print(data_file, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "pyvae", "train", "--data-file", data_file,
                           "--out", str(tmp_path / "a"), "--epochs", "2", "--threads", "1",
                           *SMALL], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1/2" not in proc.stderr and "epoch 1/2" not in proc.stdout
    assert "epoch 1: train ELBO" in proc.stdout and "epoch 2: train ELBO" in proc.stdout


def _public_callables():
    """(name, callable) for every function and class pyvae exports and the methods of its
    classes, the public ones."""
    seen = {}
    modules = [pyvae] + [getattr(pyvae, n) for n in pyvae.__all__
                         if inspect.ismodule(getattr(pyvae, n))]
    for module in modules:
        for name in getattr(module, "__all__", dir(module)):
            obj = getattr(module, name, None)
            if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            seen[f"{obj.__module__}.{obj.__qualname__}"] = obj
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    member = getattr(member, "__func__", member)
                    if inspect.isfunction(member) and (attr == "__init__" or not attr.startswith("_")):
                        seen[f"{obj.__module__}.{obj.__qualname__}.{attr}"] = member
    return sorted(seen.items())


def test_every_public_progress_argument_defaults_to_tqdms_terminal_rule():
    # progress=None is tqdm's disable=None: a bar where a terminal is attached (a notebook or a
    # shell), none in a pipe or a log; True and False force it
    found, wrong = [], []
    for name, obj in _public_callables():
        try:
            parameters = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            continue
        if "progress" in parameters:
            found.append(name)
            if parameters["progress"].default is not None:
                wrong.append(f"{name}: {parameters['progress'].default!r}")
    assert {"pyvae.infer.evaluate.log_likelihood", "pyvae.infer.ais.ais",
            "pyvae.run.directory.Run.bdmc", "pyvae.reports.compare.compare"} <= set(found), found
    assert wrong == []
