import os
import struct

import numpy as np
import pytest
import torch

import pyvae.data as data
from pyvae import ConfigError, load_dataset
from pyvae.cli import main
from pyvae.likelihoods import make_likelihood

from conftest import requires_mnist


def _write_idx(path, array):
    """An idx file as the MNIST family ships them: magic 0x0000 08 ndim, big-endian sizes, bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x0800 + array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.tobytes())


def _upright_images(n, seed):
    """Asymmetric 28x28 images: a bar in the top rows, a shorter one in the left columns."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 30, size=(n, 28, 28)).astype(np.uint8)
    x[:, 2:5, 3:25] = 250
    x[:, 8:20, 1:3] = 200
    return x


def _fake_raw(root, folder, prefix_train, prefix_test, n_train, n_test, transpose=False):
    raw = os.path.join(root, folder, "raw")
    os.makedirs(raw)
    out = {}
    for prefix, n, seed in ((prefix_train, n_train, 1), (prefix_test, n_test, 2)):
        upright = _upright_images(n, seed)
        stored = upright.transpose(0, 2, 1) if transpose else upright
        labels = np.arange(n) % 10
        _write_idx(os.path.join(raw, f"{prefix}-images-idx3-ubyte"), stored)
        _write_idx(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), labels)
        out[prefix] = (upright, labels)
    return out


def test_mnist_family_from_raw_files_splits_and_binarization(tmp_path):
    files = _fake_raw(str(tmp_path), "FashionMNIST", "train", "t10k", 30, 7)
    train = load_dataset("fashion-mnist", "train", data_dir=str(tmp_path), download=False, valid_size=10)
    valid = load_dataset("fashion-mnist", "valid", data_dir=str(tmp_path), download=False, valid_size=10)
    test = load_dataset("fashion-mnist", "test", data_dir=str(tmp_path), download=False,
                        binarize="none", valid_size=10)
    upright, labels = files["train"]
    assert len(train) == 20 and len(valid) == 10 and len(test) == 7
    assert train.binarize == "dynamic" and valid.binarize == "fixed"
    assert set(valid.x.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(test.x, torch.from_numpy(files["t10k"][0]).float().reshape(7, -1) / 255)
    assert torch.allclose(train.x, torch.from_numpy(upright[:20]).float().reshape(20, -1) / 255)
    assert train.labels.tolist() == labels[:20].tolist() and train.image_shape == (28, 28)


@pytest.mark.parametrize("name, split", [("emnist", "balanced"), ("emnist-letters", "letters")])
def test_emnist_images_are_transposed_upright(tmp_path, name, split):
    files = _fake_raw(str(tmp_path), "EMNIST", f"emnist-{split}-train", f"emnist-{split}-test",
                      12, 5, transpose=True)
    train = load_dataset(name, "train+valid", data_dir=str(tmp_path), download=False, binarize="none",
                         valid_size=0)
    test = load_dataset(name, "test", data_dir=str(tmp_path), download=False, binarize="none")
    upright = torch.from_numpy(files[f"emnist-{split}-train"][0]).float() / 255
    assert torch.allclose(train.x.reshape(12, 28, 28), upright)
    assert not torch.allclose(train.x.reshape(12, 28, 28), upright.transpose(1, 2))
    assert len(test) == 5


def test_cifar10_is_channel_first_and_not_binarized_by_default(monkeypatch):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(9, 32, 32, 3), dtype=np.uint8)

    class FakeCIFAR10:  # torchvision's CIFAR10: .data (N, 32, 32, 3) uint8, .targets a list
        def __init__(self, root, train=True, download=False):
            self.data = pixels if train else pixels[:4]
            self.targets = list(range(len(self.data)))

    monkeypatch.setattr(data.catalogue, "_torchvision_dataset", lambda name: (FakeCIFAR10, {}))
    train = load_dataset("cifar10", "train", valid_size=3)
    test = load_dataset("cifar10", "test", valid_size=3)
    assert len(train) == 6 and len(test) == 4 and train.binarize == "none"
    assert train.image_shape == (3, 32, 32) and train.x_dim == 3072
    expected = torch.from_numpy(pixels[:6]).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(train.x.reshape(6, 3, 32, 32), expected)
    train.check_for(make_likelihood("discretized_logistic"), 3072)  # 8-bit grid


def test_linear_gaussian_dataset_is_drawn_from_its_model():
    train = load_dataset("linear-gaussian", "train", x_dim=4, z_dim=2, size=3000, valid_size=1000)
    valid = load_dataset("linear-gaussian", "valid", x_dim=4, z_dim=2, size=3000, valid_size=1000)
    test = load_dataset("linear-gaussian", "test", x_dim=4, z_dim=2, size=3000, test_size=2000)
    assert (len(train), len(valid), len(test)) == (2000, 1000, 2000)
    assert train.x.dtype == torch.float32 and train.x_dim == 4 and train.binarize == "none"
    model = train.true_model
    # the sample covariance matches the model's W W^T + sigma^2 I
    cov = torch.cov(test.x.double().T)
    assert torch.allclose(cov, model.marginal().covariance_matrix, atol=0.35)
    assert torch.allclose(test.x.double().mean(0), model.bias, atol=0.15)
    # train and test are different draws, and the same arguments give the same data
    again = load_dataset("linear-gaussian", "train", x_dim=4, z_dim=2, size=3000, valid_size=1000)
    assert torch.equal(again.x, train.x) and not torch.equal(test.x[:100], train.x[:100])
    with pytest.raises(ConfigError, match="real-valued"):
        load_dataset("linear-gaussian", binarize="dynamic")
    with pytest.raises(ConfigError, match="takes no options"):
        load_dataset("mnist", x_dim=3)


