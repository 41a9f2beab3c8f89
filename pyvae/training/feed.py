"""The training data as the loop draws it: one epoch's minibatches at a time.

Two kinds of data (``pyvae.infer.batches``):

* **rows** -- a ``TensorData``, a tensor or any map-style ``Dataset``: pyvae draws the order,
  a permutation seeded from (seed, epoch), and takes ``batch_size`` rows per step, so a run
  resumed at any step continues exactly. A ``TensorData`` is indexed on its device; another
  data set gives its items, which ``default_collate`` stacks.
* **stream** -- a ``DataLoader`` or any re-iterable of batches: its batches in its own order
  (a ``DataLoader`` may read from disk in worker processes, so data larger than memory stream
  through). A run resumed mid-epoch skips the batches done; the continuation is exact where
  the stream gives the same batches again (no shuffling, or a shuffle drawn from torch's
  global random state at an epoch boundary, which checkpoints restore).

Either way each batch is binarized, when its data set asks for it (a dynamic ``TensorData``,
also under a ``DataLoader``), with a generator seeded from (seed, epoch, step): a stream that
yields the rows the rows path would draw trains to the same numbers.
"""
import math
from typing import Iterator, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import default_collate

from ..data import TensorData, as_data
from ..errors import ConfigError
from ..infer.batches import batch_tensor, is_map_dataset, is_stream, iter_batches, num_rows


def seed_for(seed: int, epoch: int, step: int) -> int:
    """A distinct, reproducible seed per (run seed, epoch, step) for data order and binarization."""
    return (seed * 1_000_003 + epoch) * 1_000_003 + step & 0x7FFF_FFFF_FFFF_FFFF


def epoch_order(n: int, seed: int, epoch: int, device="cpu") -> torch.Tensor:
    """The permutation of n rows that epoch ``epoch`` (from 0) of a run seeded ``seed`` trains in."""
    return torch.randperm(n, device=device,
                          generator=torch.Generator(device).manual_seed(seed_for(seed, epoch, 0)))


class Feed:
    """Minibatches of ``data`` for the training loop (see the module docs).

    Args:
        data: a ``TensorData``, a tensor, a map-style ``Dataset``, a ``DataLoader`` or a
            re-iterable of batches.
        batch_size: rows per step (of the rows kind; a stream's batches are its own).
        seed: the run's seed (order and binarization).
        device: where batches are put.
        name: a label in messages ("train", "valid").
    """

    def __init__(self, data, batch_size: int, seed: int, device, name: str = "train"):
        self.seed, self.device, self.name = int(seed), torch.device(device), name
        self.stream = not isinstance(data, (TensorData, np.ndarray)) and is_stream(data)
        if self.stream:
            if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
                raise ConfigError(f"{name}: data must be a tensor, a Dataset, a DataLoader or an "
                                  f"iterable of batches, got {type(data).__name__}")
            dataset = getattr(data, "dataset", None)
            self.binarizer = dataset if isinstance(dataset, TensorData) else None
            self.data, self.rows = data, None
        elif is_map_dataset(data) and not isinstance(data, TensorData):
            self.data, self.binarizer, self.rows = data, None, None  # the user's items, stacked
        else:  # a TensorData, or a tensor or array used as it is
            self.data = as_data(data, name).to(self.device)
            self.binarizer, self.rows = self.data, self.data
        self.batch_size = int(batch_size)
        self.n = len(self.data) if not self.stream else num_rows(data)

    @property
    def tensor_data(self) -> Optional[TensorData]:
        """The ``TensorData`` behind the feed, when there is one (checks, fingerprints)."""
        return self.rows if self.rows is not None else self.binarizer

    def steps(self) -> Optional[int]:
        """Steps per epoch (None for a stream of unknown length)."""
        if not self.stream:
            return math.ceil(self.n / self.batch_size)
        try:
            return len(self.data)
        except TypeError:
            return None

    def _binarize(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x if self.binarizer is None else self.binarizer.binarize_batch(x, generator)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        return x.to(self.device, non_blocking=True)

    def _rows(self, index: torch.Tensor) -> torch.Tensor:
        if self.rows is not None:
            return self.rows.x[index]
        return self._to_device(batch_tensor(default_collate([self.data[i] for i in index.tolist()])))

    def epoch(self, epoch: int, start_step: int = 0,
              shard: Optional[Tuple[int, int]] = None) -> Iterator[Tuple[int, torch.Tensor]]:
        """(step, x) for the steps of ``epoch`` from ``start_step`` on. ``shard(batch_rows)``,
        distributed: the (lo, hi) rows of each global batch this process trains on."""
        generator = torch.Generator(self.device)
        if self.stream:
            step = -1
            for step, item in enumerate(self.data):
                if step < start_step:
                    continue
                generator.manual_seed(seed_for(self.seed, epoch, step + 1))
                yield step, self._binarize(self._to_device(batch_tensor(item)), generator)
            if step < 0:
                raise ConfigError(f"{self.name}: the data yielded no batches in epoch {epoch + 1}: "
                                  "pass a re-iterable (a DataLoader, a list of batches), not a "
                                  "one-pass iterator")
            return
        order = epoch_order(self.n, self.seed, epoch, self.rows.device if self.rows is not None else "cpu")
        for step in range(start_step, self.steps()):
            generator.manual_seed(seed_for(self.seed, epoch, step + 1))
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            if shard is None:
                yield step, self._binarize(self._rows(index), generator)
                continue
            # distributed: every rank draws the same global batch and trains on its slice; a
            # dynamic binarization is drawn for the whole global batch (as one process would)
            # and then sliced, so that each datapoint is binarized as in a single process
            lo, hi = shard(index.shape[0])
            if self.binarizer is not None and self.binarizer.binarize == "dynamic":
                yield step, self._binarize(self._rows(index), generator)[lo:hi]
            else:
                yield step, self._binarize(self._rows(index[lo:hi]), generator)

    def in_order(self, batch_size: int, lo: int = 0, hi: Optional[int] = None) -> Iterator[torch.Tensor]:
        """Rows [lo, hi) in order, ``batch_size`` at a time (all of a stream's batches), binarized
        with one generator seeded with the run's seed: how the held-out ELBO is measured."""
        generator = torch.Generator(self.device).manual_seed(self.seed)
        if self.stream:
            for x in iter_batches(self.data, batch_size):
                yield self._binarize(self._to_device(x), generator)
            return
        hi = self.n if hi is None else hi
        for start in range(lo, hi, batch_size):
            index = torch.arange(start, min(hi, start + batch_size),
                                 device=self.rows.device if self.rows is not None else "cpu")
            yield self._binarize(self._rows(index), generator)
