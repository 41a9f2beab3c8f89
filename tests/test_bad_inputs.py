"""Runs the bad-input corpus (tests/bad_inputs.py) through the CLI."""
import hashlib
import os
import pickle

import pytest
import torch

from bad_inputs import CASES, _crafted_checkpoint, _raw_pickle
from pyvae.cli import main


def _snapshot(directory):
    out = {}
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("corpus")
    g = torch.Generator().manual_seed(0)
    good = base / "good.pt"
    torch.save(torch.bernoulli(torch.full((400, 12), 0.3), generator=g), good)
    run = base / "run"
    assert main(["train", "--data-file", str(good), "--valid-size", "100", "--epochs", "1",
                 "--batch-size", "50", "--z-dim", "2", "--hidden", "8", "--out", str(run),
                 "--no-progress"]) == 0
    return str(good), str(run)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_exit_2_and_changes_nothing(case, finished_run, tmp_path, capsys):
    name, maker, args, message = case
    good, run = finished_run
    run_before = _snapshot(run)
    file_path = str(tmp_path / f"{name}.pt")
    ckpt_dir = tmp_path / "victim"
    if "{tmpdir_with_checkpoint}" in args:
        ckpt_dir.mkdir()
        target = str(ckpt_dir / "checkpoint.pt")
        if maker == "truncated":
            blob = open(os.path.join(run, "checkpoint.pt"), "rb").read()
            open(target, "wb").write(blob[: len(blob) // 3])
        else:
            maker(target)
    elif maker is not None:
        maker(file_path)
    args = [a.format(run=run, good=good, tmp=str(tmp_path), file=file_path,
                     tmpdir_with_checkpoint=str(ckpt_dir)) for a in args]
    tmp_before = _snapshot(tmp_path)
    try:
        code = main(args + ["--no-progress"] if args[0] == "train" and "--resume" not in args else args)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert _snapshot(run) == run_before
    assert _snapshot(tmp_path) == tmp_before  # nothing written, nothing half-written
    ran = [f for files in (f for _, _, f in os.walk(tmp_path)) for f in files if f.endswith(".ran")]
    assert not ran, f"code in a pickled file ran: {ran}"


def test_the_pickled_code_sentinel_fires_when_code_runs(tmp_path):
    """The corpus's pickled files would leave FILE.ran if their code ran: check that it does."""
    for maker, load in ((_raw_pickle, lambda f: pickle.load(f)),
                        (_crafted_checkpoint, lambda f: torch.load(f, weights_only=False))):
        path = tmp_path / maker.__name__
        maker(str(path))
        assert not os.path.exists(f"{path}.ran")
        with open(path, "rb") as f:
            load(f)
        assert os.path.exists(f"{path}.ran")
