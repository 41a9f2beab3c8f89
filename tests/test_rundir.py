"""pyvae.training.rundir: one writer per run directory, a new run built in a temp sibling and
swapped in at its first checkpoint, stale temp files removed. (The commands that take the lock,
a kill -9 that releases it, and failed overwrites from the command line:
tests/test_reliability.py.)"""
import json
import os

import pytest
import torch

from pyvae.errors import ConfigError
from pyvae.training import rundir
from pyvae.training.checkpoint import get_rng_state, load_checkpoint
from pyvae.training.rundir import RunDir, check_new, exchange, lock, replace_with


def _checkpoint():
    return {"vae_config": {"z_dim": 2}, "trainer_config": {"epochs": 1}, "extra_config": None,
            "model_state": {"w": torch.ones(2)}, "optim_state": {}, "history": [], "epoch": 0,
            "step": 0, "rng": get_rng_state()}


def _old_run(path):
    """A finished run's directory with an evaluation and figures of its own."""
    run = RunDir(str(path))
    run.write({"old": True}, [], _checkpoint())
    run.close()
    (path / "eval.json").write_text("{}")
    (path / "figures").mkdir()
    (path / "figures" / "samples.png").write_bytes(b"png")


def _temp_siblings(parent):
    return sorted(n for n in os.listdir(parent) if n.startswith(".tmp-"))


# ------------------------------------------------------------------------------ one writer
def test_a_second_writer_on_a_locked_run_gets_one_config_error_line(tmp_path):
    run = tmp_path / "run"
    _old_run(run)
    first = RunDir(str(run), resume=True)
    for second in (lambda: RunDir(str(run), resume=True), lambda: RunDir(str(run), overwrite=True),
                   lambda: lock(str(run))):
        with pytest.raises(ConfigError) as err:
            second()
        assert str(err.value) == (f"{run} is in use by another pyvae process (one writer per run "
                                  "directory); wait for it to finish")
    first.close()
    RunDir(str(run), resume=True).close()  # closed, the lock is free again
    assert _temp_siblings(tmp_path) == []


def test_resume_needs_a_directory(tmp_path):
    with pytest.raises(ConfigError, match="cannot resume: .*missing is not a directory"):
        RunDir(str(tmp_path / "missing"), resume=True)


# ------------------------------------------------------------------------------ all or nothing
def test_a_new_run_is_written_in_a_temp_sibling_and_swapped_in_at_its_checkpoint(tmp_path):
    out = tmp_path / "run"
    run = RunDir(str(out))
    assert out.is_dir() and os.listdir(out) == []  # reserved, empty
    assert run.path != str(out) and os.path.basename(run.path).startswith(".tmp-run-")
    assert os.path.dirname(run.path) == str(tmp_path) and not run.committed
    history = [{"epoch": 1, "train_elbo": -2.0}]
    run.write({"a": 1}, history, _checkpoint())
    assert run.committed and run.path == str(out)
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "config.json", "metrics.jsonl"]
    assert json.loads((out / "config.json").read_text()) == {"a": 1}
    assert (out / "metrics.jsonl").read_text() == json.dumps(history[0], sort_keys=True) + "\n"
    assert load_checkpoint(str(out / "checkpoint.pt"))["vae_config"] == {"z_dim": 2}
    run.close()
    assert _temp_siblings(tmp_path) == []


def test_an_overwrite_replaces_the_whole_old_run_or_nothing(tmp_path):
    out = tmp_path / "run"
    _old_run(out)
    before = sorted(os.listdir(out))
    abandoned = RunDir(str(out), overwrite=True)  # fails before its first checkpoint
    (open(os.path.join(abandoned.path, "config.json"), "w")).write("{}")
    assert sorted(os.listdir(out)) == before
    abandoned.close()
    assert sorted(os.listdir(out)) == before and _temp_siblings(tmp_path) == []
    with RunDir(str(out), overwrite=True) as run:
        run.write({"new": True}, [], _checkpoint())
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "config.json", "metrics.jsonl"]
    assert json.loads((out / "config.json").read_text()) == {"new": True}  # no eval.json, figures/
    assert _temp_siblings(tmp_path) == []


