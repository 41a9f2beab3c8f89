"""``pyvae compare``'s directory (docs/reliability.md): nothing of the user's replaced, no
training run written into, ``--overwrite`` all or nothing, an interrupted comparison continued
to the numbers of an uninterrupted one."""
import json
import os
import signal

import pytest
import torch

import pyvae
from pyvae.cli import main
from pyvae.errors import ConfigError, TrainingInterrupted
from pyvae.reports import compare as compare_module
from pyvae.reports.compare_dir import PROGRESS
from pyvae.training.rundir import lock
from pyvae.training.trainer import Trainer
from runs import file_contents


@pytest.fixture
def data(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((300, 12), 0.3), generator=g)
    path = tmp_path / "d.pt"
    torch.save(x, path)
    return x, str(path)


KW = dict(epochs=2, num_samples=20, iwae_k=[2], z_dim=2, hidden=[8], batch_size=50, log=None,
          test_size=20, seed=1)


def _compare(x, out, guides=("diagonal", "full-rank"), **kw):
    return pyvae.compare(list(guides), x[:200], x[200:], x[200:250], out=str(out), **{**KW, **kw})


def _numbers(report):
    """The rows without timings (what must repeat)."""
    return [{k: v for k, v in json.loads(json.dumps(row)).items() if "seconds" not in k
             and k != "history"} | {"history": [{k: v for k, v in r.items() if "seconds" not in k}
                                                for r in row["history"]]}
            for row in report["rows"]]


def _cli_args(path, out, *extra):
    return ["compare", "--data-file", path, "--valid-size", "50", "--guides", "diagonal",
            "--epochs", "1", "--num-samples", "10", "--iwae-k", "2", "--test-size", "10",
            "--z-dim", "2", "--hidden", "4", "--no-progress", "--out", str(out), *extra]


def test_user_files_in_out_are_not_replaced_without_overwrite(data, tmp_path, capsys):
    _, path = data
    out = tmp_path / "mine"
    out.mkdir()
    (out / "compare.md").write_text("my notes")
    (out / "compare.csv").write_text("a,b\n1,2\n")
    assert main(_cli_args(path, out)) == 2
    err = capsys.readouterr().err
    assert "is not empty and is not a pyvae comparison" in err and err.count("\n") == 1
    assert file_contents(out) == {"compare.md": b"my notes", "compare.csv": b"a,b\n1,2\n"}
    assert main(_cli_args(path, out, "--overwrite")) == 0
    assert "my notes" not in (out / "compare.md").read_text()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_compare_never_writes_into_a_training_run(overwrite, data, tmp_path, capsys):
    _, path = data
    run = tmp_path / "run"
    assert main(["train", "--data-file", path, "--valid-size", "50", "--epochs", "1",
                 "--z-dim", "2", "--hidden", "4", "--no-progress", "--out", str(run)]) == 0
    before = file_contents(run)
    capsys.readouterr()
    extra = ["--overwrite"] if overwrite else []
    assert main(_cli_args(path, run, *extra)) == 2
    assert "is a training run (pyvae train)" in capsys.readouterr().err
    # nor into a directory that holds the run whose decoder it borrows
    assert main(["compare", "--shared-decoder", str(run), "--guides", "diagonal", "--epochs", "0",
                 "--num-samples", "10", "--iwae-k", "2", "--out", str(tmp_path), *extra]) == 2
    assert "holds the --shared-decoder run" in capsys.readouterr().err
    assert file_contents(run) == before


def test_overwrite_replaces_the_whole_comparison(data, tmp_path):
    x, _ = data
    out = tmp_path / "cmp"
    _compare(x, out, guides=("diagonal", "full-rank"))
    (out / "diagonal" / "eval.json").write_text("{}")
    _compare(x, out, guides=("planar",), overwrite=True)
    assert sorted(n for n in os.listdir(out) if os.path.isdir(out / n)) == ["planar"]
    assert json.load(open(out / "compare.json"))["settings"]["guides"] == ["planar"]
    assert not (out / PROGRESS).exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def test_a_failed_overwrite_leaves_the_old_comparison_untouched(data, tmp_path, monkeypatch):
    x, _ = data
    out = tmp_path / "cmp"
    _compare(x, out)
    before = file_contents(out)
    real = compare_module._evaluate_family

    def fails_on_full_rank(vae, family, *args, **kwargs):
        if family == "full-rank":
            raise KeyboardInterrupt
        return real(vae, family, *args, **kwargs)
    monkeypatch.setattr(compare_module, "_evaluate_family", fails_on_full_rank)
    with pytest.raises(KeyboardInterrupt):
        _compare(x, out, overwrite=True, num_samples=30)
    assert file_contents(out) == before
    # the stopped replacement stays staged beside it, for the same command to continue
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")] == [".tmp-cmp-compare"]
    assert set(os.listdir(tmp_path / ".tmp-cmp-compare")) == {"diagonal", "full-rank", PROGRESS}


