"""Data sets as tensors resident on the device, batched by indexing.

Pixels are floats in [0, 1]. Binarization, for Bernoulli likelihoods:
  * ``"dynamic"``: every minibatch is resampled, x_bin ~ Bernoulli(x) (the standard for likelihood
    benchmarks on MNIST); held-out splits are binarized once, with the seed, so evaluations compare.
  * ``"fixed"``: binarized once, with the seed.
  * ``"none"``: used as they are.
"""
import os
from typing import Optional

import torch

from .errors import ConfigError

BINARIZE = ("dynamic", "fixed", "none")
DATASETS = ("mnist", "fashion-mnist", "kmnist")
SPLITS = ("train", "valid", "test", "train+valid")
DEFAULT_DATA_DIR = os.path.join("~", ".cache", "pyvae-data")


def default_data_dir() -> str:
    """``$PYVAE_DATA`` if set, else ``~/.cache/pyvae-data``."""
    return os.path.expanduser(os.environ.get("PYVAE_DATA", DEFAULT_DATA_DIR))


class TensorData:
    """A data set held as one float tensor ``x`` of shape (N, x_dim), with optional labels.

    Args:
        x: (N, x_dim) or (N, *image_shape) floats; images are flattened.
        labels: optional (N,) tensor.
        binarize: "dynamic", "fixed" or "none" (see module docs).
        seed: seed for "fixed" binarization.
        name: a label used in messages.
    """

    def __init__(self, x, labels=None, binarize: str = "none", seed: int = 0,
                 name: str = "data"):
        if binarize not in BINARIZE:
            raise ConfigError(f"unknown binarize {binarize!r}; choose one of: {', '.join(BINARIZE)}")
        x = torch.as_tensor(x)
        if not torch.is_floating_point(x):
            x = x.float()
        if x.dim() < 2:
            raise ConfigError(f"{name}: expected data of shape (N, x_dim), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ConfigError(f"{name}: the data set is empty")
        self.image_shape = tuple(x.shape[1:]) if x.dim() > 2 else None
        x = x.reshape(x.shape[0], -1)
        if not torch.isfinite(x).all():
            raise ConfigError(f"{name}: data contain NaN or Inf values")
        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.shape[0] != x.shape[0]:
                raise ConfigError(f"{name}: {labels.shape[0]} labels for {x.shape[0]} datapoints")
        self.name = name
        self.binarize = binarize
        if binarize != "none":
            self._check_unit_interval(x)
        if binarize == "fixed":
            x = torch.bernoulli(x, generator=torch.Generator(x.device).manual_seed(seed))
        self.x, self.labels = x, labels

    def _check_unit_interval(self, x):
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise ConfigError(f"{self.name}: values must lie in [0, 1] to binarize, found [{lo:g}, {hi:g}]")

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def x_dim(self) -> int:
        return self.x.shape[1]

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device) -> "TensorData":
        out = object.__new__(TensorData)
        out.__dict__.update(self.__dict__)
        out.x = self.x.to(device)
        out.labels = None if self.labels is None else self.labels.to(device)
        return out

    def batch(self, index: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Rows ``index`` of x; with dynamic binarization, a fresh Bernoulli draw of them."""
        x = self.x[index]
        if self.binarize == "dynamic":
            x = torch.bernoulli(x, generator=generator)
        return x

    def check_for(self, likelihood, x_dim: int) -> None:
        """Raise a ConfigError unless this data suits a model with ``x_dim`` and ``likelihood``."""
        if self.x_dim != x_dim:
            raise ConfigError(f"{self.name}: datapoints have {self.x_dim} values but the model's x_dim is {x_dim}")
        needs = getattr(likelihood, "binary_data", None)
        if needs is None:
            return
        self._check_unit_interval(self.x)
        if needs and self.binarize == "none" and not ((self.x == 0) | (self.x == 1)).all():
            raise ConfigError(
                f"{self.name}: the {type(likelihood).__name__} likelihood needs binary data; "
                "binarize it (binarize='dynamic' or 'fixed') or use likelihood='continuous_bernoulli'"
            )


def as_data(data, name: str = "data") -> TensorData:
    """Accept a ``TensorData`` or a tensor/array (used as is, no binarization)."""
    if isinstance(data, TensorData):
        return data
    return TensorData(data, name=name)


def load_array(path: str, split: str = "train", valid_size: int = 0, binarize: str = "none",
               seed: int = 0) -> TensorData:
    """A data set from a file: ``.pt`` (a tensor, or a dict with "x" and optional "labels") or
    ``.npy``/``.npz`` (arrays; no pickles). "valid" is the last ``valid_size`` rows, "train" the rest;
    a file has no test split of its own, so "test" means the same rows as "valid"."""
    import numpy as np

    if not os.path.isfile(path):
        raise ConfigError(f"no data file at {path}")
    labels = None
    try:
        if path.endswith(".npy"):
            x = torch.from_numpy(np.load(path, allow_pickle=False))
        elif path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as f:
                x = torch.from_numpy(f["x"])
                labels = torch.from_numpy(f["labels"]) if "labels" in f else None
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                x, labels = obj.get("x"), obj.get("labels")
            else:
                x = obj
            if not isinstance(x, torch.Tensor):
                raise ValueError("expected a tensor or a dict with a tensor under 'x'")
    except Exception as e:
        raise ConfigError(f"cannot read data file {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    n = x.shape[0] if x.dim() else 0
    if valid_size and not 0 <= valid_size < n:
        raise ConfigError(f"valid_size must be in [0, {n}) for {path}, got {valid_size}")
    cut = n - valid_size
    sl = {"train": slice(0, cut), "valid": slice(cut, n), "test": slice(cut, n),
          "train+valid": slice(0, n)}[split]
    if labels is not None:
        labels = labels[sl]
    if binarize == "dynamic" and split in ("valid", "test"):
        binarize = "fixed"
    return TensorData(x[sl] if n else x, labels, binarize=binarize, seed=seed,
                      name=f"{os.path.basename(path)}/{split}")


def _torchvision_dataset(name: str):
    import torchvision.datasets as tvd

    return {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "kmnist": tvd.KMNIST}[name]


def load_dataset(name: str = "mnist", split: str = "train", data_dir: Optional[str] = None,
                 download: bool = True, binarize: str = "dynamic", valid_size: int = 10000,
                 seed: int = 0) -> TensorData:
    """Load a torchvision image data set as a ``TensorData`` with pixels in [0, 1].

    Splits: "train" is the first ``60000 - valid_size`` training images, "valid" the last
    ``valid_size`` (10,000 by default, as in VampPrior's dynamic MNIST), "train+valid" all 60,000,
    "test" the 10,000 test images. With ``binarize="dynamic"``, the held-out splits ("valid",
    "test") are binarized once with ``seed`` so that every evaluation sees the same digits.
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if binarize not in BINARIZE:
        raise ConfigError(f"unknown binarize {binarize!r}; choose one of: {', '.join(BINARIZE)}")
    root = os.path.expanduser(data_dir) if data_dir else default_data_dir()
    cls = _torchvision_dataset(name)
    try:
        ds = cls(root, train=(split != "test"), download=download)
    except RuntimeError as e:  # torchvision: "Dataset not found. You can use download=True ..."
        hint = "" if download else " (download disabled: drop --no-download, or put the files there)"
        raise ConfigError(f"{name} not found under {root}{hint}: {e}") from None
    except OSError as e:  # download failed: no network, disk full, ...
        raise ConfigError(f"could not download {name} to {root}: {e}") from None
    images = ds.data.float().div_(255.0)
    labels = ds.targets
    if split != "test":
        n = images.shape[0]
        if not 0 <= valid_size < n:
            raise ConfigError(f"valid_size must be in [0, {n}), got {valid_size}")
        cut = n - valid_size
        sl = {"train": slice(0, cut), "valid": slice(cut, n), "train+valid": slice(0, n)}[split]
        images, labels = images[sl], labels[sl]
    if binarize == "dynamic" and split in ("valid", "test"):
        binarize = "fixed"
    return TensorData(images, labels, binarize=binarize, seed=seed, name=f"{name}/{split}")
