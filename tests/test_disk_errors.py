"""Writes that fail (docs/reliability.md): a full or read-only disk is one line, the files on disk
stay whole, results are printed before they are written, and messages say only what happened;
and the smaller edges: Ctrl-C while starting, a link as --out, a shared decoder without a model
config, bad arguments to ``pyvae.Run``, seeded figures, the pickle refusal's wording."""
import builtins
import errno
import json
import os
import subprocess
import sys

import pytest
import torch

import pyvae
from bad_inputs import _crafted_checkpoint
from pyvae.cli import main
from pyvae.errors import ConfigError
from pyvae.reports.plots import plot_run
from runs import file_contents

SMALL = ["--valid-size", "100", "--batch-size", "50", "--z-dim", "2", "--hidden", "8",
         "--no-progress"]


@pytest.fixture
def run(tmp_path):
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "d.pt"
    torch.save(torch.bernoulli(torch.full((400, 12), 0.3), generator=g), path)
    out = tmp_path / "run"
    assert main(["train", "--data-file", str(path), *SMALL, "--epochs", "1", "--out", str(out)]) == 0
    return out


class _FailingWriter:
    """A file opened for writing on a full (or read-only) disk: the bytes never land."""

    def __init__(self, f, err):
        self._f, self._err = f, err

    def write(self, data):
        raise OSError(self._err, os.strerror(self._err))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False


def _disk_fails_under(monkeypatch, directory, err=errno.ENOSPC):
    """Every file opened for writing under ``directory`` (by ``open`` or ``os.fdopen``) fails
    on its first write, as on a full disk: the file exists, empty."""
    directory = os.path.realpath(directory)
    real_open, real_fdopen = builtins.open, os.fdopen

    def writing(mode):
        return any(c in mode for c in "wax+")

    def under(path):
        return os.path.realpath(path).startswith(directory + os.sep)

    def fake_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and writing(mode) and under(file):
            return _FailingWriter(f, err)
        return f

    def fake_fdopen(fd, mode="r", *args, **kwargs):
        f = real_fdopen(fd, mode, *args, **kwargs)
        if writing(mode) and under(os.readlink(f"/proc/self/fd/{fd}")):
            return _FailingWriter(f, err)
        return f
    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "fdopen", fake_fdopen)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS], ids=["full", "read-only"])
def test_a_checkpoint_write_that_fails_is_one_line_and_keeps_the_old_one(err, run, monkeypatch,
                                                                         capsys):
    before = file_contents(run)
    _disk_fails_under(monkeypatch, run, err)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 2
    err_text = capsys.readouterr().err
    assert os.strerror(err) in err_text and err_text.count("\n") == 1, err_text
    assert "Traceback" not in err_text and "enforce fail" not in err_text
    assert file_contents(run) == before  # the old checkpoint whole, no temp file left


