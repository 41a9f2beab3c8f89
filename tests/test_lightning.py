"""pyvae.lightning: a real lightning.Trainer (CPU, CSVLogger) trains on pyvae's objective.

Needs the ``lightning`` extra (``pip install -e ".[lightning]"``); skipped without it.
"""
import ast
import contextlib
import csv
import glob
import io
import os
import subprocess
import sys

import pytest
import torch

import pyro

import pyvae
from pyvae import ConfigError
from pyvae.infer.objectives import make_objective

lightning = pytest.importorskip("lightning", reason="lightning is not installed: pip install -e \".[lightning]\"")
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from pyvae.lightning import ObjectiveModule  # noqa: E402
from test_docs import blocks, same_output  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    prototypes = torch.bernoulli(torch.full((4, 20), 0.5), generator=g)
    noise = torch.bernoulli(torch.full((400, 20), 0.05), generator=g)
    return (prototypes[torch.randint(0, 4, (400,), generator=g)] + noise) % 2


def loader(x, batch_size):
    # the DataLoader's own generator: its base seed does not come from torch's global stream
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=batch_size,
                                       generator=torch.Generator().manual_seed(0))


def lightning_trainer(tmp_path, epochs, logger=False):
    return lightning.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=logger,
                             enable_progress_bar=False, enable_model_summary=False,
                             enable_checkpointing=False, num_sanity_val_steps=0)


def small_vae(seed=0):
    pyro.set_rng_seed(seed)
    return pyvae.VAE(x_dim=20, z_dim=2, hidden=(16,))


@pytest.mark.parametrize("loss, particles", [("trace_elbo", 1), ("iwae", 3)])
def test_each_step_is_pyvae_objective_step(data, tmp_path, loss, particles):
    """Two epochs under lightning.Trainer end at exactly the parameters of the plain loop
    loss = objective.differentiable_loss(model, guide, x); loss.backward(); Adam step."""
    by_lightning = small_vae()
    module = ObjectiveModule.from_vae(by_lightning, loss=loss, particles=particles, lr=1e-2)
    pyro.set_rng_seed(1)
    lightning_trainer(tmp_path, epochs=2).fit(module, loader(data, 50))

    by_hand = small_vae()
    objective = make_objective(loss, particles)
    adam = torch.optim.Adam(by_hand.parameters(), lr=1e-2)
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    batches = loader(data, 50)
    for _ in range(2):
        for (x,) in batches:
            objective.differentiable_loss(by_hand.model, by_hand.guide, x).backward()
            adam.step()
            adam.zero_grad()
    trained, expected = by_lightning.state_dict(), by_hand.state_dict()
    assert any(not torch.equal(v, small_vae().state_dict()[k]) for k, v in expected.items())
    for name in expected:
        assert torch.allclose(trained[name], expected[name], atol=1e-6), name


def test_trains_with_a_lightning_logger(data, tmp_path):
    vae = small_vae()
    module = ObjectiveModule.from_vae(vae, lr=1e-2)
    trainer = lightning_trainer(tmp_path, epochs=8, logger=CSVLogger(str(tmp_path), name="vae"))
    trainer.fit(module, loader(data[:300], 50), loader(data[300:], 100))
    (path,) = glob.glob(str(tmp_path / "vae" / "*" / "metrics.csv"))
    rows = list(csv.DictReader(open(path)))
    train = [float(r["train_elbo"]) for r in rows if r["train_elbo"]]
    valid = [float(r["valid_elbo"]) for r in rows if r["valid_elbo"]]
    assert len(train) == len(valid) == 8
    assert train[-1] > train[0] + 2 and valid[-1] > valid[0] + 2   # nats per datapoint
    # the logged validation ELBO is the model's: pyvae's own estimate on the same data agrees
    estimate = pyvae.evaluate.elbo(vae.model, vae.guide, data[300:], num_samples=200)
    assert abs(estimate.mean - valid[-1]) < 0.5


def test_bad_arguments_are_one_config_error(data):
    vae = small_vae()
    with pytest.raises(ConfigError, match="unknown loss"):
        ObjectiveModule.from_vae(vae, loss="nope")
    with pytest.raises(ConfigError, match="torch.nn.Module"):
        ObjectiveModule(vae.model, vae.guide, params=[])
    with pytest.raises(ConfigError, match="learning rate must be a positive number"):
        ObjectiveModule.from_vae(vae, lr=0)


def test_no_pyvae_module_imports_lightning_but_pyvae_lightning():
    package = os.path.join(ROOT, "pyvae")
    for folder, _, files in os.walk(package):
        for name in files:
            path = os.path.join(folder, name)
            if not name.endswith(".py") or os.path.samefile(path, os.path.join(package, "lightning.py")):
                continue
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [("." * node.level) + (node.module or "")] + [a.name for a in node.names]
                else:
                    continue
                assert not any(n.split(".")[-1] == "lightning" or n.startswith("lightning")
                               for n in names), f"{path} imports {names}"


@pytest.mark.slow
def test_lightning_is_loaded_only_with_pyvae_lightning():
    code = ("import sys, pyvae; print('lightning' in sys.modules); "
            "import pyvae.lightning; print('lightning' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": os.path.abspath(ROOT)}, timeout=300)
    assert out.stdout.split() == ["False", "True"], out.stderr


def test_docs_example_prints_what_the_page_shows(tmp_path, monkeypatch):
    (code, expected), = blocks("lightning.md")
    monkeypatch.chdir(tmp_path)  # the example's CSVLogger writes runs/lightning here
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, "lightning.md:example", "exec"), {"__name__": "example"})
    assert same_output(buf.getvalue(), expected), buf.getvalue()
    assert glob.glob(str(tmp_path / "runs" / "lightning" / "lightning_logs" / "version_0" / "metrics.csv"))
