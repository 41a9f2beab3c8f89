"""pyvae.training.checkpoint: atomic writes with the umask's modes, checkpoints saved and loaded
without unpickling code and validated when loaded, random states, digests. (The damaged
checkpoints a reader refuses, one by one: tests/test_resumable_state.py; a full disk during
training: tests/test_disk_errors.py.)"""
import errno
import json
import os
import random

import pytest
import torch

from pyvae import Trainer
from pyvae.errors import ConfigError, TrainingDiverged
from pyvae.training.checkpoint import (CHECKPOINT, FORMAT, REQUIRED_KEYS, TMP_PREFIX, VERSION,
                                       atomic_write, atomic_write_bytes, atomic_write_text,
                                       check_finite_result, check_payload, file_mode,
                                       get_rng_state, is_run_dir, load_checkpoint, safe_load,
                                       save_checkpoint, set_rng_state, tensor_digest, torch_bytes,
                                       umask, write_json)
from test_train import small_vae


def _temp_files(directory):
    return [n for n in os.listdir(directory) if n.startswith(TMP_PREFIX)]


def _payload(**changes):
    """The smallest checkpoint that passes every check: an untrained run of one epoch."""
    payload = {"vae_config": {"z_dim": 2}, "trainer_config": {"epochs": 1}, "extra_config": None,
               "model_state": {"w": torch.ones(3)}, "optim_state": {}, "history": [],
               "epoch": 0, "step": 0, "rng": get_rng_state()}
    payload.update(changes)
    return payload


# ------------------------------------------------------------------------------ atomic writes
def test_a_write_that_raises_leaves_the_old_file_whole_and_no_temp_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"the old contents\n")

    def half_then_fail(f):
        f.write(b"half of the new")
        raise RuntimeError("killed mid-write")
    with pytest.raises(RuntimeError, match="killed mid-write"):
        atomic_write(str(path), half_then_fail)
    assert path.read_bytes() == b"the old contents\n"
    assert _temp_files(tmp_path) == []
    atomic_write_bytes(str(path), b"new\n")
    assert path.read_bytes() == b"new\n" and _temp_files(tmp_path) == []


