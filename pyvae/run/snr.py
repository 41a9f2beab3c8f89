"""Gradient signal-to-noise ratios of a trained run (``pyvae.infer.diagnostics``) for each k and
estimator of an importance-weighted objective, written to snr.json; the figure is
``pyvae.reports.plots.plot_snr``'s."""
from typing import List, Optional

import pyro
import torch

from ..training.config import TrainConfig
from ..devices import resolve_device
from ..infer.diagnostics import gradient_snr
from ..infer.objectives import make_objective
from ..limits import check_count, check_seed
from ..training.checkpoint import SNR, write_json


def snr_run(run, ks=(1, 5, 50), estimators=("reparam", "dreg"), loss: str = "iwae",
            groups: int = TrainConfig.groups, ciwae_beta: float = TrainConfig.ciwae_beta,
            repeats: int = 100, batch_size: int = 100, split: str = "test",
            data_dir: Optional[str] = None, seed: int = 0, device="cpu", download: bool = True,
            log=None) -> List[dict]:
    """Gradient SNR of the encoder and the decoder of ``run`` (a ``pyvae.Run``) for each k and
    estimator of ``loss``, on the first ``batch_size`` datapoints of ``split``: one row per
    (k, estimator), written to snr.json."""
    ks = list(ks) if isinstance(ks, (list, tuple)) else [ks]
    for k in ks:
        check_count("k", k)
    check_count("repeats", repeats, minimum=2)
    check_count("batch_size", batch_size)
    check_seed(seed)
    # every setting checked (as TrainConfig checks a run's) before the work
    settings = {(k, e): TrainConfig(loss=loss, particles=k, estimator=e, groups=groups,
                                    ciwae_beta=ciwae_beta) for k in ks for e in estimators}
    objectives = {key: make_objective(c.loss, c.particles, c.estimator, c.groups, c.ciwae_beta)
                  for key, c in settings.items()}
    device = resolve_device(device)
    vae = run.load_vae(device)
    data = run.data(split, data_dir, download)
    data.check_for(vae.likelihood, vae.x_dim)
    n = min(len(data), int(batch_size))
    x = data.to(device).batch(torch.arange(n, device=device),
                              torch.Generator(device).manual_seed(seed))
    pyro.clear_param_store()
    rows = []
    for (k, estimator), objective in objectives.items():
        result = gradient_snr(vae, x, objective, repeats=repeats, seed=seed)
        rows.append(dict(k=k, estimator=estimator, **result.summary()))
        if log is not None:
            log(f"k={k} {estimator}: encoder SNR {rows[-1]['encoder_snr']:.4g}, "
                f"decoder SNR {rows[-1]['decoder_snr']:.4g}")
    write_json(run.file(SNR), {"loss": loss, "split": split, "batch_size": n, "rows": rows})
    return rows
