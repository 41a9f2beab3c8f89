"""The data an estimator or a training loop takes, as PyTorch users hold it.

One of:
  * a tensor of shape (N, ...): one datapoint per row;
  * a map-style ``torch.utils.data.Dataset`` (``__len__`` and ``__getitem__``; ``pyvae.TensorData``
    is one): taken in order, in batches;
  * a ``torch.utils.data.DataLoader``, or any iterable of batches: taken as it yields them,
    so data larger than memory stream through.

An item or batch is a tensor, or a tuple/list whose first element is the tensor (as
``TensorDataset`` and torchvision's data sets give (image, label)); ``batch_tensor`` takes it.
"""
from typing import Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ..errors import ConfigError


def batch_tensor(item) -> torch.Tensor:
    """The data tensor of a batch (or an item): the batch itself, or the first element of an
    (x, label, ...) tuple or list."""
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    if not isinstance(item, torch.Tensor):
        raise ConfigError(f"a batch must be a tensor or an (x, ...) tuple of tensors, got "
                          f"{type(item).__name__}")
    return item


def is_map_dataset(data) -> bool:
    """Whether ``data`` is a map-style data set (indexable, with a length), not a tensor."""
    return (isinstance(data, Dataset) and not isinstance(data, IterableDataset)
            and hasattr(data, "__len__"))


def is_stream(data) -> bool:
    """Whether ``data`` is taken batch by batch as it iterates (a DataLoader, an iterable
    dataset, a list of batches, a generator) rather than indexed by row."""
    return not isinstance(data, torch.Tensor) and not is_map_dataset(data)


def num_rows(data) -> Optional[int]:
    """Datapoints in ``data``, where that is known without iterating it (None otherwise)."""
    if isinstance(data, torch.Tensor):
        return data.shape[0]
    if is_map_dataset(data):
        return len(data)
    if (isinstance(data, DataLoader) and is_map_dataset(data.dataset) and not data.drop_last
            and len(data.sampler) == len(data.dataset)):  # every row once (shuffled or not)
        return len(data.dataset)
    return None


def iter_batches(data, batch_size: int) -> Iterator[torch.Tensor]:
    """The batches of ``data`` in order: ``batch_size`` rows at a time of a tensor or a
    map-style data set (by a ``DataLoader`` without shuffling), a stream's own batches as it
    yields them."""
    if isinstance(data, torch.Tensor):
        for start in range(0, data.shape[0], batch_size):
            yield data[start:start + batch_size]
        return
    if is_map_dataset(data):
        data = DataLoader(data, batch_size=batch_size, shuffle=False)
    if not hasattr(data, "__iter__"):
        raise ConfigError(f"data must be a tensor, a Dataset, a DataLoader or an iterable of "
                          f"batches, got {type(data).__name__}")
    for item in data:
        yield batch_tensor(item)
