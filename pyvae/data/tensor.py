"""``TensorData``: a data set held as one float tensor, a ``torch.utils.data.Dataset``.

Pixels are floats in [0, 1]. Binarization, for Bernoulli likelihoods:
  * ``"dynamic"``: every minibatch is resampled, x_bin ~ Bernoulli(x) (the standard for likelihood
    benchmarks on MNIST) by ``binarize_batch``; the items themselves are the pixel values.
  * ``"fixed"``: binarized once, with the seed.
  * ``"none"``: used as they are.
"""
from typing import Optional

import torch
from torch.utils.data import Dataset

from ..config import choose
from ..errors import ConfigError

BINARIZE = ("dynamic", "fixed", "none")


class TensorData(Dataset):
    """A data set held as one float tensor ``x`` of shape (N, x_dim), with optional labels.

    A map-style ``torch.utils.data.Dataset``: ``data[i]`` is row i of ``x`` (its stored values:
    with ``binarize="dynamic"`` the pixel probabilities, which ``binarize_batch`` draws from per
    batch), so ``DataLoader(data, batch_size=100)`` yields batches of shape (100, x_dim).

    Args:
        x: (N, x_dim) or (N, *image_shape) floats; images are flattened.
        labels: optional (N,) tensor.
        binarize: "dynamic", "fixed" or "none" (see module docs).
        seed: seed for "fixed" binarization.
        name: a label used in messages.
        source: how to load these data again: the keys of a run's data config (``load_dataset``
            and ``load_array`` fill it in; a run trained on the data records it).
        true_model: the model that generated the data, when known (``load_dataset
            ("linear-gaussian")``: its exact ``log_marginal``).
    """

    def __init__(self, x, labels=None, binarize: str = "none", seed: int = 0,
                 name: str = "data", source: Optional[dict] = None, true_model=None):
        choose(binarize, BINARIZE, "binarize")
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
        self.source = None if source is None else dict(source)
        self.true_model = true_model
        if binarize != "none":
            check_unit_interval(x, name)
        if binarize == "fixed":
            x = torch.bernoulli(x, generator=torch.Generator(x.device).manual_seed(seed))
        self.x, self.labels = x, labels

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index) -> torch.Tensor:
        return self.x[index]

    @property
    def x_dim(self) -> int:
        return self.x.shape[1]

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device) -> "TensorData":
        """A copy whose ``x`` and labels live on ``device`` (the rest shared).

        Args:
            device: a ``torch.device`` or its name.
        """
        out = object.__new__(TensorData)
        out.__dict__.update(self.__dict__)
        out.x = self.x.to(device)
        out.labels = None if self.labels is None else self.labels.to(device)
        return out

    def binarize_batch(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """A batch of this data set's rows as training sees them: with dynamic binarization a
        fresh Bernoulli draw of them (x_bin ~ Bernoulli(x)), otherwise ``x`` itself.

        Args:
            x: (batch, x_dim) rows of this data set, values in [0, 1] when binarized.
            generator: the torch generator of the draw (None: the global one).

        Returns:
            a tensor shaped like ``x``.
        """
        if self.binarize == "dynamic":
            return torch.bernoulli(x, generator=generator)
        return x

    def batch(self, index: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Rows ``index`` of x; with dynamic binarization, a fresh Bernoulli draw of them.

        Args:
            index: (batch,) integer tensor of row indices.
            generator: the torch generator of the draw (None: the global one).

        Returns:
            (batch, x_dim) tensor.
        """
        return self.binarize_batch(self.x[index], generator)

    def check_for(self, likelihood, x_dim: int) -> None:
        """Raise a ConfigError unless this data suits a model with ``x_dim`` and ``likelihood``.

        Args:
            likelihood: a ``Likelihood`` (its ``binary_data`` and ``levels`` say what values it
                accepts).
            x_dim: the model's size of a datapoint.
        """
        if self.x_dim != x_dim:
            raise ConfigError(f"{self.name}: datapoints have {self.x_dim} values but the model's x_dim is {x_dim}")
        check_values(self.x, likelihood, self.binarize, self.name)


def check_unit_interval(x: torch.Tensor, name: str) -> None:
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise ConfigError(f"{name}: values must lie in [0, 1] to binarize, found [{lo:g}, {hi:g}]")


def check_values(x: torch.Tensor, likelihood, binarize: str = "none", name: str = "data") -> None:
    """Raise a ConfigError unless the values ``x`` (binarized as ``binarize`` says before use)
    are data the ``likelihood`` accepts (its ``binary_data`` and ``levels``)."""
    needs = getattr(likelihood, "binary_data", None)
    if needs is None:
        return
    check_unit_interval(x, name)
    levels = getattr(likelihood, "levels", None)
    if levels and binarize == "none":
        steps = levels - 1
        if not torch.allclose(x * steps, (x * steps).round(), atol=1e-3):
            raise ConfigError(
                f"{name}: the {type(likelihood).__name__} likelihood needs values on the "
                f"grid k/{steps} (k = 0..{steps}), e.g. 8-bit pixels divided by {steps}")
    if needs and binarize == "none" and not ((x == 0) | (x == 1)).all():
        raise ConfigError(
            f"{name}: the {type(likelihood).__name__} likelihood needs binary data; "
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


def as_data(data, name: str = "data") -> TensorData:
    """Accept a ``TensorData`` or a tensor/array (used as is, no binarization)."""
    if isinstance(data, TensorData):
        return data
    return TensorData(data, name=name)