def test_a_failed_write_is_an_os_error_naming_the_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"old")

    def disk_full(f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(OSError) as err:
        atomic_write(str(path), disk_full)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert path.read_bytes() == b"old" and _temp_files(tmp_path) == []
    missing = tmp_path / "no" / "such" / "dir" / "file.json"  # no directory for the temp file
    with pytest.raises(OSError) as err:
        atomic_write_text(str(missing), "{}")
    assert err.value.errno == errno.ENOENT and err.value.filename == str(missing)


def test_written_files_get_the_mode_the_umask_gives(tmp_path):
    old = os.umask(0o027)
    try:
        assert umask() == 0o027 and file_mode() == 0o640
        atomic_write_text(str(tmp_path / "a.txt"), "x")
        assert os.stat(tmp_path / "a.txt").st_mode & 0o777 == 0o640  # not mkstemp's 0600
        os.umask(0o002)
        write_json(str(tmp_path / "b.json"), {})
        assert os.stat(tmp_path / "b.json").st_mode & 0o777 == 0o664
    finally:
        os.umask(old)


def test_write_json_is_sorted_indented_and_ends_in_a_newline(tmp_path):
    path = tmp_path / "eval.json"
    write_json(str(path), {"b": 1, "a": [1.5, None]})
    text = path.read_text()
    assert text == json.dumps({"a": [1.5, None], "b": 1}, indent=2) + "\n"
    atomic_write_text(str(path), "ü\n")
    assert path.read_bytes() == "ü\n".encode()


# ------------------------------------------------------------------------------ checkpoints
def test_a_checkpoint_round_trips_with_its_format_and_version(tmp_path):
    path = str(tmp_path / CHECKPOINT)
    save_checkpoint(path, _payload())
    loaded = load_checkpoint(path)
    assert (loaded["format"], loaded["version"]) == (FORMAT, VERSION) == ("pyvae-checkpoint", 1)
    assert torch.equal(loaded["model_state"]["w"], torch.ones(3))
    assert set(REQUIRED_KEYS) <= set(loaded) and is_run_dir(str(tmp_path))
    assert not is_run_dir(str(tmp_path / "elsewhere"))
    assert torch.equal(torch.load(path, weights_only=True)["model_state"]["w"], torch.ones(3))


@pytest.mark.parametrize("write, message", [
    (None, "no checkpoint at"),
    (lambda p: torch.save([1, 2], p), "not a pyvae checkpoint"),
    (lambda p: torch.save(dict(_payload(), format=FORMAT, version=2), p),
     "checkpoint format version 2 is not supported (this pyvae reads version 1)"),
    (lambda p: torch.save({k: v for k, v in dict(_payload(), format=FORMAT, version=1).items()
                           if k not in ("history", "rng")}, p),
     "damaged checkpoint: missing history, rng"),
    (lambda p: save_checkpoint(p, _payload(epoch=3)), "damaged checkpoint: epoch 3 is beyond the run's 1 epochs"),
], ids=["missing", "foreign", "version", "keys", "check"])
def test_what_load_checkpoint_refuses_is_one_line(tmp_path, write, message):
    path = str(tmp_path / CHECKPOINT)
    if write:
        write(path)
    with pytest.raises(ConfigError) as err:
        load_checkpoint(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_check_payload_accepts_a_good_payload_and_names_what_is_wrong():
    assert check_payload(_payload()) is None
    trained = _payload(epoch=1, history=[{"epoch": 1, "train_elbo": -3.0, "valid_elbo": None}],
                       optim_state={"w": {"state": {0: {"step": torch.tensor(1.0)}}, "param_groups": []}})
    assert check_payload(trained) is None
    assert check_payload(dict(trained, history=[])) == "history holds 0 records for 1 epochs"
    assert check_payload(dict(trained, optim_state={"w": {"state": {}, "param_groups": []}})) == (
        "optim_state is empty after training steps (the optimizer would start afresh)")
    assert check_payload(_payload(model_state={"w": torch.tensor([float("nan")])})) == (
        "weight w holds NaN or Inf")
    assert check_payload(_payload(step=-1)) == "step -1 is not an integer >= 0"


def test_safe_load_refuses_a_file_that_is_no_tensor_file(tmp_path):
    path = tmp_path / "x.pt"
    path.write_text("hello")
    with pytest.raises(ConfigError, match=r"x\.pt: not a readable data file \(truncated or foreign"):
        safe_load(str(path), "data file")
    path.write_bytes(torch_bytes({"a": torch.arange(3)}))
    assert torch.equal(safe_load(str(path), "data file")["a"], torch.arange(3))


def test_a_nan_state_is_never_a_result():
    vae = small_vae()
    check_finite_result(vae, [{"epoch": 1, "train_elbo": -5.0, "valid_elbo": -5.5}], 1)
    with pytest.raises(TrainingDiverged, match="the ELBO became NaN or Inf at epoch 2"):
        check_finite_result(vae, [{"epoch": 2, "train_elbo": -5.0, "valid_elbo": float("inf")}], 2)
    name, p = next(iter(vae.named_parameters()))
    with torch.no_grad():
        p.view(-1)[0] = float("nan")
    with pytest.raises(TrainingDiverged, match=f"parameter {name} became NaN"):
        check_finite_result(vae, [], 0)


# ------------------------------------------------------------------------------ random states
def test_a_saved_random_state_draws_the_same_numbers_again(tmp_path):
    state = get_rng_state()
    want = (torch.rand(3), random.random())
    # through a file read with weights_only, as a checkpoint's
    path = tmp_path / "rng.pt"
    path.write_bytes(torch_bytes(state))
    set_rng_state(safe_load(str(path), "random state"))
    assert torch.equal(torch.rand(3), want[0]) and random.random() == want[1]


def test_tensor_digest_names_the_weights_exactly():
    weights = {"a": torch.arange(4.0), "b": torch.ones(2, 2)}
    digest = tensor_digest(weights)
    assert len(digest) == 64 and digest == tensor_digest({"b": torch.ones(2, 2), "a": torch.arange(4.0)})
    for other in ({"a": torch.arange(4.0), "c": torch.ones(2, 2)},         # a name
                  {"a": torch.arange(4.0), "b": torch.ones(4)},             # a shape
                  {"a": torch.arange(4.0) + 1e-6, "b": torch.ones(2, 2)}):  # a value
        assert tensor_digest(other) != digest
    # the same bytes under another dtype
    assert tensor_digest({"a": torch.zeros(4)}) != tensor_digest({"a": torch.zeros(4, dtype=torch.int32)})


# ------------------------------------------------------------------------------ refusals
class _RunsCode:
    """Unpickling it creates the file ``sentinel``: proof that code in a checkpoint ran."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path, sentinel = tmp_path / "evil.pt", tmp_path / "code-ran"
    torch.save({"format": "pyvae-checkpoint", "version": 1, "payload": _RunsCode(sentinel)}, path)
    with pytest.raises(ConfigError, match="refused to load"):
        load_checkpoint(str(path))
    assert not sentinel.exists()
    # the sentinel works: an unrestricted load runs the code
    torch.load(path, weights_only=False)
    assert sentinel.exists()


def test_truncated_and_foreign_checkpoints_are_refused(binary_data, tmp_path):
    out = str(tmp_path / "run")
    Trainer(small_vae(), epochs=1, out=out, progress=False).fit(binary_data)
    blob = open(os.path.join(out, "checkpoint.pt"), "rb").read()
    (tmp_path / "cut.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        load_checkpoint(str(tmp_path / "cut.pt"))
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ConfigError, match="not a pyvae checkpoint"):
        load_checkpoint(str(tmp_path / "foreign.pt"))
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        load_checkpoint(str(tmp_path / "text.pt"))
