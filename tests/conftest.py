import os
import shutil

import pyro
import pytest
import torch

from pyvae.linear_gaussian import LinearGaussian

MNIST_DIR = os.path.expanduser(os.environ.get("PYVAE_DATA", "~/.cache/pyvae-data"))
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture
def old_run_dir(tmp_path, monkeypatch):
    """A copy of the run directory pyvae 0.1 wrote (tests/fixtures/run_v0_1) and its data file."""
    shutil.copytree(os.path.join(FIXTURES, "run_v0_1"), tmp_path / "run")
    shutil.copy(os.path.join(FIXTURES, "tiny.pt"), tmp_path / "tiny.pt")
    monkeypatch.chdir(tmp_path)  # the run's data file is a relative path
    return str(tmp_path / "run")


@pytest.fixture
def one_thread():
    """Small float64 problems: one thread is faster on a shared machine, and sums reproduce."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield


@pytest.fixture
def lg():
    """A small linear-Gaussian model (x_dim 5, z_dim 2, sigma 0.5): exact log p(x) and posterior."""
    return LinearGaussian.random(x_dim=5, z_dim=2, sigma=0.5, seed=0)


@pytest.fixture
def binary_data():
    """600 binary 12-pixel vectors from a few prototypes with flipped bits: learnable, tiny."""
    g = torch.Generator().manual_seed(123)
    prototypes = torch.bernoulli(torch.full((4, 12), 0.5), generator=g)
    labels = torch.randint(0, 4, (600,), generator=g)
    flips = torch.bernoulli(torch.full((600, 12), 0.1), generator=g)
    return (prototypes[labels] + flips) % 2


def mnist_available():
    return os.path.isfile(os.path.join(MNIST_DIR, "MNIST", "raw", "train-images-idx3-ubyte"))


requires_mnist = pytest.mark.skipif(
    not mnist_available(),
    reason=f"real MNIST not found under {MNIST_DIR}: run shared/data/fetch-mnist or set $PYVAE_DATA",
)
