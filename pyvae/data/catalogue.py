"""Data sets by name (``load_dataset``): the torchvision MNIST family ("mnist", "fashion-mnist",
"kmnist", "emnist" = EMNIST "balanced", "emnist-<split>" for the other EMNIST splits), "cifar10"
(3x32x32 colour images, for conv nets) and "linear-gaussian" (draws from
``pyvae.linear_gaussian.LinearGaussian``, whose exact log p(x) is known).

Splits: "train" is the first ``N - valid_size`` training images, "valid" the last
``valid_size``, "train+valid" all N, "test" the test set. With dynamic binarization the
held-out splits ("valid", "test") are binarized once, with the seed, so evaluations compare.
"""
import os
from typing import Optional

import torch

from ..config import choose
from ..errors import ConfigError
from ..models.linear_gaussian import LinearGaussian
from .tensor import BINARIZE, TensorData

EMNIST_SPLITS = ("balanced", "byclass", "bymerge", "letters", "digits", "mnist")
DATASETS = ("mnist", "fashion-mnist", "kmnist", "emnist",
            *(f"emnist-{s}" for s in EMNIST_SPLITS), "cifar10", "linear-gaussian")
#: data sets whose pixels are meant for binarization by default (grey images)
GREY_DATASETS = ("mnist", "fashion-mnist", "kmnist", "emnist", *(f"emnist-{s}" for s in EMNIST_SPLITS))
SPLITS = ("train", "valid", "test", "train+valid")
DEFAULT_DATA_DIR = os.path.join("~", ".cache", "pyvae-data")
#: where the documentation says how to put the files in place without a network
OFFLINE_DOCS = "docs/training.md#data-without-a-network"


def default_data_dir() -> str:
    """``$PYVAE_DATA`` if set, else ``~/.cache/pyvae-data``."""
    return os.path.expanduser(os.environ.get("PYVAE_DATA", DEFAULT_DATA_DIR))


def check_split(split: str) -> None:
    choose(split, SPLITS, "split")


def _torchvision_dataset(name: str):
    """The torchvision class and its extra constructor arguments for a data set name."""
    import torchvision.datasets as tvd  # heavy, and needed only for these data sets

    if name == "emnist" or name.startswith("emnist-"):
        return tvd.EMNIST, {"split": "balanced" if name == "emnist" else name[len("emnist-"):]}
    return {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "kmnist": tvd.KMNIST,
            "cifar10": tvd.CIFAR10}[name], {}


def _images_and_labels(name: str, ds):
    """uint8 images of a torchvision data set as (N, H, W) or (N, C, H, W), and labels (N,)."""
    images = torch.as_tensor(ds.data)
    if name.startswith("emnist"):
        # EMNIST's files store every image transposed (a quirk torchvision keeps): flip H and W
        # so that digits and letters stand upright, as in MNIST
        images = images.transpose(1, 2)
    if name == "cifar10":
        images = images.permute(0, 3, 1, 2)  # (N, 32, 32, 3) -> (N, 3, 32, 32), channel first
    return images.contiguous(), torch.as_tensor(ds.targets)


def _missing_dirs(path: str) -> list:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    path = os.path.abspath(path)
    while not os.path.exists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def _remove_empty(dirs) -> None:
    """Remove those of ``dirs`` (deepest first) that exist and are empty: what a failed
    download created and left with nothing in it."""
    for d in dirs:
        try:
            os.rmdir(d)
        except OSError:  # not empty (a partial download is kept), or not there
            pass


