"""A run's data: its ``config["data"]`` completed and checked, and the data it names loaded again.

A run records where its data came from (a named data set or a ``data_file``, the keys of
``TensorData.source``) and a sha256 fingerprint of them, which a resumed run is checked against.
"""
import hashlib
from typing import Optional

from ..errors import ConfigError
from .catalogue import load_dataset
from .files import load_array
from .tensor import TensorData


def data_fingerprint(train: Optional[TensorData], valid: Optional[TensorData] = None) -> dict:
    """sha256 of the data's values and shape, to tell on resume whether they changed (None for
    data that are not a ``TensorData``: a stream has no one tensor to hash)."""
    def digest(data):
        if not isinstance(data, TensorData):
            return None
        h = hashlib.sha256(str(tuple(data.x.shape)).encode())
        h.update(data.x.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    return {"train": digest(train), "valid": digest(valid)}


def recorded_data_config(data_cfg: dict, train, valid, resuming: bool,
                         out: Optional[str]) -> dict:
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
