"""Multi-process data-parallel training (``pyvae.distributed``) with gloo on the CPU.

The tests launch ``torchrun`` (``python -m torch.distributed.run --standalone``, which picks a free
port) with 2 processes. Run as a script, this file is the program torchrun starts: it trains on
small synthetic data with ``pyvae.Trainer(distributed=True)``, gathers every rank's parameters,
and rank 0 writes what the tests compare.

The exact comparison with a single process uses a guide without noise, q(z|x) = Delta(f(x)): with
a stochastic guide each rank draws its own z noise, which one process would draw differently (see
``pyvae.distributed``), while data order, binarization, gradients and the recorded loss are meant
to be those of one process with the same global batch.
"""
import gc
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as tdist

import pyro
import pyro.distributions as dist

from pyvae import ConfigError, TensorData, Trainer, VAE
from pyvae.checkpoint import load_checkpoint
from pyvae.cli import main
from pyvae.distributed import Distributed
from pyvae.guides import GuideFamily
from pyvae.nets import MLP
from user_pair import UserPair

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
N, D = 240, 12


def _data():
    """Grey values in [0, 1] around 4 prototypes: binarized dynamically, so each step draws."""
    g = torch.Generator().manual_seed(7)
    prototypes = torch.rand(4, D, generator=g)
    labels = torch.randint(0, 4, (N,), generator=g)
    x = (prototypes[labels] + 0.1 * torch.randn(N, D, generator=g)).clamp(0, 1)
    return x


def _point_guide(x_dim, z_dim):
    class PointGuide(GuideFamily):
        """q(z|x) = Delta(f(x)): no Monte-Carlo noise, so the loss is a function of the data and
        the parameters alone."""

        def __init__(self):
            super().__init__(x_dim, z_dim)
            self.net = MLP(x_dim, (8,), z_dim, "tanh")

        def forward(self, x):
            return dist.Delta(self.net(x), event_dim=1)

    return PointGuide()


def _splits():
    x = _data()
    return (TensorData(x[:200], binarize="dynamic", name="train"),
            TensorData(x[200:], binarize="fixed", seed=1, name="valid"))


def _flat(vae):
    return torch.cat([p.detach().reshape(-1) for _, p in sorted(vae.named_parameters())])


def _train(case: str, distributed: bool, out=None, epochs: int = 3, batch_size: int = 40):
    """Train one of the test cases; returns (history, flat parameters, trainer)."""
    train, valid = _splits()
    pyro.set_rng_seed(0)
    if case == "point":  # deterministic: exact comparison with one process
        vae = VAE(D, 2, hidden=(8,), guide=_point_guide(D, 2), prior="mixture", prior_components=3)
    else:  # VampPrior: the encoder runs twice per step (guide and prior), through one DDP wrapper
        vae = VAE(D, 2, hidden=(8,), guide="diagonal", prior="vamp", prior_components=3)
    trainer = Trainer(vae, lr=1e-2, batch_size=batch_size, epochs=epochs, seed=3, out=out,
                      progress=False, num_threads=1, distributed=distributed)
    history = trainer.fit(train, valid)
    return history, _flat(vae), trainer


def _train_user(distributed: bool, out=None):
    """A Pyro model and guide of a user's own (``tests/user_pair.py``, a point-mass guide):
    its parameters live in Pyro's param store, whose gradients are summed over the ranks."""
    x = _data()
    pair = UserPair(x_dim=D, point=True)
    trainer = Trainer(pair.model, pair.guide, lr=1e-2, batch_size=40, epochs=3, seed=3, out=out,
                      progress=False, num_threads=1, distributed=distributed)
    history = trainer.fit(x[:200], x[200:])
    return history, torch.cat([p.detach().reshape(-1) for p in trainer.params]), trainer


def _worker(result_path: str, out_dir: str) -> None:
    """Run under torchrun: both cases; rank 0 writes histories, parameters and rank spreads."""
    results = {}
    for case in ("point", "vamp", "user"):
        history, flat, trainer = (_train(case, True, out=os.path.join(out_dir, case)) if case != "user"
                                  else _train_user(True, out=os.path.join(out_dir, case)))
        gathered = [torch.zeros_like(flat) for _ in range(tdist.get_world_size())]
        tdist.all_gather(gathered, flat)
        spread = max(float((g - gathered[0]).abs().max()) for g in gathered)
        results[case] = {"history": history, "params": flat.tolist(), "rank_spread": spread,
                         "world_size": tdist.get_world_size(), "rank": trainer._dist.rank}
    # a run stopped at an epoch boundary and resumed continues exactly, every rank's noise included
    straight, straight_flat, _ = _train("vamp", True, out=os.path.join(out_dir, "straight"), epochs=2)
    _train("vamp", True, out=os.path.join(out_dir, "resumed"), epochs=1)
    trainer = Trainer.resume(os.path.join(out_dir, "resumed"), epochs=2, progress=False,
                             distributed=True)
    resumed = trainer.fit(*_splits())
    same = torch.tensor(float(torch.equal(_flat(trainer.vae), straight_flat)))
    tdist.all_reduce(same, op=tdist.ReduceOp.MIN)
    results["resume"] = {"straight": straight, "resumed": resumed, "params_equal": bool(same.item())}
    if tdist.get_rank() == 0:
        with open(result_path, "w") as f:
            json.dump(results, f)
    del trainer
    gc.collect()  # as pyvae.distributed.Distributed.close: no DDP outlives the process group
    tdist.destroy_process_group()


