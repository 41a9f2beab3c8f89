"""Data sets from array files: ``load_array`` reads ``.pt``, ``.npy`` or ``.npz`` (no pickles)."""
import os
import warnings
from typing import Optional

import numpy as np
import torch

from ..errors import ConfigError, load_failure
from .catalogue import check_split
from .tensor import TensorData, as_real_tensor


def load_array(path: str, split: str = "train", valid_size: Optional[int] = None,
               binarize: str = "none", seed: int = 0) -> TensorData:
    """A data set from a file: ``.pt`` (a tensor, or a dict with "x" and optional "labels") or
    ``.npy``/``.npz`` (arrays; no pickles). "valid" is the last ``valid_size`` rows (default: a
    tenth of them), "train" the rest;
    a file has no test split of its own, so "test" means the same rows as "valid"."""
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
            with warnings.catch_warnings():  # torch's notes on a foreign pickle protocol
                warnings.simplefilter("ignore", UserWarning)
                obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                x, labels = obj.get("x"), obj.get("labels")
            else:
                x = obj
            if not isinstance(x, torch.Tensor):
                raise ValueError("expected a tensor or a dict with a tensor under 'x'")
    except Exception as e:
        raise ConfigError("cannot read data file " + load_failure(path, "data file", e)) from None
    check_split(split)
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
    source = dict(dataset=None, data_file=os.path.abspath(path), binarize=binarize,
                  valid_size=valid_size, seed=seed)
    if binarize == "dynamic" and split in ("valid", "test"):
        binarize = "fixed"
    return TensorData(x[sl] if n else x, labels, binarize=binarize, seed=seed,
                      name=f"{os.path.basename(path)}/{split}", source=source)