def test_an_interrupted_comparison_continues_to_the_uninterrupted_numbers(data, tmp_path,
                                                                          monkeypatch):
    x, _ = data
    whole = _compare(x, tmp_path / "whole", guides=("diagonal", "full-rank", "iaf"))
    out = tmp_path / "cut"
    real_step, calls = Trainer._step, {"n": 0}

    def stop_in_the_second_family(self, xb):  # SIGINT in full-rank's epoch 2
        if self.vae.config["guide"] == "full-rank":
            calls["n"] += 1
            if calls["n"] == 6:
                signal.raise_signal(signal.SIGINT)
        return real_step(self, xb)
    monkeypatch.setattr(Trainer, "_step", stop_in_the_second_family)
    with pytest.raises(TrainingInterrupted, match="run the same pyvae compare command again"):
        _compare(x, out, guides=("diagonal", "full-rank", "iaf"))
    monkeypatch.setattr(Trainer, "_step", real_step)
    assert (out / PROGRESS).exists() and not (out / "compare.json").exists()
    lines = []
    continued = _compare(x, out, guides=("diagonal", "full-rank", "iaf"), log=lines.append)
    assert lines[:2] == [f"diagonal: finished before, kept ({out / 'diagonal'})",
                         f"full-rank: continuing its training from epoch 1 ({out / 'full-rank'})"]
    assert _numbers(continued) == _numbers(whole)
    assert not (out / PROGRESS).exists()
    # a comparison stopped while evaluating: its trained family is evaluated, not retrained
    real_eval = compare_module._evaluate_family

    def interrupted(vae, family, *args, **kwargs):
        if family == "full-rank":
            raise KeyboardInterrupt
        return real_eval(vae, family, *args, **kwargs)
    again = tmp_path / "again"
    monkeypatch.setattr(compare_module, "_evaluate_family", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _compare(x, again, guides=("diagonal", "full-rank", "iaf"))
    monkeypatch.setattr(compare_module, "_evaluate_family", real_eval)
    assert _numbers(_compare(x, again, guides=("diagonal", "full-rank", "iaf"))) == _numbers(whole)


THREE = ("diagonal", "full-rank", "iaf")


def _spy(monkeypatch, stop_at=None, check=None):
    """Count Trainer fits and steps per family; SIGINT at full-rank's step ``stop_at`` (in its
    epoch 2); ``check()`` at every step."""
    real_step, real_fit = Trainer._step, Trainer.fit
    fits, steps = [], {}

    def step(self, xb):
        family = self.vae.config["guide"]
        steps[family] = steps.get(family, 0) + 1
        if check is not None:
            check()
        if family == "full-rank" and steps[family] == stop_at:
            signal.raise_signal(signal.SIGINT)
        return real_step(self, xb)

    def fit(self, *args, **kwargs):
        fits.append(self.vae.config["guide"])
        return real_fit(self, *args, **kwargs)
    monkeypatch.setattr(Trainer, "_step", step)
    monkeypatch.setattr(Trainer, "fit", fit)
    return fits, steps


def _an_interrupted_overwrite(x, tmp_path, monkeypatch):
    """An old comparison in tmp_path/cmp, and its --overwrite replacement by three families at
    another K stopped by SIGINT in full-rank's epoch 2; returns (out, the old one's files)."""
    out = tmp_path / "cmp"
    _compare(x, out)
    before = file_contents(out)
    with monkeypatch.context() as m:
        _spy(m, stop_at=6)  # 4 steps an epoch: full-rank's epoch 2
        with pytest.raises(TrainingInterrupted, match="run the same pyvae compare command again"):
            _compare(x, out, guides=THREE, num_samples=30, overwrite=True)
    assert file_contents(out) == before
    return out, before


def test_an_interrupted_overwrite_continues_to_the_uninterrupted_numbers(data, tmp_path,
                                                                       monkeypatch):
    x, _ = data
    whole = _compare(x, tmp_path / "whole", guides=THREE, num_samples=30)
    out, before = _an_interrupted_overwrite(x, tmp_path, monkeypatch)
    staged = tmp_path / ".tmp-cmp-compare"
    assert set(os.listdir(staged)) == {"diagonal", "full-rank", PROGRESS}
    # a staged replacement locked by a live writer is not touched: one line, nothing trained
    fits, steps = _spy(monkeypatch)
    kept = file_contents(staged)
    fd = lock(str(staged))
    try:
        with pytest.raises(ConfigError, match="is in use") as e:
            _compare(x, out, guides=THREE, num_samples=30, overwrite=True)
        assert "\n" not in str(e.value) and str(staged) in str(e.value)
    finally:
        os.close(fd)
    assert file_contents(staged) == kept and file_contents(out) == before and fits == []
    # stale temp siblings go; another comparison's staged replacement stays
    (tmp_path / ".tmp-cmp-k2x9q0_a").mkdir()
    (tmp_path / ".tmp-cmp-big-compare").mkdir()

    def old_comparison_untouched():
        assert file_contents(out) == before
    fits, steps = _spy(monkeypatch, check=old_comparison_untouched)
    lines = []
    continued = _compare(x, out, guides=THREE, num_samples=30, overwrite=True, log=lines.append)
    assert lines[:2] == [
        f"diagonal: finished before, kept ({staged / 'diagonal'})",
        f"full-rank: continuing its training from epoch 1 ({staged / 'full-rank'})"]
    # only the unfinished families trained: full-rank the 2 steps left of its 8, iaf all 8
    assert fits == ["full-rank", "iaf"] and steps == {"full-rank": 2, "iaf": 8}
    assert _numbers(continued) == _numbers(whole)
    assert json.load(open(out / "compare.json"))["rows"] == \
        json.loads(json.dumps(continued["rows"]))
    assert sorted(n for n in os.listdir(out) if os.path.isdir(out / n)) == list(THREE)
    assert not (out / PROGRESS).exists()
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(".tmp-")) == [
        ".tmp-cmp-big-compare"]


