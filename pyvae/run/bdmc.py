"""BDMC on a trained run: datapoints simulated from the run's model, log p(x) bounded from below
by forward AIS and from above by reverse AIS (``pyvae.infer.ais.bdmc``), written to bdmc.json."""
from typing import List

import pyro
import torch

from ..infer.ais import bdmc
from ..training.checkpoint import BDMC, resolve_device, write_json


def bdmc_run(run, steps=(1000,), num_chains: int = 16, num_datapoints: int = 10, seed: int = 0,
             device="cpu", progress: bool = False) -> List[dict]:
    """BDMC on ``num_datapoints`` datapoints simulated from ``run``'s model (a ``pyvae.Run``),
    once per number of AIS steps in ``steps``: one row per run (lower, upper, mean width and
    its standard error, acceptance), written to bdmc.json."""
    device = resolve_device(device)
    vae = run.load_vae(device)
    pyro.clear_param_store()
    template = torch.zeros(num_datapoints, vae.x_dim, device=device)  # x is only a template
    rows = []
    for num_steps in steps:
        r = bdmc(vae.model, vae.guide, template, num_steps=num_steps, num_chains=num_chains,
                 seed=seed, progress=progress)
        rows.append(dict(r.summary(), width_stderr=float(r.width.std() / len(r.width) ** 0.5)))
    write_json(run.file(BDMC), {"runs": rows, "seed": seed})
    return rows
