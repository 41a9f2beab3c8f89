"""Data sets: as tensors resident on the device (``TensorData``, a ``torch.utils.data.Dataset``),
by name (``load_dataset``), from array files (``load_array``), and as a run records them.

- ``pyvae.data.tensor``: ``TensorData``, binarization ("dynamic", "fixed", "none") and the checks
  of values against a likelihood.
- ``pyvae.data.catalogue``: the named data sets (torchvision's MNIST family, CIFAR-10,
  "linear-gaussian") and their splits.
- ``pyvae.data.files``: ``.pt``, ``.npy`` and ``.npz`` files.
- ``pyvae.data.recorded``: a run's data config completed, fingerprinted and loaded again.

Training and evaluation take a ``TensorData``, a tensor, any map-style ``Dataset``, a
``DataLoader`` or an iterable of batches (``pyvae.infer.batches``).
"""
from .tensor import BINARIZE, TensorData, as_data, as_real_tensor, check_values
from .catalogue import (DATASETS, DEFAULT_DATA_DIR, EMNIST_SPLITS, GREY_DATASETS, SPLITS,
                        default_binarize, default_data_dir, load_dataset, load_linear_gaussian)
from .files import load_array
from .recorded import (complete_data_config, data_fingerprint, load_split, load_train_valid,
                       recorded_data_config)

__all__ = ["BINARIZE", "TensorData", "as_data", "as_real_tensor", "check_values", "DATASETS",
           "DEFAULT_DATA_DIR", "EMNIST_SPLITS", "GREY_DATASETS", "SPLITS", "default_binarize",
           "default_data_dir", "load_dataset", "load_linear_gaussian", "load_array",
           "complete_data_config", "data_fingerprint", "load_split", "load_train_valid",
           "recorded_data_config"]
