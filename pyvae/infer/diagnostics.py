"""The signal-to-noise ratio of gradient estimates (Rainforth et al. 2018).

For one scalar parameter, with g_1 .. g_R the gradients of R independent evaluations of an
objective's surrogate on the same data x (only the Monte-Carlo draws of z differ),

    SNR = |mean_r g_r| / std_r g_r,

and a group's SNR is the mean of its elements' SNRs (an element whose gradient is exactly zero
in every draw counts as 0). Rainforth et al. show that for IWAE_k the model's SNR grows like
sqrt(k) and the standard estimator's guide SNR falls like 1/sqrt(k); the dreg estimator's guide
SNR grows like sqrt(k) as well (Tucker et al. 2018).
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List

import torch

import pyro
import pyro.poutine as poutine

from ..errors import ConfigError

SIDES = ("encoder", "decoder")


@dataclass
class GradientSNR:
    """Per-parameter SNRs of one objective and estimator.

    Attributes:
        groups: one dict per parameter tensor: ``name``, ``side`` ("encoder": a parameter the
            guide uses; "decoder": one only the model uses), ``numel``, ``snr`` (mean over the
            tensor's elements), ``mean_abs`` (mean |E g|) and ``std`` (mean std g).
        repeats: R, the gradient draws.
        side_snr: the mean element SNR over all parameters of each side.
    """

    groups: List[dict]
    repeats: int
    side_snr: Dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        return {"repeats": self.repeats, **{f"{side}_snr": v for side, v in self.side_snr.items()}}


def _model_guide_params(vae_or_model_guide, x):
    """(model, guide, {name: (side, tensor)}) for a VAE or a (model, guide) pair."""
    if isinstance(vae_or_model_guide, (tuple, list)) and len(vae_or_model_guide) == 2:
        model, guide = vae_or_model_guide
        guide_params = _params(guide, x)
        params = {n: ("decoder", p) for n, p in _params(model, x).items()}
        params.update({n: ("encoder", p) for n, p in guide_params.items()})
        return model, guide, params
    if isinstance(vae_or_model_guide, torch.nn.Module) and callable(getattr(vae_or_model_guide, "guide", None)):
        vae = vae_or_model_guide
        encoder = {id(p) for name in ("encoder_body", "encoder")
                   for p in getattr(vae, name, torch.nn.Identity()).parameters()}
        params = {n: ("encoder" if id(p) in encoder else "decoder", p) for n, p in vae.named_parameters()}
        return vae.model, vae.guide, params
    raise ConfigError("gradient_snr needs a VAE or a (model, guide) pair of Pyro functions")


def _params(fn, x):
    """name -> unconstrained tensor of the parameters that ``fn`` registers (its "param" sites)."""
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(fn).get_trace(x)
    return {name: site["value"].unconstrained() for name, site in trace.nodes.items()
            if site["type"] == "param"}


def gradient_snr(vae_or_model_guide, x: torch.Tensor, objective, repeats: int = 100,
                 seed: int = 0) -> GradientSNR:
    """SNR of the gradient of ``objective.differentiable_loss(model, guide, x)`` per parameter.

    Args:
        vae_or_model_guide: a ``VAE`` (its ``model`` and ``guide``; the encoder side is the
            parameters of ``encoder_body`` and ``encoder``) or a pair ``(model, guide)`` whose
            parameters are registered with ``pyro.param``/``pyro.module`` in the param store
            (the guide's are the encoder side).
        x: the data, held fixed across draws.
        objective: a Pyro ELBO object (see ``pyvae.objectives.make_objective``).
        repeats: R >= 2 gradient draws.
        seed: seeds the draws.
    """
    if int(repeats) < 2:
        raise ConfigError(f"repeats must be >= 2, got {repeats}")
    model, guide, sides = _model_guide_params(vae_or_model_guide, x)
    params = {n: p for n, (_, p) in sides.items() if p.requires_grad}
    if not params:
        raise ConfigError("the model and guide register no trainable parameters")
    total = {n: torch.zeros(p.shape, dtype=torch.float64, device=p.device) for n, p in params.items()}
    squares = {n: torch.zeros_like(t) for n, t in total.items()}
    pyro.set_rng_seed(seed)
    for _ in range(int(repeats)):
        for p in params.values():
            p.grad = None
        objective.differentiable_loss(model, guide, x).backward()
        for n, p in params.items():
            g = torch.zeros_like(total[n]) if p.grad is None else p.grad.to(torch.float64)
            total[n] += g
            squares[n] += g * g
    for p in params.values():
        p.grad = None
    r = int(repeats)
    groups, side_sums = [], {side: [0.0, 0] for side in SIDES}
    for n in params:
        mean = total[n] / r
        std = ((squares[n] - r * mean * mean).clamp(min=0) / (r - 1)).sqrt()
        snr = torch.where(std > 0, mean.abs() / std.clamp(min=1e-300), torch.zeros_like(std))
        side = sides[n][0]
        side_sums[side][0] += float(snr.sum())
        side_sums[side][1] += snr.numel()
        groups.append(dict(name=n, side=side, numel=snr.numel(), snr=float(snr.mean()),
                           mean_abs=float(mean.abs().mean()), std=float(std.mean())))
    side_snr = {side: (s / c if c else math.nan) for side, (s, c) in side_sums.items()}
    return GradientSNR(groups, r, side_snr)


def snr_table(rows: List[dict]) -> str:
    """A markdown table of SNRs, one line per row.

    Args:
        rows: dicts with keys ``k`` (particles), ``estimator`` (its name), ``encoder_snr``
            and ``decoder_snr`` (mean element SNRs, dimensionless).

    Returns:
        the table as markdown text, a header and one line per row in the order given.
    """
    lines = ["| k | estimator | encoder SNR | decoder SNR |", "| ---: | --- | ---: | ---: |"]
    lines += [f"| {r['k']} | {r['estimator']} | {r['encoder_snr']:.3g} | {r['decoder_snr']:.3g} |"
              for r in rows]
    return "\n".join(lines)
