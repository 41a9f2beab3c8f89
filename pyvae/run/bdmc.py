"""BDMC on a trained run: datapoints simulated from the run's model, log p(x) bounded from below
by forward AIS and from above by reverse AIS (``pyvae.infer.ais.bdmc``), written to bdmc.json."""
from typing import List, Optional

import pyro
import torch

from ..devices import resolve_device
from ..errors import ConfigError
from ..infer.ais import BDMC_TOLERANCE, NUM_CHAINS, NUM_STEPS, bdmc, recommend_steps
from ..limits import check_count, check_seed
from ..training.checkpoint import BDMC, write_json

#: the numbers of AIS steps of a run's BDMC when none are given (one row each)
STEPS = (NUM_STEPS,)
#: datapoints simulated from the run's model when none is given
NUM_DATAPOINTS = 10


def bdmc_run(run, steps=STEPS, num_chains: int = NUM_CHAINS, num_datapoints: int = NUM_DATAPOINTS,
             seed: int = 0, device="cpu", progress: Optional[bool] = None, write: bool = True,
             tolerance: float = BDMC_TOLERANCE) -> List[dict]:
    """BDMC on ``num_datapoints`` datapoints simulated from ``run``'s model (a ``pyvae.Run``),
    once per number of AIS steps in ``steps``: one row per run (lower, upper, mean width and
    its standard error, acceptance, datapoints whose chain ESS is too low in each direction),
    written to bdmc.json unless ``write=False``, with ``recommended_steps``, the smallest
    number of steps whose mean width is within ``tolerance`` nats (``recommend_steps``; None
    if none is). Every count and the tolerance are checked before the model is loaded."""
    steps = list(steps) if isinstance(steps, (list, tuple)) else [steps]
    if not steps:
        raise ConfigError("bdmc needs at least one number of AIS steps")
    for num_steps in steps:
        check_count("num_steps", num_steps)
    check_count("num_chains", num_chains)
    check_count("num_datapoints", num_datapoints)
    check_seed(seed)
    recommend_steps({}, tolerance)  # checks the tolerance
    device = resolve_device(device)
    vae = run.load_vae(device)
    pyro.clear_param_store()
    template = torch.zeros(num_datapoints, vae.x_dim, device=device)  # x is only a template
    rows = []
    for num_steps in steps:
        r = bdmc(vae.model, vae.guide, template, num_steps=num_steps, num_chains=num_chains,
                 seed=seed, progress=progress)
        rows.append(dict(r.summary(), width_stderr=float(r.width.std() / len(r.width) ** 0.5)))
    if write:
        write_bdmc(run, rows, seed, tolerance)
    return rows


def write_bdmc(run, rows: List[dict], seed: int, tolerance: float = BDMC_TOLERANCE) -> str:
    recommended = recommend_steps({r["num_steps"]: r["mean_width"] for r in rows}, tolerance)
    write_json(run.file(BDMC), {"runs": rows, "seed": seed, "tolerance": tolerance,
                                "recommended_steps": recommended})
    return run.file(BDMC)
