"""One seed makes a run reproducible, whatever else ran in the process before; another seed gives
other numbers. Evaluation seeds each batch of datapoints from (seed, its first row): a batch's
numbers depend on the seed, its first row, the batch size and the chunk size alone, not on what
ran before, on which batches were skipped, or on the process that ran it."""
import math
import os

import pyro
import pytest
import torch

import pyvae
from runs import (binary_rows, checkpoint, cli, load_vae, metrics, read_json, train,
                  without_seconds, write_data)

FLAGS = ["--z-dim", "2", "--hidden", "8", "--batch-size", "20", "--valid-size", "30",
         "--threads", "1"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    x, _ = binary_rows(90)
    return write_data(tmp_path_factory.mktemp("repro") / "data.pt", x)


_calls = []


def _disturb():
    """Move every global random stream to a new state, as earlier work in the process would."""
    _calls.append(None)
    pyro.set_rng_seed(4242 + len(_calls))


def _train(tmp_path, data_file, name, *flags):
    _disturb()
    return train(tmp_path / name, data_file, *FLAGS, *flags, epochs=2)


def test_train_same_seed_same_run_other_seed_other_run(tmp_path, data_file, one_thread):
    a = _train(tmp_path, data_file, "a", "--seed", "5")
    b = _train(tmp_path, data_file, "b", "--seed", "5")
    c = _train(tmp_path, data_file, "c", "--seed", "6")
    sa, sb, sc = (checkpoint(r)["model_state"] for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert without_seconds(metrics(a)) == without_seconds(metrics(b))
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert [r["train_elbo"] for r in metrics(a)] != [r["train_elbo"] for r in metrics(c)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_file):
    return train(tmp_path_factory.mktemp("repro-run") / "run", data_file, *FLAGS, epochs=2)


def _evaluate(run_dir, *flags):
    _disturb()
    assert cli("evaluate", run_dir, "--num-samples", "64", "--no-progress", *flags) == 0
    return without_seconds(read_json(os.path.join(run_dir, "eval.json")))


def test_evaluate_same_seed_identical_other_seed_differs(run_dir, one_thread):
    a = _evaluate(run_dir, "--seed", "3")
    b = _evaluate(run_dir, "--seed", "3")
    c = _evaluate(run_dir, "--seed", "4")
    assert a == b
    assert c["seed"] == 4
    for key in ("log_px", "elbo", "ess_mean", "kl"):
        assert c[key] != a[key], key
    # other draws, the same quantity: within the reported errors of each other
    assert abs(c["log_px"] - a["log_px"]) < 4 * math.hypot(a["log_px_stderr"], c["log_px_stderr"])
    assert abs(c["elbo"] - a["elbo"]) < 4 * math.hypot(a["elbo_stderr"], c["elbo_stderr"])


def test_evaluate_batch_and_chunk_size_agree_within_error(run_dir, one_thread):
    a = _evaluate(run_dir)
    for flags in (["--batch-size", "7"], ["--chunk-size", "5"], ["--batch-size", "30", "--chunk-size", "64"]):
        b = _evaluate(run_dir, *flags)
        assert b["num_datapoints"] == a["num_datapoints"] == 30
        assert abs(b["log_px"] - a["log_px"]) < 4 * math.hypot(a["log_px_stderr"], b["log_px_stderr"])
        assert abs(b["elbo"] - a["elbo"]) < 4 * math.hypot(a["elbo_stderr"], b["elbo_stderr"])


@pytest.mark.xfail(strict=True, reason=(
    "each batch is seeded from (seed, its first row), but one call of the guide draws the "
    "noise of chunk-size samples x batch-size datapoints at once, so other --batch-size or "
    "--chunk-size values give other draws"))
def test_evaluate_does_not_depend_on_batch_or_chunk_size(run_dir, one_thread):
    a = _evaluate(run_dir)
    for flags in (["--batch-size", "7"], ["--chunk-size", "5"]):
        b = _evaluate(run_dir, *flags)
        for key in ("log_px", "log_px_stderr", "elbo", "elbo_stderr", "ess_mean", "ess_min"):
            assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12), (flags, key)


def per_datapoint(run_dir, data_file, n=None, batch_size=10, chunk_size=None, seed=0, **kwargs):
    vae = load_vae(run_dir)
    x = torch.load(data_file, weights_only=True)["x"][-30:]
    x = x if n is None else x[:n]
    _disturb()
    return pyvae.log_likelihood(vae.model, vae.guide, x, num_samples=32, batch_size=batch_size,
                                chunk_size=chunk_size, progress=False, seed=seed, **kwargs)


def test_first_rows_equal_the_full_run_when_batches_align(run_dir, data_file, one_thread):
    """--max-datapoints N evaluates the first N rows: with N a multiple of the batch size, their
    numbers are those of the full evaluation, row by row."""
    full = per_datapoint(run_dir, data_file)
    first = per_datapoint(run_dir, data_file, n=20)
    for field in ("value", "stderr", "ess", "elbo", "elbo_stderr"):
        assert torch.equal(getattr(first, field), getattr(full, field)[:20]), field
    other = per_datapoint(run_dir, data_file, n=20, seed=1)
    assert not torch.equal(other.value, first.value)


FIELDS = ("value", "stderr", "ess", "elbo", "elbo_stderr", "khat")


def test_a_batch_depends_on_its_seed_and_first_row_alone(run_dir, data_file, one_thread):
    """Skipped batches, the random state found, and the batches around it change nothing in a
    batch's numbers: what lets a resumed or a multi-process evaluation give those of one run."""
    full = per_datapoint(run_dir, data_file)
    # the second and third batches alone (the first skipped), in a disturbed process
    later = per_datapoint(run_dir, data_file, batch_hook=lambda start, result: start < 10)
    # the first batch and half of the second: the first is the full run's
    first = per_datapoint(run_dir, data_file, n=15)
    for field in FIELDS:
        a, b = getattr(full, field), getattr(later, field)
        assert torch.equal(b.nan_to_num(7.0), a[10:].nan_to_num(7.0)), field
        assert torch.equal(getattr(first, field)[:10].nan_to_num(7.0), a[:10].nan_to_num(7.0))
    other = per_datapoint(run_dir, data_file, seed=1)
    assert not torch.equal(other.value[10:], full.value[10:])
    # seed=None: one stream through the batches, from the global state found
    vae = load_vae(run_dir)
    x = torch.load(data_file, weights_only=True)["x"][-30:]
    pyro.set_rng_seed(0)
    a = pyvae.log_likelihood(vae.model, vae.guide, x, num_samples=32, batch_size=10, progress=False)
    pyro.set_rng_seed(0)
    b = pyvae.log_likelihood(vae.model, vae.guide, x, num_samples=32, batch_size=10, progress=False)
    _disturb()
    c = pyvae.log_likelihood(vae.model, vae.guide, x, num_samples=32, batch_size=10, progress=False)
    assert torch.equal(a.value, b.value) and not torch.equal(a.value, c.value)


@pytest.mark.xfail(strict=True, reason=(
    "a batch is seeded from (seed, its first row) and its noise drawn for all its rows at once: "
    "a datapoint's samples depend on how many datapoints share its batch, so a last batch cut "
    "short (the first N rows, N not a multiple of the batch size) or another batch size gives "
    "other numbers"))
@pytest.mark.parametrize("n, batch_size", [(15, 10), (None, 7)])
def test_per_datapoint_results_do_not_depend_on_the_batch(run_dir, data_file, n, batch_size, one_thread):
    full = per_datapoint(run_dir, data_file)
    other = per_datapoint(run_dir, data_file, n=n, batch_size=batch_size)
    rows = len(other.value)
    assert torch.allclose(other.value, full.value[:rows], rtol=0, atol=1e-9)
