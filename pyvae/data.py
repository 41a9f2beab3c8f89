"""Data sets as tensors resident on the device, batched by indexing.

Pixels are floats in [0, 1]. Binarization, for Bernoulli likelihoods:
  * ``"dynamic"``: every minibatch is resampled, x_bin ~ Bernoulli(x) (the standard for likelihood
    benchmarks on MNIST); held-out splits are binarized once, with the seed, so evaluations compare.
  * ``"fixed"``: binarized once, with the seed.
  * ``"none"``: used as they are.

Data sets by name (``load_dataset``): the torchvision MNIST family ("mnist", "fashion-mnist",
"kmnist", "emnist" = EMNIST "balanced", "emnist-<split>" for the other EMNIST splits), "cifar10"
(3x32x32 colour images, for conv nets) and "linear-gaussian" (draws from
``pyvae.linear_gaussian.LinearGaussian``, whose exact log p(x) is known). Any tensor or array
becomes a data set through ``TensorData`` or ``load_array``.
"""
import os
from typing import Optional

import torch

from .errors import ConfigError
from .models.linear_gaussian import LinearGaussian

BINARIZE = ("dynamic", "fixed", "none")
EMNIST_SPLITS = ("balanced", "byclass", "bymerge", "letters", "digits", "mnist")
DATASETS = ("mnist", "fashion-mnist", "kmnist", "emnist",
            *(f"emnist-{s}" for s in EMNIST_SPLITS), "cifar10", "linear-gaussian")
#: data sets whose pixels are meant for binarization by default (grey images)
GREY_DATASETS = ("mnist", "fashion-mnist", "kmnist", "emnist", *(f"emnist-{s}" for s in EMNIST_SPLITS))
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
        x = as_real_tensor(x, name)
        if x.dim() < 2:
            raise ConfigError(f"{name}: expected data of shape (N, x_dim), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ConfigError(f"{name}: the data set is empty")
        if any(d == 0 for d in x.shape[1:]):
            raise ConfigError(f"{name}: datapoints have no values (shape {tuple(x.shape)})")
        self.image_shape = tuple(x.shape[1:]) if x.dim() > 2 else None
        x = x.reshape(x.shape[0], -1)
        if not torch.isfinite(x).all():
            raise ConfigError(f"{name}: data contain NaN or Inf values")
        if labels is not None:
            try:
                labels = torch.as_tensor(labels)
            except (TypeError, ValueError, RuntimeError):
                raise ConfigError(f"{name}: labels must be numbers") from None
            if labels.layout != torch.strided or labels.is_complex() or labels.dim() != 1:
                raise ConfigError(f"{name}: labels must be a 1-D tensor of numbers, got "
                                  f"shape {tuple(labels.shape)}")
            if labels.shape[0] != x.shape[0]:
                raise ConfigError(f"{name}: {labels.shape[0]} labels for {x.shape[0]} datapoints")
        self.name = name
        self.binarize = binarize
        self.source = None  # how to load these data again (set by load_dataset / load_array)
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
        levels = getattr(likelihood, "levels", None)
        if levels and self.binarize == "none":
            steps = levels - 1
            if not torch.allclose(self.x * steps, (self.x * steps).round(), atol=1e-3):
                raise ConfigError(
                    f"{self.name}: the {type(likelihood).__name__} likelihood needs values on the "
                    f"grid k/{steps} (k = 0..{steps}), e.g. 8-bit pixels divided by {steps}")
        if needs and self.binarize == "none" and not ((self.x == 0) | (self.x == 1)).all():
            raise ConfigError(
                f"{self.name}: the {type(likelihood).__name__} likelihood needs binary data; "
                "binarize it (binarize='dynamic' or 'fixed') or use likelihood='continuous_bernoulli'"
            )


def as_real_tensor(x, name: str = "data") -> torch.Tensor:
    """x as a dense float tensor: float64/16/bfloat16 become the default dtype (float32), ints and
    bools too; complex, sparse and non-numeric data are refused."""
    if isinstance(x, torch.Tensor) and x.layout != torch.strided:
        raise ConfigError(f"{name}: sparse tensors are not supported; pass x.to_dense()")
    try:
        x = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"{name}: data must be an array of numbers ({str(e).splitlines()[0]})") from None
    if x.is_complex():
        raise ConfigError(f"{name}: complex data are not supported; pass x.real or x.abs()")
    if x.dtype != torch.get_default_dtype():
        x = x.to(torch.get_default_dtype())
    return x