def test_an_interrupted_overwrite_with_other_settings_starts_over(data, tmp_path, monkeypatch):
    x, _ = data
    out, before = _an_interrupted_overwrite(x, tmp_path, monkeypatch)
    lines = []

    def old_comparison_untouched():
        assert file_contents(out) == before
    fits, steps = _spy(monkeypatch, check=old_comparison_untouched)
    report = _compare(x, out, guides=THREE, num_samples=40, overwrite=True, log=lines.append)
    staged = tmp_path / ".tmp-cmp-compare"
    assert lines[0] == (f"{staged}: the staged replacement of {out} was made with --num-samples 30 "
                        "there, 40 now; discarded, starting over")
    assert fits == list(THREE) and steps == {family: 8 for family in THREE}
    assert not any("finished before" in line or "continuing" in line for line in lines)
    assert json.load(open(out / "compare.json"))["settings"]["num_samples"] == 40
    assert [row["guide"] for row in report["rows"]] == list(THREE)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def test_continuing_with_other_settings_is_refused_naming_the_flag(data, tmp_path, monkeypatch):
    x, _ = data
    out = tmp_path / "cmp"
    monkeypatch.setattr(compare_module, "_evaluate_family",
                        lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        _compare(x, out)
    before = file_contents(out)
    with pytest.raises(ConfigError, match=r"made with --num-samples 20 there, 30 now; run it with "
                                          r"its own settings to continue it, or pass --overwrite"):
        _compare(x, out, num_samples=30)
    with pytest.raises(ConfigError, match="made with other data"):
        pyvae.compare(["diagonal", "full-rank"], 1 - x[:200], x[200:], x[200:250], out=str(out), **KW)
    (out / PROGRESS).write_text('{"format": "pyvae-compare-progress", "key": ')
    with pytest.raises(ConfigError, match="compare-progress.json is damaged"):
        _compare(x, out)
    del before[PROGRESS]
    assert {k: v for k, v in file_contents(out).items() if k != PROGRESS} == before


def test_a_damaged_row_in_the_progress_file_is_one_line(data, tmp_path, monkeypatch):
    x, _ = data
    out = tmp_path / "cmp"
    real = compare_module._evaluate_family

    def second_fails(vae, family, *args, **kwargs):
        if family == "full-rank":
            raise KeyboardInterrupt
        return real(vae, family, *args, **kwargs)
    monkeypatch.setattr(compare_module, "_evaluate_family", second_fails)
    with pytest.raises(KeyboardInterrupt):
        _compare(x, out)
    saved = json.load(open(out / PROGRESS))
    saved["rows"]["diagonal"]["log_px"] = "NaN"
    (out / PROGRESS).write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match="the row of diagonal is not a finished family's"):
        _compare(x, out)


def test_every_compare_setting_is_checked_before_the_first_family_trains(data, tmp_path,
                                                                         monkeypatch):
    x, _ = data
    trained = []
    monkeypatch.setattr(Trainer, "fit", lambda self, *a: trained.append(1))
    for kw, message in [
            (dict(ais_steps=-3, refine_steps=5), "ais_steps must be an integer >= 0"),
            (dict(refine_steps=10 ** 8), "refine steps 100000000 is larger than the limit"),
            (dict(refine_steps=-5), "refine_steps must be an integer >= 0"),
            (dict(refine_size=10), "--refine-size goes with --refine-steps"),
            (dict(ais_steps=10), "--ais-steps goes with --refine-steps"),
            (dict(ais_steps=10 ** 8, refine_steps=5), "ais steps 100000000 is larger than the limit"),
            (dict(iwae_k=[0]), "k must be a positive integer"),
            (dict(lr=-1.0), "learning rate must be a positive number"),
            (dict(seed=-1), "seed must be an integer"),
            (dict(common_guide_options={"flow_length": 10 ** 6}), "flow length"),
    ]:
        guides = ("diagonal", "planar") if "common_guide_options" in kw else ("diagonal",)
        with pytest.raises(ConfigError, match=message):
            _compare(x, tmp_path / "c", guides=guides, **kw)
    assert trained == [] and not (tmp_path / "c").exists()