def _torchrun(nproc: int, *args, timeout: int = 120):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    result = tmp / "result.json"
    proc = _torchrun(2, HERE, str(result), str(tmp))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(result) as f:
        return json.load(f), tmp


def test_parameters_identical_on_all_ranks(two_process_run):
    results, _ = two_process_run
    for case in ("point", "vamp", "user"):
        assert results[case]["world_size"] == 2
        assert results[case]["rank_spread"] == 0.0, case  # bitwise equal after every step


def test_two_processes_equal_one_process_on_the_same_global_batch(two_process_run):
    results, _ = two_process_run
    history, flat, _ = _train("point", False)
    ddp_history = results["point"]["history"]
    assert [r["epoch"] for r in ddp_history] == [1, 2, 3]
    for one, two in zip(history, ddp_history):
        for key in ("train_elbo", "valid_elbo", "lr"):
            assert two[key] == pytest.approx(one[key], rel=1e-5, abs=0), key
    # the train ELBO moved (the comparison is not between two untrained models)
    assert history[-1]["train_elbo"] > history[0]["train_elbo"] + 0.05
    np.testing.assert_allclose(results["point"]["params"], flat.numpy(), rtol=1e-4, atol=1e-5)


def test_a_user_model_on_two_processes_equals_one_process(two_process_run):
    results, _ = two_process_run
    history, flat, _ = _train_user(False)
    for one, two in zip(history, results["user"]["history"]):
        for key in ("train_elbo", "valid_elbo"):
            assert two[key] == pytest.approx(one[key], rel=1e-5, abs=0), key
    assert history[-1]["train_elbo"] > history[0]["train_elbo"] + 0.05
    np.testing.assert_allclose(results["user"]["params"], flat.numpy(), rtol=1e-4, atol=1e-5)


def test_rank_zero_writes_the_run_and_its_checkpoint_resumes_in_one_process(two_process_run):
    results, tmp = two_process_run
    run = tmp / "vamp"
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == [
        "checkpoint.pt", "config.json", "metrics.jsonl"]
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_elbo"] for r in lines] == [r["train_elbo"] for r in results["vamp"]["history"]]
    payload = load_checkpoint(str(run / "checkpoint.pt"))
    # names as in a single-process run: no DDP "module." prefix in the model or optimizer state
    assert "decoder.0.weight" in payload["model_state"]
    assert not any("module." in k for k in payload["model_state"])
    assert "decoder$$$0.weight" in payload["optim_state"]
    state = payload["model_state"]  # (this model has no buffers: all entries are parameters)
    assert torch.equal(torch.cat([state[k].reshape(-1) for k in sorted(state)]),
                       torch.tensor(results["vamp"]["params"]))
    # the 2-process run continues in one process, without --distributed
    trainer = Trainer.resume(str(run), epochs=4, progress=False)
    history = trainer.fit(TensorData(_data()[:200], binarize="dynamic"), None)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]


def test_epoch_boundary_resume_continues_exactly(two_process_run):
    results, _ = two_process_run
    straight, resumed = results["resume"]["straight"], results["resume"]["resumed"]
    assert [r["epoch"] for r in resumed] == [1, 2]
    for a, b in zip(straight, resumed):
        assert (a["train_elbo"], a["valid_elbo"]) == (b["train_elbo"], b["valid_elbo"])
    assert results["resume"]["params_equal"]  # on every rank


