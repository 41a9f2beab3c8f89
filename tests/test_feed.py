"""Training data as PyTorch users hold it (``pyvae.training.feed``): a DataLoader, a map-style
Dataset or a list of batches trains to the numbers of the same rows given as a tensor."""
import pytest
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

import pyro
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

import pyvae
from pyvae import ConfigError, TensorData, Trainer
from pyvae.training.feed import epoch_order

strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]


def _grey(n=300, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g)


def _fit(train, valid=None, epochs=3, **kwargs):
    pyro.set_rng_seed(0)
    vae = pyvae.VAE(x_dim=12, z_dim=2, hidden=(16,))
    history = Trainer(vae, epochs=epochs, batch_size=50, seed=4, progress=False,
                      **kwargs).fit(train, valid)
    return history, torch.cat([p.detach().reshape(-1) for p in vae.parameters()])


class PyvaeOrder(Sampler):
    """The rows in the order the Trainer draws them itself: epoch e's permutation on the e-th
    pass (``epoch_order``)."""

    def __init__(self, n, seed):
        self.n, self.seed, self.epoch = n, seed, 0

    def __iter__(self):
        order = epoch_order(self.n, self.seed, self.epoch)
        self.epoch += 1
        return iter(order.tolist())

    def __len__(self):
        return self.n


def test_tensor_data_is_a_dataset():
    data = TensorData(_grey(), binarize="dynamic")
    assert isinstance(data, torch.utils.data.Dataset)
    assert torch.equal(data[3], data.x[3])
    batch = next(iter(DataLoader(data, batch_size=50)))
    assert batch.shape == (50, 12) and torch.equal(batch, data.x[:50])


def test_a_dataloader_in_the_same_order_trains_to_the_last_digit():
    """Dynamic binarization included: the loader yields the grey rows, the Trainer draws each
    batch's Bernoulli pixels with its seeded generator, as for the TensorData itself. The loader
    has a generator of its own, so that it draws nothing from torch's global random state (its
    per-epoch base seed), which the training noise comes from."""
    train = TensorData(_grey(), binarize="dynamic")
    valid = TensorData(_grey(100, seed=1), binarize="fixed")
    tensor_history, tensor_params = _fit(train, valid)
    loader = DataLoader(train, batch_size=50, sampler=PyvaeOrder(len(train), seed=4),
                        generator=torch.Generator())
    loader_history, loader_params = _fit(loader, DataLoader(valid, batch_size=1000,
                                                            generator=torch.Generator()))
    assert strip(loader_history) == strip(tensor_history)
    assert torch.equal(loader_params, tensor_params)
    # and a loader in its own order trains, to other numbers
    shuffled, _ = _fit(DataLoader(train, batch_size=50, shuffle=True), valid)
    assert strip(shuffled) != strip(tensor_history)


def test_a_map_style_dataset_and_a_list_of_batches_train_like_the_tensor():
    x = torch.bernoulli(_grey())
    tensor_history, tensor_params = _fit(x)
    dataset_history, dataset_params = _fit(TensorDataset(x, torch.arange(300)))  # (x, label)
    assert strip(dataset_history) == strip(tensor_history)
    assert torch.equal(dataset_params, tensor_params)
    order = epoch_order(300, 4, 0)
    batches = [x[order[i:i + 50]] for i in range(0, 300, 50)]
    one_epoch, one_params = _fit(batches, epochs=1)
    first, first_params = _fit(x, epochs=1)
    assert strip(one_epoch) == strip(first) and torch.equal(one_params, first_params)


def test_streamed_batches_are_checked_against_the_likelihood():
    grey = _grey()
    with pytest.raises(ConfigError, match="needs binary data"):
        _fit(DataLoader(TensorDataset(grey), batch_size=50))
    with pytest.raises(ConfigError, match="x_dim is 12"):
        _fit(DataLoader(TensorDataset(torch.zeros(100, 7)), batch_size=50))


def test_a_one_pass_iterator_and_a_mismatched_batch_size_are_refused():
    x = torch.bernoulli(_grey())
    with pytest.raises(ConfigError, match="no batches in epoch 2"):
        _fit((x[i:i + 50] for i in range(0, 300, 50)), epochs=2)
    with pytest.raises(ConfigError, match="DataLoader's batch_size is 30 but the Trainer's is 50"):
        _fit(DataLoader(TensorData(x), batch_size=30))


def test_a_plain_svi_loop_over_grey_pixels_fails_with_pyros_error():
    """The likelihoods follow Pyro's validation switch (on by default): Bernoulli refuses grey
    pixels; switched off, the same loop runs (and learns nonsense)."""
    vae = pyvae.VAE(x_dim=12, z_dim=2, hidden=(16,))
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-3}), Trace_ELBO())
    grey = next(iter(DataLoader(TensorData(_grey()), batch_size=50)))
    with pyro.validation_enabled(True):
        with pytest.raises(ValueError, match=r"Expected value argument .* support \(Boolean\(\)\)"):
            svi.step(grey)
    with pyro.validation_enabled(False):
        svi.step(grey)