def data_fingerprint(train: TensorData, valid: Optional[TensorData] = None) -> dict:
    """sha256 of the data's values and shape, to tell on resume whether they changed."""
    import hashlib

    def digest(data):
        if data is None:
            return None
        h = hashlib.sha256(str(tuple(data.x.shape)).encode())
        h.update(data.x.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    return {"train": digest(train), "valid": digest(valid)}


def recorded_data_config(data_cfg: dict, train: TensorData, valid: Optional[TensorData],
                         resuming: bool, out: Optional[str]) -> dict:
    """A run's data config: the data's source filled in when the config names none (data from
    ``load_dataset``/``load_array``), and, for a run with a directory, their fingerprint. On resume
    (``resuming``), data that differ from the stored fingerprint are refused."""
    cfg = dict(data_cfg)
    source = getattr(train, "source", None)
    if source is not None and not ("dataset" in cfg or "data_file" in cfg):
        cfg = {**source, **cfg}
    if out is None:
        return cfg
    fingerprint, stored = data_fingerprint(train, valid), cfg.get("fingerprint")
    if resuming and stored is not None and any(  # (a run may resume without validation data)
            stored.get(k) is not None and fingerprint[k] is not None and stored[k] != fingerprint[k]
            for k in ("train", "valid")):
        raise ConfigError(f"{out}: the training data differ from the data the run was trained "
                          "on (their sha256 fingerprints differ); resume with the run's data")
    cfg["fingerprint"] = fingerprint
    return cfg


def as_data(data, name: str = "data") -> TensorData:
    """Accept a ``TensorData`` or a tensor/array (used as is, no binarization)."""
    if isinstance(data, TensorData):
        return data
    return TensorData(data, name=name)


def load_array(path: str, split: str = "train", valid_size: Optional[int] = None,
               binarize: str = "none", seed: int = 0) -> TensorData:
    """A data set from a file: ``.pt`` (a tensor, or a dict with "x" and optional "labels") or
    ``.npy``/``.npz`` (arrays; no pickles). "valid" is the last ``valid_size`` rows (default: a
    tenth of them), "train" the rest;
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
    x = as_real_tensor(x, os.path.basename(path))
    if labels is not None and labels.dim() != 1:
        raise ConfigError(f"{path}: labels must be a 1-D array, got shape {tuple(labels.shape)}")
    n = x.shape[0] if x.dim() else 0
    if valid_size is None:
        valid_size = n // 10
    if valid_size and not 0 <= valid_size < n:
        raise ConfigError(f"valid_size must be in [0, {n}) for {path}, got {valid_size}")
    cut = n - valid_size
    sl = {"train": slice(0, cut), "valid": slice(cut, n), "test": slice(cut, n),
          "train+valid": slice(0, n)}[split]
    if labels is not None:
        labels = labels[sl]
    source_binarize = binarize
    if binarize == "dynamic" and split in ("valid", "test"):
        binarize = "fixed"
    data = TensorData(x[sl] if n else x, labels, binarize=binarize, seed=seed,
                      name=f"{os.path.basename(path)}/{split}")
    data.source = dict(dataset=None, data_file=os.path.abspath(path), binarize=source_binarize,
                       valid_size=valid_size, seed=seed)
    return data


def _torchvision_dataset(name: str):
    """The torchvision class and its extra constructor arguments for a data set name."""
    import torchvision.datasets as tvd

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

    ``options`` are for "linear-gaussian" only (see ``load_linear_gaussian``).
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if binarize is None:
        binarize = default_binarize(name)
    if binarize not in BINARIZE:
        raise ConfigError(f"unknown binarize {binarize!r}; choose one of: {', '.join(BINARIZE)}")
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
    try:
        ds = cls(root, train=(split != "test"), download=download, **kwargs)
    except RuntimeError as e:  # torchvision: "Dataset not found. You can use download=True ..."
        hint = "" if download else " (download disabled: drop --no-download, or put the files there)"
        raise ConfigError(f"{name} not found under {root}{hint}: expected {layout}; "
                          f"--data-dir DIR names another place: {str(e).splitlines()[0]}") from None
    except Exception as e:  # download failed: no network, disk full, a damaged file, ...
        raise ConfigError(f"could not download {name} to {root} ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                          f"offline, fetch the files elsewhere and put {layout}, or point "
                          "--data-dir at a copy, and pass --no-download") from None
    images, labels = _images_and_labels(name, ds)
    images = images.float().div_(255.0)
    images, labels = _split(images, labels, split, valid_size)
    source = dict(dataset=name, data_file=None, binarize=binarize,
                  valid_size=None if valid_size == 10000 else valid_size, seed=seed,
                  data_dir=os.path.abspath(root))
    if binarize == "dynamic" and split in ("valid", "test"):
        binarize = "fixed"
    data = TensorData(images, labels, binarize=binarize, seed=seed, name=f"{name}/{split}")
    data.source = source
    return data


def complete_data_config(data_cfg: dict, binary_data=True) -> dict:
    """Fill the defaults a run's ``config["data"]`` leaves open, as ``pyvae train`` stores them.

    ``data_cfg`` has the keys dataset, data_file, binarize, valid_size, seed. An open ``binarize``
    becomes "dynamic" only for a likelihood that needs binary pixels (``binary_data is True``,
    the likelihood's attribute), else "none"; an open ``valid_size`` of a ``data_file`` becomes a
    tenth of its rows (of a named data set: 10,000, left open in the config).
    """
    cfg = dict(data_cfg)
    if cfg.get("binarize") is None:
        cfg["binarize"] = "dynamic" if binary_data is True else "none"
    if cfg.get("data_file") and cfg.get("valid_size") is None:
        cfg["valid_size"] = len(load_split(dict(cfg, valid_size=0), "train+valid")) // 10
    return cfg


def load_split(data_cfg: dict, split: str, data_dir: Optional[str] = None,
               download: bool = True) -> TensorData:
    """One split of the data a run's ``config["data"]`` names (a data set or a ``data_file``).

    ``data_dir`` defaults to the one the run recorded (``data_cfg["data_dir"]``)."""
    if not data_cfg or not (data_cfg.get("data_file") or data_cfg.get("dataset")):
        raise ConfigError("the run does not record its data (it was trained on tensors from "
                          "Python): evaluate it from Python, or train on data from "
                          "pyvae.load_dataset or a --data-file")
    data_dir = data_dir or data_cfg.get("data_dir")
    if data_cfg.get("data_file"):
        return load_array(data_cfg["data_file"], split, data_cfg.get("valid_size"),
                          data_cfg.get("binarize") or "none", data_cfg.get("seed", 0))
    valid_size = 10000 if data_cfg.get("valid_size") is None else data_cfg["valid_size"]
    return load_dataset(data_cfg["dataset"], split, data_dir=data_dir, download=download,
                        binarize=data_cfg.get("binarize"), valid_size=valid_size,
                        seed=data_cfg.get("seed", 0))


def load_train_valid(data_cfg: dict, data_dir: Optional[str] = None, download: bool = True):
    """(train, valid) of a run's data; valid is None when ``valid_size`` is 0."""
    train = load_split(data_cfg, "train", data_dir, download)
    valid = (load_split(data_cfg, "valid", data_dir, download)
             if data_cfg.get("valid_size") != 0 else None)
    return train, valid


def _split(x, labels, split, valid_size):
    """Rows of a training pool for "train", "valid", "train+valid" ("test" passes through)."""
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
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
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
    x, _ = _split(x.float(), None, split, valid_size)
    data = TensorData(x, name=f"linear-gaussian/{split}")
    data.true_model = model
    return data