def test_missing_files_and_unknown_names_raise_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found under .*download disabled"):
        load_dataset("emnist", data_dir=str(tmp_path), download=False)
    with pytest.raises(ConfigError, match="unknown dataset 'svhn'; choose one of: mnist, .*cifar10"):
        load_dataset("svhn")



@pytest.mark.parametrize("call, message", [
    (lambda: load_dataset("svhn"), "unknown dataset 'svhn'; choose one of: mnist, fashion-mnist, "
     "kmnist, emnist, emnist-balanced, emnist-byclass, emnist-bymerge, emnist-letters, "
     "emnist-digits, emnist-mnist, cifar10, linear-gaussian"),
    (lambda: load_dataset("linear-gaussian", "dev"),
     "unknown split 'dev'; choose one of: train, valid, test, train+valid"),
    (lambda: data.catalogue.check_split("dev"), "unknown split 'dev'; choose one of: train, valid, test, train+valid"),
    (lambda: load_dataset("linear-gaussian", binarize="often"),
     "unknown binarize 'often'; choose one of: dynamic, fixed, none"),
    (lambda: data.TensorData(torch.zeros(3, 2), binarize="often"),
     "unknown binarize 'often'; choose one of: dynamic, fixed, none"),
], ids=["dataset", "split", "check-split", "binarize", "tensor-data-binarize"])
def test_an_unknown_name_is_the_one_choose_one_of_line(call, message):
    with pytest.raises(ConfigError) as err:
        call()
    assert str(err.value) == message

@requires_mnist
@pytest.mark.mnist
def test_real_mnist_loads_and_fits_the_likelihood_checks():
    valid = load_dataset("mnist", "valid", download=False)
    test = load_dataset("mnist", "test", download=False, binarize="none")
    assert len(valid) == 10000 and len(test) == 10000 and valid.x_dim == 784
    valid.check_for(make_likelihood("bernoulli"), 784)
    test.check_for(make_likelihood("discretized_logistic"), 784)
    test.check_for(make_likelihood("continuous_bernoulli"), 784)


def test_complete_data_config_and_load_split_of_a_file(tmp_path):
    path = str(tmp_path / "grey.npy")
    np.save(path, np.random.default_rng(0).random((50, 6)).astype(np.float32))
    open_cfg = dict(dataset="mnist", data_file=path, binarize=None, valid_size=None, seed=1)
    binary = data.complete_data_config(open_cfg, binary_data=True)
    assert binary["binarize"] == "dynamic" and binary["valid_size"] == 5  # a tenth of 50 rows
    grey = data.complete_data_config(open_cfg, binary_data=False)
    assert grey["binarize"] == "none"
    assert open_cfg["binarize"] is None  # the caller's dict is left alone
    train, valid = data.load_train_valid(grey)
    assert (len(train), len(valid)) == (45, 5)
    assert torch.equal(torch.cat([train.x, valid.x]), data.load_split(grey, "train+valid").x)
    _, no_valid = data.load_train_valid(dict(grey, valid_size=0))
    assert no_valid is None
    named = data.complete_data_config(dict(open_cfg, data_file=None), binary_data=None)
    assert named["binarize"] == "none" and named["valid_size"] is None  # 10,000 when loaded


def test_an_offline_download_names_cause_and_fix_and_leaves_no_empty_folder(tmp_path, monkeypatch,
                                                                            capsys):
    """What torchvision does offline: it makes ROOT/MNIST/raw, then raises "Error downloading
    FILE:" with the cause on its last line. The message ends with the cause and the fix."""
    class MNIST:  # (the class name names the folder, as in torchvision)
        def __init__(self, root, train=True, download=False):
            os.makedirs(os.path.join(root, "MNIST", "raw"), exist_ok=True)
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried "
                               "https://ossci-datasets.s3.amazonaws.com/mnist/, got:\n<urlopen "
                               "error [Errno -2] Name or service not known>\n")

    monkeypatch.setattr(data.catalogue, "_torchvision_dataset", lambda name: (MNIST, {}))
    root = tmp_path / "cache" / "pyvae-data"
    with pytest.raises(ConfigError) as e:
        load_dataset("mnist", data_dir=str(root))
    message = str(e.value)
    assert "\n" not in message and not message.endswith(":")
    assert "urlopen error [Errno -2] Name or service not known" in message
    assert "--data-dir DIR" in message and "--no-download" in message
    assert "docs/training.md#data-without-a-network" in message
    assert not (tmp_path / "cache").exists()  # the folders it made are gone, none of the others
    assert tmp_path.exists()
    # from the command line: one line, exit status 2
    assert main(["train", "--dataset", "mnist", "--data-dir", str(root), "--out",
                 str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Name or service not known" in err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()