def _cause(e: Exception) -> str:
    """The last non-empty line of an exception's message: torchvision's download errors read
    "Error downloading FILE:\\nTried URL, got:\\n<the cause>"."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1].strip("<>") if lines else type(e).__name__


def default_binarize(name: str) -> str:
    """"dynamic" for the grey image sets (the Bernoulli benchmark setting), "none" otherwise."""
    return "dynamic" if name in GREY_DATASETS else "none"


def load_dataset(name: str = "mnist", split: str = "train", data_dir: Optional[str] = None,
                 download: bool = True, binarize: Optional[str] = None, valid_size: int = 10000,
                 seed: int = 0, **options) -> TensorData:
    """Load a data set by name (see ``DATASETS``) as a ``TensorData`` with pixels in [0, 1].

    Splits: "train" is the first ``N - valid_size`` training images (N = 60,000 for the MNIST
    family, 50,000 for CIFAR-10, 112,800 for EMNIST balanced), "valid" the last ``valid_size``
    (10,000 by default, as in VampPrior's dynamic MNIST), "train+valid" all N, "test" the test set.
    ``binarize`` defaults to ``default_binarize(name)``; with "dynamic", the held-out splits
    ("valid", "test") are binarized once with ``seed`` so that every evaluation sees the same digits.
    Images keep their shape in ``image_shape``: (28, 28) for the grey sets, (3, 32, 32) for CIFAR-10.

    Args:
        name: a key of ``DATASETS``: "mnist", "fashion-mnist", "kmnist", "emnist[-SPLIT]",
            "cifar10" or "linear-gaussian".
        split: "train", "valid", "train+valid" or "test".
        data_dir: the directory holding (or to receive) the torchvision files (None:
            ``$PYVAE_DATA``, else ``~/.cache/pyvae-data``).
        download: fetch missing files with torchvision; without it a missing file is an error.
        binarize: "dynamic", "fixed" or "none" (None: ``default_binarize(name)``).
        valid_size: the last training images held out as "valid".
        seed: seeds the one-off binarization ("fixed", and the held-out splits of "dynamic").
        **options: for "linear-gaussian" only, the keywords of ``load_linear_gaussian``
            (x_dim, z_dim, sigma, size, test_size, model_seed).

    Returns:
        a ``TensorData`` of (N, x_dim) float32 pixels in [0, 1], with labels.
    """
    choose(name, DATASETS, "dataset")
    check_split(split)
    if binarize is None:
        binarize = default_binarize(name)
    choose(binarize, BINARIZE, "binarize")
    if name == "linear-gaussian":
        data = load_linear_gaussian(split, valid_size=valid_size, binarize=binarize, **options)
        if not options:  # the defaults: a run can load them again by name
            data.source = dict(dataset=name, data_file=None, binarize=binarize,
                               valid_size=valid_size, seed=seed)
        return data
    if options:
        raise ConfigError(f"dataset {name!r} takes no options, got {', '.join(sorted(options))}")
    root = os.path.expanduser(data_dir) if data_dir else default_data_dir()
    cls, kwargs = _torchvision_dataset(name)
    layout = (f"the files under {os.path.join(root, cls.__name__, 'raw')}"
              if name != "cifar10" else f"cifar-10-batches-py under {root}")
    created = _missing_dirs(os.path.join(root, cls.__name__, "raw")) if download else []
    try:
        ds = cls(root, train=(split != "test"), download=download, **kwargs)
    except RuntimeError as e:
        _remove_empty(created)
        if download:  # torchvision: "Error downloading FILE: ... <the cause>" (no network, ...)
            raise ConfigError(
                f"could not download {name} to {root} ({_cause(e)}): give --data-dir DIR "
                f"holding a copy ({layout.replace(root, 'DIR')}) with --no-download, or "
                f"fetch it on a machine with a network first ({OFFLINE_DOCS})") from None
        # torchvision: "Dataset not found. You can use download=True to download it"
        raise ConfigError(f"{name} not found under {root} (download disabled): expected "
                          f"{layout}; --data-dir DIR names another place, or drop "
                          f"--no-download ({OFFLINE_DOCS})") from None
    except Exception as e:  # download failed otherwise: disk full, a damaged file, ...
        _remove_empty(created)
        raise ConfigError(f"could not download {name} to {root} ({_cause(e)}): give --data-dir "
                          f"DIR holding a copy with --no-download ({OFFLINE_DOCS})") from None
    images, labels = _images_and_labels(name, ds)
    images = images.float().div_(255.0)
    images, labels = split_rows(images, labels, split, valid_size)
    source = dict(dataset=name, data_file=None, binarize=binarize,
                  valid_size=None if valid_size == 10000 else valid_size, seed=seed,
                  data_dir=os.path.abspath(root))
    if binarize == "dynamic" and split in ("valid", "test"):
        binarize = "fixed"
    return TensorData(images, labels, binarize=binarize, seed=seed, name=f"{name}/{split}",
                      source=source)


def split_rows(x, labels, split, valid_size):
    """Rows of a training pool for "train", "valid", "train+valid" ("test" passes through).

    Args:
        x: (N, ...) tensor, the training pool (or the test set).
        labels: (N,) tensor or None.
        split: "train" (the first N - valid_size rows), "valid" (the last valid_size),
            "train+valid" (all) or "test" (x as it is).
        valid_size: the rows held out, 0 <= valid_size < N.

    Returns:
        (rows of x, rows of labels or None).
    """
    if split == "test":
        return x, labels
    n = x.shape[0]
    if not 0 <= valid_size < n:
        raise ConfigError(f"valid_size must be in [0, {n}), got {valid_size}")
    cut = n - valid_size
    sl = {"train": slice(0, cut), "valid": slice(cut, n), "train+valid": slice(0, n)}[split]
    return x[sl], (None if labels is None else labels[sl])


def load_linear_gaussian(split: str = "train", x_dim: int = 5, z_dim: int = 2, sigma: float = 0.5,
                         size: int = 60000, test_size: int = 10000, model_seed: int = 0,
                         valid_size: int = 10000, binarize: str = "none") -> TensorData:
    """Draws x ~ p(x) of the linear-Gaussian model ``LinearGaussian.random(x_dim, z_dim, sigma,
    seed=model_seed)``: z ~ N(0, I), x = W z + b + sigma * noise. A training pool of ``size``
    points (split into train/valid like the image sets) and ``test_size`` test points, each from
    its own seeded generator, as float32. The generating model is ``data.true_model`` (float64),
    so ``data.true_model.log_marginal(x)`` is the exact log p(x) to compare bounds against.

    Args:
        split: "train", "valid", "train+valid" or "test".
        x_dim: D, the size of x.
        z_dim: d, the size of z.
        sigma: the observation noise standard deviation.
        size: the points of the training pool (train + valid).
        test_size: the points of the test split.
        model_seed: seeds W and b (and, as 2 s + 1 and 2 s + 2, the pool and the test points).
        valid_size: the last points of the pool held out as "valid".
        binarize: must be "none" (the data are real-valued).
    """
    check_split(split)
    if binarize != "none":
        raise ConfigError("linear-gaussian data are real-valued: use binarize='none' "
                          "(and a real-valued likelihood such as 'gaussian')")
    if int(size) < 1 or int(test_size) < 1:
        raise ConfigError(f"size and test_size must be positive, got {size} and {test_size}")
    model = LinearGaussian.random(int(x_dim), int(z_dim), float(sigma), seed=int(model_seed))
    if split == "test":
        x = model.sample(int(test_size), seed=2 * int(model_seed) + 2)
    else:
        x = model.sample(int(size), seed=2 * int(model_seed) + 1)
    x, _ = split_rows(x.float(), None, split, valid_size)
    return TensorData(x, name=f"linear-gaussian/{split}", true_model=model)
