"""The data flags of ``pyvae train`` and ``pyvae compare`` made into the data config a run
records: the defaults that follow the likelihood filled in, paths stored absolute."""
import os

from ..training.config import DataConfig
from ..models.likelihoods import LIKELIHOODS


def binary_data(likelihood) -> bool:
    """Whether the likelihood wants binary pixels (the data's default binarization follows)."""
    return getattr(LIKELIHOODS.get(likelihood), "binary_data", True)


def absolute_data_paths(data_cfg: dict, data_dir=None) -> dict:
    """A --data-file and a --data-dir stored as absolute paths (resume and evaluate then work
    from any directory; the data set's place is remembered)."""
    cfg = dict(data_cfg)
    if cfg.get("data_file"):
        cfg["data_file"] = os.path.abspath(cfg["data_file"])
    if data_dir:
        cfg["data_dir"] = os.path.abspath(os.path.expanduser(data_dir))
    return cfg


def recorded_data_config(data: DataConfig, likelihood, data_dir=None) -> dict:
    """``data`` completed for ``likelihood`` (binarize), as the dict a run's config.json holds."""
    return absolute_data_paths(data.completed(binary_data(likelihood)).to_dict(), data_dir)