def test_a_full_disk_never_leaves_a_broken_figure(run, monkeypatch, capsys):
    assert main(["plot", str(run), "--num-points", "50"]) == 0
    figures = run / "figures"
    before = file_contents(figures)
    assert before and all(before.values())
    _disk_fails_under(monkeypatch, figures)
    capsys.readouterr()
    assert main(["plot", str(run), "--num-points", "50"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and err.count("\n") == 1, err
    assert file_contents(figures) == before  # no 0-byte or half figure, no temp file


def test_bdmc_prints_its_bounds_before_writing_them(run, monkeypatch, capsys):
    _disk_fails_under(monkeypatch, run)
    capsys.readouterr()
    assert main(["bdmc", str(run), "--steps", "3", "--chains", "2", "--num-datapoints", "2",
                 "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "lower" in captured.out and "upper" in captured.out  # the bounds are not lost
    assert "No space left on device" in captured.err and captured.err.count("\n") == 1
    assert not (run / "bdmc.json").exists()


def test_evaluate_says_only_what_was_kept(run, monkeypatch, capsys):
    _disk_fails_under(monkeypatch, run)  # neither the progress file nor eval.json can be written
    capsys.readouterr()
    assert main(["evaluate", str(run), "--num-samples", "5", "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "log p(x), K=5" in captured.out
    lines = captured.err.splitlines()
    assert lines[0].startswith("warning: cannot save evaluation progress")
    assert "results are printed above" in lines[-1] and "eval-progress.pt" not in lines[-1]
    assert not (run / "eval-progress.pt").exists() and not (run / "eval.json").exists()


# ---------------------------------------------------------------------------- smaller edges
def test_ctrl_c_while_importing_is_one_line(tmp_path):
    """SIGINT arrives while ``python -m pyvae`` is still importing torch."""
    (tmp_path / "sitecustomize.py").write_text(
        "import os, signal, sys\n"
        "class InterruptTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch':\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return None\n"
        "sys.meta_path.insert(0, InterruptTorch())\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "pyvae", "train", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "pyvae: interrupted\n"
    # imported from Python, pyvae leaves SIGINT to Python
    code = "import signal, pyvae; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120).stdout.strip() == "True"


def test_overwrite_through_a_link_leaves_no_temp_link(run, tmp_path):
    link = tmp_path / "latest"
    link.symlink_to(run)
    data = str(tmp_path / "d.pt")
    assert main(["train", "--data-file", data, *SMALL, "--epochs", "1", "--z-dim", "3",
                 "--out", str(link), "--overwrite"]) == 0
    leftovers = [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
    assert leftovers == []
    assert link.is_symlink() and json.load(open(link / "config.json"))["vae"]["z_dim"] == 3


def test_a_shared_decoder_without_a_model_config_is_one_line(run, tmp_path, capsys):
    config = json.load(open(run / "config.json"))
    del config["vae"]
    (run / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["compare", "--shared-decoder", str(run), "--guides", "diagonal", "--epochs", "0",
                 "--num-samples", "10", "--iwae-k", "2", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "vae" in err, err


@pytest.mark.parametrize("path", [None, 3, ["runs"]])
def test_run_of_something_that_is_no_path_is_a_config_error(path):
    with pytest.raises(ConfigError, match="Run needs the path of a run directory"):
        pyvae.Run(path)


@pytest.mark.parametrize("kw, message", [
    (dict(max_datapoints=-1), "max_datapoints must be a positive integer"),
    (dict(max_datapoints=0), "max_datapoints must be a positive integer"),
    (dict(batch_size=0), "batch_size must be a positive integer"),
    (dict(ais_steps=-2), "ais_steps must be an integer >= 0"),
    (dict(ais_steps=10, ais_chains=0), "ais_chains must be a positive integer"),
    (dict(num_samples=2.5), "num_samples must be a positive integer"),
])
def test_run_evaluate_refuses_bad_counts(kw, message, run):
    with pytest.raises(ConfigError, match=message):
        pyvae.Run(str(run)).evaluate(**kw)


def test_plot_with_the_same_seed_draws_the_same_figures(run, tmp_path):
    first = plot_run(str(run), out=str(tmp_path / "a"), num_points=50, seed=4)
    torch.rand(100)  # whatever ran in between
    second = plot_run(str(run), out=str(tmp_path / "b"), num_points=50, seed=4)
    for a, b in zip(first, second):
        assert open(a, "rb").read() == open(b, "rb").read(), os.path.basename(a)


def test_the_pickle_refusal_is_plain_and_gives_no_unsafe_advice(tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    _crafted_checkpoint(str(victim / "checkpoint.pt"))
    for args in (["train", "--resume", str(victim)], ["evaluate", str(victim)]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "refused to load" in err and err.count("\n") == 1
        assert "\x1b" not in err and "weights_only" not in err and "trust" not in err, err
    assert not os.path.exists(str(victim / "checkpoint.pt") + ".ran")