def test_closing_an_uncommitted_run_keeps_a_directory_that_was_there(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    RunDir(str(out)).close()
    assert out.is_dir() and _temp_siblings(tmp_path) == []


@pytest.mark.parametrize("atomic", [True, False], ids=["exchange", "two-renames"])
def test_replace_with_puts_the_staged_directory_in_place(tmp_path, monkeypatch, atomic):
    out, staging = tmp_path / "out", tmp_path / ".tmp-out-abc"
    out.mkdir()
    (out / "old.txt").write_text("old")
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    if not atomic:  # a system without renameat2(RENAME_EXCHANGE)
        monkeypatch.setattr(rundir, "exchange", lambda a, b: False)
    replace_with(str(staging), str(out))
    assert os.listdir(out) == ["new.txt"] and (out / "new.txt").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_exchange_swaps_two_directories(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "in-a").touch()
    if not exchange(str(a), str(b)):
        pytest.skip("this system has no renameat2(RENAME_EXCHANGE)")
    assert os.listdir(b) == ["in-a"] and os.listdir(a) == []


def _a_file(tmp):
    (tmp / "out").write_text("x")
    return tmp / "out"


def _a_run(tmp):
    (tmp / "out").mkdir()
    (tmp / "out" / "checkpoint.pt").touch()
    return tmp / "out"


def _user_files(tmp):
    (tmp / "out").mkdir()
    (tmp / "out" / "notes.txt").touch()
    return tmp / "out"


def _under_a_file(tmp):
    (tmp / "file").write_text("x")
    return tmp / "file" / "run"


@pytest.mark.parametrize("make, message", [
    (_a_file, "out exists and is not a directory"),
    (_a_run, "out already holds a run; resume it (--resume) or pass --overwrite"),
    (_user_files, "out is not empty and is not a pyvae run; choose another directory or pass "
                  "--overwrite to replace it"),
    (_under_a_file, "cannot create {out}: {tmp}/file is not a directory"),
], ids=["a-file", "a-run", "user-files", "under-a-file"])
def test_check_new_refuses_what_a_new_run_may_not_replace(tmp_path, make, message):
    out = make(tmp_path)
    message = message.format(out=out, tmp=tmp_path)
    for refused in (lambda: check_new(str(out)), lambda: RunDir(str(out))):
        entries = sorted(os.listdir(tmp_path))
        with pytest.raises(ConfigError) as err:
            refused()
        assert str(err.value).endswith(message) and "\n" not in str(err.value)
        assert sorted(os.listdir(tmp_path)) == entries  # writes nothing


def test_check_new_lets_overwrite_replace_a_run_or_user_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").touch()
    check_new(str(out), overwrite=True)
    check_new(str(tmp_path / "a" / "b" / "new"))  # missing parents are made


# ------------------------------------------------------------------------------ no leaks
def test_a_writer_removes_stale_temp_files_and_siblings_but_not_a_live_writers(tmp_path):
    out = tmp_path / "run"
    _old_run(out)
    (out / ".tmp-abc123").write_bytes(b"half a checkpoint")  # a kill -9 inside a write
    (out / ".tmp-dir").mkdir()
    stale = tmp_path / ".tmp-run-dead"  # a new run killed before its first checkpoint
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    # a new run "run-b" being written: its sibling .tmp-run-b-* starts like run's, but its
    # writer holds it
    live = RunDir(str(tmp_path / "run-b"))
    assert os.path.basename(live.path).startswith(".tmp-run-")
    with RunDir(str(out), resume=True):
        assert sorted(os.listdir(out)) == ["checkpoint.pt", "config.json", "eval.json", "figures",
                                           "metrics.jsonl"]
        assert not stale.exists()
        assert os.path.isdir(live.path)
    live.close()
    assert _temp_siblings(tmp_path) == []


def test_stale_temp_removal_keeps_a_staged_comparison(tmp_path):
    out = tmp_path / "run"
    _old_run(out)
    staged = tmp_path / ".tmp-run-compare"  # a stopped compare --overwrite --out run
    staged.mkdir()
    (staged / "compare-progress.json").write_text("{}")
    (out / ".tmp-sub-compare").mkdir()
    (tmp_path / ".tmp-run-dead").mkdir()
    with RunDir(str(out), resume=True):
        assert sorted(_temp_siblings(tmp_path)) == [".tmp-run-compare"]
        assert os.listdir(staged) == ["compare-progress.json"]
        assert (out / ".tmp-sub-compare").is_dir()


def test_two_new_runs_into_one_directory(tmp_path):
    out = tmp_path / "run"
    first = RunDir(str(out))  # a new run, before its first checkpoint
    with pytest.raises(ConfigError, match="in use"):
        RunDir(str(out))
    first.close()
    assert not out.exists()  # nothing was committed: the reserved directory goes again