def test_cli_distributed_train(tmp_path):
    data = tmp_path / "data.npy"
    np.save(data, _data().numpy())
    out = tmp_path / "run"
    proc = _torchrun(2, "-m", "pyvae", "train", "--distributed", "--data-file", str(data),
                     "--out", str(out), "--epochs", "2", "--batch-size", "30", "--hidden", "8",
                     "--z-dim", "2", "--threads", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch 2: train ELBO") == 1  # rank 0 alone reports
    config = json.loads((out / "config.json").read_text())
    assert config["trainer"]["batch_size"] == 30  # the global batch, as without --distributed
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp-eval")
    np.save(tmp / "data.npy", _data().numpy())
    run = tmp / "run"
    assert main(["train", "--data-file", str(tmp / "data.npy"), "--out", str(run), "--epochs", "1",
                 "--batch-size", "40", "--hidden", "8", "--z-dim", "2", "--threads", "1",
                 "--no-progress"]) == 0
    return run


def test_distributed_evaluate_equals_one_process(eval_run):
    """2 processes share 5 batches (3 and 2, the last one short): eval.json and the printed JSON
    are those of one process, number for number, AIS included."""
    args = ["-m", "pyvae", "evaluate", str(eval_run), "--num-samples", "64", "--batch-size", "10",
            "--max-datapoints", "45", "--ais", "--ais-steps", "4", "--ais-chains", "3", "--json",
            "--threads", "1", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    one = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-3000:]
    single = json.loads((eval_run / "eval.json").read_text())
    assert json.loads(one.stdout) == single
    (eval_run / "eval.json").unlink()
    two = _torchrun(2, *args, "--distributed")
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count('"log_px"') == 1  # rank 0 alone prints
    spread = json.loads((eval_run / "eval.json").read_text())
    assert json.loads(two.stdout) == spread
    assert spread["log_px"] == single["log_px"] and spread["elbo"] == single["elbo"]
    assert spread["ais_log_px"] == single["ais_log_px"]
    for key in ("khat_max", "ess_mean", "ess_min", "log_px_stderr", "ais_minus_iw", "kl"):
        assert spread[key] == pytest.approx(single[key], rel=0, abs=1e-12), key
    assert {k: v for k, v in spread.items() if "seconds" not in k} == \
        {k: v for k, v in single.items() if "seconds" not in k}
    assert not (eval_run / "eval-progress.pt").exists()


def test_bad_distributed_setups(tmp_path, capsys):
    # outside torchrun there is no process group to join
    env = {k: os.environ.pop(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                          "MASTER_PORT") if k in os.environ}
    try:
        with pytest.raises(ConfigError, match="torchrun"):
            Trainer(VAE(D, 2, hidden=(8,)), batch_size=10, epochs=1, progress=False,
                    distributed=True).fit(torch.bernoulli(_data()[:40]))
    finally:
        os.environ.update(env)
    with pytest.raises(ConfigError, match="--jit cannot be combined with --distributed"):
        Trainer(VAE(D, 2, hidden=(8,)), jit=True, distributed=True)
    # every rank needs at least one datapoint of every global batch
    two = Distributed(rank=1, world_size=2, device="cpu", backend="gloo")
    two.check_batches(200, 40)
    with pytest.raises(ConfigError, match="cannot be split over 2 processes"):
        two.check_batches(201, 40)  # a last batch of 1
    with pytest.raises(ConfigError, match="cannot be split over 2 processes"):
        two.check_batches(200, 1)
    assert main(["train", "--backend", "gloo", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == "pyvae train: error: --backend goes with --distributed"
    run = tmp_path / "run"
    Trainer(VAE(D, 2, hidden=(8,)), batch_size=40, epochs=1, out=str(run),
            progress=False).fit(torch.bernoulli(_data()[:40]))
    assert main(["evaluate", str(run), "--backend", "gloo"]) == 2
    assert capsys.readouterr().err.strip() == "pyvae evaluate: error: --backend goes with --distributed"
    env = {k: os.environ.pop(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                          "MASTER_PORT") if k in os.environ}
    try:
        assert main(["evaluate", str(run), "--distributed"]) == 2
    finally:
        os.environ.update(env)
    err = capsys.readouterr().err
    assert "needs the environment torchrun sets up" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as e:
        main(["train", "--distributed", "--backend", "mpi", "--out", str(tmp_path / "r")])
    assert e.value.code == 2


def test_shards_cover_each_global_batch_once():
    data = TensorData(_data(), binarize="dynamic")
    index = torch.randperm(N, generator=torch.Generator().manual_seed(0))[:37]
    whole = data.batch(index, torch.Generator().manual_seed(5))
    parts = [Distributed(r, 3, "cpu", "gloo").shard_batch(data, index, torch.Generator().manual_seed(5))
             for r in range(3)]
    assert [p.shape[0] for p in parts] == [13, 12, 12]
    assert torch.equal(torch.cat(parts), whole)  # the single-process binarization, sliced
    seeds = {Distributed(r, 3, "cpu", "gloo").rank_seed(0, 1, 0) for r in range(3)}
    assert len(seeds) == 3


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
