"""Figures for a trained VAE and for a comparison of variational families.

Every function draws one figure and writes it to ``path`` (the suffix, ``.png``, ``.pdf`` or
``.svg``, picks the format) and returns the path. Figures are drawn with matplotlib's
object-oriented API on an Agg canvas (``Figure`` + ``FigureCanvasAgg``), so nothing here touches
pyplot's global state or needs a display. Image grids are laid out by torchvision's ``make_grid``.

``plot_run(run_dir)`` draws every figure that fits a run directory written by ``pyvae train``
(or a comparison directory written by ``pyvae compare``); ``pyvae plot RUN_DIR`` calls it.
"""
import io
import json
import math
import os
from typing import Dict, List, Optional, Sequence

import pyro
import torch

from ..config import choose
from ..errors import ConfigError
from ..infer.latents import posterior_mean
from ..limits import check_seed
from ..models.nets import image_shape_for as net_image_shape
from ..run import CHECKPOINT, FIGURES, METRICS, Run, good_records
from ..run.evaluations import find_evaluation
from ..training.checkpoint import atomic_write_bytes

FORMATS = ("png", "pdf", "svg")


# ----------------------------------------------------------------------------- helpers
def _new_figure(width: float, height: float):
    # matplotlib is loaded on the first figure: importing pyvae (or this module) does not need it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)  # attaches the Agg canvas: headless, no pyplot
    return fig


def _save(fig, path: str) -> str:
    fmt = os.path.splitext(path)[1].lstrip(".").lower()
    choose(fmt, FORMATS, f"figure format for {path}:")
    directory = os.path.dirname(os.path.abspath(path))
    buffer = io.BytesIO()  # drawn in memory, then written whole: never a 0-byte or half figure
    fig.savefig(buffer, format=fmt, bbox_inches="tight")
    os.makedirs(directory, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def image_shape_for(x_dim: int, image_shape: Optional[Sequence[int]] = None):
    """(height, width) to draw a flattened one-channel datapoint: that of ``image_shape`` if
    given (checked by ``pyvae.nets.image_shape_for``), a square when ``x_dim`` is a perfect
    square (784 -> 28 x 28), else a one-pixel-high strip.

    Args:
        x_dim: the values of a flattened datapoint.
        image_shape: (H, W) or (C, H, W) whose product is x_dim, or None.

    Returns:
        (height, width) as a tuple of ints.
    """
    if image_shape is not None:
        return net_image_shape(x_dim, image_shape)[-2:]
    side = math.isqrt(x_dim)
    return (side, side) if side * side == x_dim else (1, x_dim)


def _grid(images: torch.Tensor, image_shape, nrow: int) -> torch.Tensor:
    """(N, x_dim) values in [0, 1] -> an (H, W) grid laid out by torchvision's make_grid."""
    from torchvision.utils import make_grid

    h, w = image_shape
    images = images.detach().float().cpu().clamp(0, 1).reshape(-1, 1, h, w)
    grid = make_grid(images, nrow=nrow, padding=1 if h > 1 else 0, pad_value=1.0)
    return grid[0]


def _show_grid(ax, grid: torch.Tensor, title: str) -> None:
    # a one-pixel-high strip (non-image data) is drawn with stretched pixels so it stays visible
    ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest",
              aspect="auto" if grid.shape[0] < grid.shape[1] / 8 else "equal")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


@torch.no_grad()
def encode_mean(vae, x: torch.Tensor, num_samples: int = 32) -> torch.Tensor:
    """A point summary of q(z|x) per datapoint: its mean where the family knows it in closed
    form (Gaussians), else the average of ``num_samples`` draws (flows have no closed-form mean).

    Args:
        vae: a trained ``pyvae.VAE``.
        x: (N, x_dim) tensor of data.
        num_samples: draws averaged where q has no closed-form mean.

    Returns:
        (N, z_dim) tensor of E_q[z|x].
    """
    return posterior_mean(vae.encode(x) if hasattr(vae, "encode") else vae.encoder(x), num_samples)


def pca_2d(z: torch.Tensor) -> torch.Tensor:
    """Project rows of z onto their first two principal components (``torch.pca_lowrank``).

    Args:
        z: (N, d) tensor of codes; d <= 2 is returned as it is (d = 1 padded with zeros).

    Returns:
        (N, 2) tensor.
    """
    if z.shape[1] <= 2:
        return z if z.shape[1] == 2 else torch.cat([z, torch.zeros_like(z)], 1)
    z = z.double()
    _, _, v = torch.pca_lowrank(z, q=2, center=True, niter=4)
    return ((z - z.mean(0)) @ v[:, :2]).float()


# ----------------------------------------------------------------------------- figures
@torch.no_grad()
def reconstructions(vae, x: torch.Tensor, path: str, n: int = 10, image_shape=None) -> str:
    """Originals (top row) and reconstructions E[x|z], z ~ q(z|x) (bottom row) of n datapoints.

    Args:
        vae: a trained ``pyvae.VAE``.
        x: (N, x_dim) tensor of data in [0, 1]; the first n rows are drawn.
        path: the file to write, its extension the format ("png", "pdf" or "svg"); missing
            directories are made and the file is written atomically.
        n: the datapoints drawn.
        image_shape: the datapoints' image shape ((H, W) or (C, H, W); None: a square for a
            square x_dim, else a strip).

    Returns:
        ``path``.
    """
    x = x[:n]
    shape = image_shape_for(vae.x_dim, image_shape)
    recon = vae.reconstruct(x)
    fig = _new_figure(max(4.0, 0.6 * len(x)), 2.6)
    axes = fig.subplots(2, 1)
    _show_grid(axes[0], _grid(x, shape, len(x)), "data x")
    _show_grid(axes[1], _grid(recon, shape, len(x)), "reconstruction: mean of p(x|z), z ~ q(z|x)")
    return _save(fig, path)


@torch.no_grad()
def prior_samples(vae, path: str, n: int = 64, image_shape=None) -> str:
    """Means of p(x|z) for n draws z ~ p(z).

    Args:
        vae: a trained ``pyvae.VAE``.
        path: the file to write, its extension the format ("png", "pdf" or "svg"); missing
            directories are made and the file is written atomically.
        n: the draws, laid out in a square grid.
        image_shape: the datapoints' image shape ((H, W) or (C, H, W); None: a square for a
            square x_dim, else a strip).

    Returns:
        ``path``.
    """
    shape = image_shape_for(vae.x_dim, image_shape)
    nrow = max(1, math.isqrt(n))
    fig = _new_figure(5.0, 5.0 * max(0.25, math.ceil(n / nrow) / nrow))
    _show_grid(fig.subplots(), _grid(vae.sample(n), shape, nrow), f"{n} samples: mean of p(x|z), z ~ p(z)")
    return _save(fig, path)


@torch.no_grad()
def latent_scatter(vae, x: torch.Tensor, labels: Optional[torch.Tensor], path: str) -> str:
    """Codes of x (q(z|x) means), coloured by label; PCA to 2-D when z_dim > 2.

    Args:
        vae: a trained ``pyvae.VAE``.
        x: (N, x_dim) tensor of data.
        labels: (N,) integer labels that colour the points, or None.
        path: the file to write, its extension the format ("png", "pdf" or "svg"); missing
            directories are made and the file is written atomically.

    Returns:
        ``path``.
    """
    z = encode_mean(vae, x).cpu()
    z2 = pca_2d(z)
    fig = _new_figure(5.5, 4.8)
    ax = fig.subplots()
    if labels is not None:
        labels = labels.cpu()
        points = ax.scatter(z2[:, 0].numpy(), z2[:, 1].numpy(), c=labels.numpy(), cmap="tab10",
                            s=6, alpha=0.8, vmin=-0.5, vmax=9.5 if int(labels.max()) <= 9 else None)
        fig.colorbar(points, ax=ax, label="label",
                     ticks=range(10) if int(labels.max()) <= 9 else None)
    else:
        ax.scatter(z2[:, 0].numpy(), z2[:, 1].numpy(), s=6, alpha=0.8)
    pca = z.shape[1] > 2
    ax.set_xlabel("principal component 1" if pca else "z1")
    ax.set_ylabel("principal component 2" if pca else "z2")
    ax.set_title(f"latent codes of {len(z)} datapoints" + (f" (PCA of {z.shape[1]}-D z)" if pca else ""),
                 fontsize=10)
    return _save(fig, path)


@torch.no_grad()
def latent_manifold(vae, path: str, n: int = 15, image_shape=None) -> str:
    """For z_dim = 2: decoder means over an n x n grid of z at prior quantiles 0.05 ... 0.95.

    Args:
        vae: a trained ``pyvae.VAE`` with z_dim = 2.
        path: the file to write, its extension the format ("png", "pdf" or "svg"); missing
            directories are made and the file is written atomically.
        n: the grid points per axis.
        image_shape: the datapoints' image shape ((H, W) or (C, H, W); None: a square for a
            square x_dim, else a strip).

    Returns:
        ``path``.
    """
    if vae.z_dim != 2:
        raise ConfigError(f"the latent manifold needs z_dim = 2, the model has z_dim = {vae.z_dim}")
    shape = image_shape_for(vae.x_dim, image_shape)
    # a regular grid in probability space, mapped through the N(0, 1) inverse CDF, so the grid
    # covers where the prior puts its mass (as in Kingma & Welling 2014, figure 4)
    quantiles = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, n))
    device = next(vae.decoder.parameters()).device
    z1, z2 = torch.meshgrid(quantiles, quantiles.flip(0), indexing="xy")
    z = torch.stack([z1.reshape(-1), z2.reshape(-1)], 1).to(device)
    means = vae.likelihood(vae.decoder(z)).mean
    fig = _new_figure(6.0, 6.0)
    _show_grid(fig.subplots(), _grid(means, shape, n),
               "decoded z over the prior's 5%...95% quantiles (z1 across, z2 up)")
    return _save(fig, path)


@torch.no_grad()
def interpolation(vae, x_a: torch.Tensor, x_b: torch.Tensor, path: str, steps: int = 10,
                  image_shape=None) -> str:
    """Decode the straight line between the codes of two datapoints (rows: pairs).

    Args:
        vae: a trained ``pyvae.VAE``.
        x_a: (P, x_dim) tensor: the first datapoint of each pair.
        x_b: (P, x_dim) tensor: the second datapoint of each pair.
        path: the file to write, its extension the format ("png", "pdf" or "svg"); missing
            directories are made and the file is written atomically.
        steps: the points on each line, t = 0 ... 1.
        image_shape: the datapoints' image shape ((H, W) or (C, H, W); None: a square for a
            square x_dim, else a strip).

    Returns:
        ``path``.
    """
    x_a, x_b = x_a.reshape(-1, vae.x_dim), x_b.reshape(-1, vae.x_dim)
    shape = image_shape_for(vae.x_dim, image_shape)
    z_a, z_b = encode_mean(vae, x_a), encode_mean(vae, x_b)
    t = torch.linspace(0, 1, steps, device=z_a.device).reshape(1, steps, 1)
    z = (1 - t) * z_a.unsqueeze(1) + t * z_b.unsqueeze(1)  # (pairs, steps, z_dim)
    means = vae.likelihood(vae.decoder(z.reshape(-1, vae.z_dim))).mean.reshape(len(x_a), steps, -1)
    # each row: the datapoint x_a, the decoded path, the datapoint x_b
    rows = torch.cat([x_a.unsqueeze(1).to(means), means, x_b.unsqueeze(1).to(means)], 1)
    fig = _new_figure(max(4.0, 0.6 * (steps + 2)), 0.7 * len(x_a) + 0.8)
    _show_grid(fig.subplots(), _grid(rows.reshape(-1, vae.x_dim), shape, steps + 2),
               "x_a | decode (1-t) z_a + t z_b, t = 0 ... 1 | x_b")
    return _save(fig, path)


def read_metrics(run_dir: str) -> List[dict]:
    """The per-epoch records of a run (its metrics.jsonl; see ``pyvae.Run.metrics``).

    Args:
        run_dir: the run directory.
    """
    run = Run(run_dir)
    if not os.path.isfile(run.file(METRICS)):
        raise ConfigError(f"no {METRICS} in {run_dir}")
    return run.metrics()


def training_curves(history, path: str, title: Optional[str] = None) -> str:
    """Train and validation ELBO per epoch, from a run directory or a list of history records.

    Args:
        history: a run directory, a list of epoch records (``Trainer.fit``'s history), or a
            dict ``{name: records}`` to draw several runs on one axis.
        path: the file to write, its extension the format ("png", "pdf" or "svg"); missing
            directories are made and the file is written atomically.
        title: the axes' title (None: "training curves").

    Returns:
        ``path``.
    """
    if isinstance(history, str):
        history = read_metrics(history)
    runs = history if isinstance(history, dict) else {"": history}
    fig = _new_figure(6.0, 4.0)
    ax = fig.subplots()
    for i, (name, records) in enumerate(runs.items()):
        if not records:
            continue
        color = f"C{i % 10}"
        epochs = [r["epoch"] for r in records]
        prefix = f"{name}: " if name else ""
        ax.plot(epochs, [r["train_elbo"] for r in records], "-o", color=color, ms=3,
                label=f"{prefix}train {records[-1].get('train_objective', 'ELBO')}")
        valid = [(r["epoch"], r["valid_elbo"]) for r in records if r.get("valid_elbo") is not None]
        if valid:
            ax.plot(*zip(*valid), "--s", color=color, ms=3, label=f"{prefix}valid ELBO")
    ax.set_xlabel("epoch")
    from matplotlib.ticker import MaxNLocator  # (loaded with the figure)

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("ELBO (nats per datapoint, higher is better)")
    ax.grid(alpha=0.3)
    if len(runs) > 1:  # many lines: the legend goes beside the axes, not over them
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(fontsize=8)
    ax.set_title(title or "training curves", fontsize=10)
    return _save(fig, path)


def gap_plot(results: Dict[str, dict], path: str, exact: Optional[float] = None,
             title: Optional[str] = None) -> str:
    """The gap picture: per variational family, the ELBO, IWAE_k for growing k and log p̂(x).

    Every bound is a "friend" who is surely shorter than log p(x) ("my height", which cannot be
    measured); IWAE_k with more samples is a taller friend, and the best estimate log p̂(x) (IWAE
    with the most samples) is the tallest. A better family of friends (a better q) lifts the ELBO
    toward log p(x).

    Args:
        results: ``{family: {"elbo": float, "iwae": {k: float, ...}, "log_px": float}}`` in nats
            per datapoint; "iwae" and "log_px" may be missing. Optional ``"ais_log_px"`` (log p̂(x)
            by AIS, drawn as a diamond) and ``"bdmc_width"`` (a BDMC sandwich width, drawn as a
            bar of that height above the AIS point: how far AIS may still be below log p(x)).
        path: the file to write, its extension the format ("png", "pdf" or "svg"); missing
            directories are made and the file is written atomically.
        exact: the exact log p(x), drawn as a line, when it is known (linear-Gaussian model).
        title: the left panel's title (None: the ordering of the bounds).

    Returns:
        ``path``.
    """
    if not results:
        raise ConfigError("gap_plot needs results for at least one family")
    families = list(results)
    # right panel, when log p^(x) is known: every bound minus log p^(x), so that families whose
    # models differ (each trained its own decoder) compare by the size of their gaps alone
    relative = any(r.get("log_px") is not None for r in results.values())
    fig = _new_figure(max(5.0, 1.5 * len(families) + 2.5) * (1.8 if relative else 1.0), 4.6)
    axes = fig.subplots(1, 2 if relative else 1, squeeze=False)[0]
    _gap_panel(axes[0], results, families, exact, shift=False)
    axes[0].set_title(title or "every bound sits below log p(x): ELBO ≤ IWAE_k ≤ log p̂(x)", fontsize=10)
    if relative:
        _gap_panel(axes[1], results, families, None, shift=True)
        axes[1].set_title("the same, relative to each family's log p̂(x)", fontsize=10)
    axes[-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def _gap_panel(ax, results, families, exact, shift):
    all_k = sorted({int(k) for r in results.values() for k in (r.get("iwae") or {})})
    cmap = [f"C{i % 10}" for i in range(len(all_k))]
    seen = set()

    def label(text):  # one legend entry per kind of point
        if text in seen:
            return None
        seen.add(text)
        return text

    for i, family in enumerate(families):
        r = results[family]
        elbo, log_px, ais = r.get("elbo"), r.get("log_px"), r.get("ais_log_px")
        iwae = {int(k): v for k, v in (r.get("iwae") or {}).items()}
        if shift:
            if log_px is None:
                continue
            base = log_px
            elbo = None if elbo is None else elbo - base
            ais = None if ais is None else ais - base
            iwae = {k: v - base for k, v in iwae.items()}
            log_px = 0.0
        values = [v for v in [elbo, log_px, ais, *iwae.values()] if v is not None]
        if not values:
            continue
        # the "ladder" from the ELBO up to log p̂(x)
        ax.vlines(i, min(values), max(values), color="0.75", lw=6, zorder=1)
        if elbo is not None:
            ax.scatter([i], [elbo], marker="o", s=60, color="black", zorder=3, label=label("ELBO (= IWAE_1)"))
        for j, k in enumerate(all_k):
            if k in iwae:
                ax.scatter([i], [iwae[k]], marker="^", s=45, color=cmap[j], zorder=3,
                           label=label(f"IWAE_{k}"))
        if log_px is not None:
            ax.hlines(log_px, i - 0.3, i + 0.3, color="crimson", lw=2.5, zorder=4,
                      label=label("log p̂(x) (best estimate)"))
            if elbo is not None:
                ax.annotate(f"gap {log_px - elbo:.2f}", (i + 0.32, (elbo + log_px) / 2), fontsize=8,
                            va="center", color="0.25")
        if ais is not None:
            if r.get("bdmc_width") is not None:
                ax.vlines(i + 0.12, ais, ais + r["bdmc_width"], color="darkorange", lw=2, zorder=3,
                          label=label("BDMC width above AIS"))
            ax.scatter([i + 0.12], [ais], marker="D", s=45, color="darkorange", zorder=5,
                       label=label("log p̂(x) by AIS"))
    if exact is not None:
        ax.axhline(exact, color="crimson", ls="--", lw=1, label="exact log p(x)")
    ax.set_xticks(range(len(families)))
    ax.set_xticklabels(families)
    ax.set_xlim(-0.6, len(families) - 0.1)
    ax.set_ylabel("nats per datapoint minus log p̂(x)" if shift else "nats per datapoint (higher is tighter)")
    ax.grid(axis="y", alpha=0.3)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _blank(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def check_evaluation(result, where: str) -> None:
    """A ConfigError line unless ``result`` holds what ``plot_evaluation`` and a comparison of
    runs read: numbers ``log_px``, ``elbo``, ``num_samples`` and ``num_datapoints``.

    Args:
        result: a kept evaluation's dict.
        where: what the error line calls it (``RUN_DIR: evaluation NAME``).
    """
    needed = ("log_px", "elbo", "num_samples", "num_datapoints")
    bad = [k for k in needed if not _number(result.get(k))] if isinstance(result, dict) else needed
    if bad:
        raise ConfigError(f"{where} is damaged or not an evaluation: {', '.join(bad)} missing "
                          "or not a number")


def plot_evaluation(result: dict, path: str, title: Optional[str] = None) -> str:
    """One kept evaluation (a dict as ``Run.evaluate`` returns it, eval.json or a file under
    evaluations/) in four panels: the estimates in nats (ELBO, importance-weighted log p̂(x),
    and log p̂(x) by AIS when it ran, each ± 2 standard errors, the gap written beside);
    the mean and the smallest effective sample size of the K weights against K; the largest
    Pareto k̂ against the 0.7 above which a datapoint's estimate is not to be trusted, with
    how many datapoints exceed it; and KL(q(z|x) ‖ p(z)) per latent dimension (the total
    alone for a guide that does not factorize), with the active units. A kept evaluation
    holds these summaries, not per-datapoint values.

    Args:
        result: the evaluation's dict (``log_px``, ``elbo``, ``num_samples``,
            ``num_datapoints`` at least).
        path: the figure's file (``.png``, ``.pdf`` or ``.svg``).
        title: the figure's title (default: the split, the datapoints and K).
    """
    check_evaluation(result, "result")
    k, n = result["num_samples"], result["num_datapoints"]
    fig = _new_figure(10.0, 7.0)
    (est, ess), (pareto, kl) = fig.subplots(2, 2)

    def err(key):
        se = result.get(f"{key}_stderr")
        return 2 * se if _number(se) else 0.0

    names = ["ELBO", f"log p̂(x)\nIW, K={k}"]
    values, errors = [result["elbo"], result["log_px"]], [err("elbo"), err("log_px")]
    if _number(result.get("ais_log_px")):
        names.append(f"log p̂(x)\nAIS, {result.get('ais_steps')} steps")
        values.append(result["ais_log_px"])
        errors.append(err("ais_log_px"))
    est.set_label("estimates")
    est.errorbar(range(len(values)), values, yerr=errors, fmt="o", color="black", capsize=4)
    est.set_xticks(range(len(values)))
    est.set_xticklabels(names, fontsize=8)
    est.set_xlim(-0.5, len(values) - 0.5)
    est.annotate(f"gap {result['log_px'] - result['elbo']:.3f}", (0.5, (result["elbo"] + result["log_px"]) / 2),
                 ha="center", fontsize=8, color="0.25")
    est.set_ylabel("nats per datapoint")
    est.set_title("estimates (± 2 standard errors)", fontsize=10)
    est.grid(axis="y", alpha=0.3)

    ess.set_label("ess")
    sizes = [result.get("ess_mean"), result.get("ess_min")]
    if all(_number(v) for v in sizes):
        bars = ess.bar([0, 1], sizes, color=["C0", "C1"], width=0.6)
        for bar, size in zip(bars, sizes):  # read even where a bar is too short to see
            ess.annotate(f"{size:.1f}", (bar.get_x() + bar.get_width() / 2, size), ha="center",
                         va="bottom", fontsize=8)
        ess.axhline(k, color="crimson", ls="--", lw=1, label=f"K = {k}")
        ess.set_ylim(0, 1.1 * k)
        ess.set_xticks([0, 1])
        ess.set_xticklabels(["mean", "smallest"])
        ess.legend(fontsize=8, loc="center right")
    else:
        _blank(ess, "not recorded")
    ess.set_title("effective sample size of the K weights", fontsize=10)

    pareto.set_label("pareto")
    khat = result.get("khat_max")
    if _number(khat):
        over = result.get("khat_over_0.7")
        pareto.bar([0], [khat], color="C2", width=0.5)
        pareto.axhline(0.7, color="crimson", ls="--", lw=1, label="0.7: not to be trusted above")
        pareto.set_xticks([0])
        pareto.set_xticklabels(["largest k̂"])
        pareto.set_xlim(-1, 1)
        pareto.set_ylim(0, max(1.0, 1.15 * khat))
        pareto.legend(fontsize=8)
        pareto.set_title(f"Pareto k̂: {over} of {n} datapoints above 0.7", fontsize=10)
    else:
        _blank(pareto, "not fitted (K too small)")
        pareto.set_title("Pareto k̂", fontsize=10)

    kl.set_label("kl")
    dims = result.get("kl_per_dimension")
    units = result.get("active_units")
    if isinstance(dims, list) and dims and all(_number(v) for v in dims):
        kl.bar(range(1, len(dims) + 1), dims, color="C4")
        from matplotlib.ticker import MaxNLocator  # (loaded with the figure)

        kl.xaxis.set_major_locator(MaxNLocator(integer=True))
        kl.set_xlabel("latent dimension")
        kl.set_ylabel("nats")
    else:
        total = result.get("kl")
        _blank(kl, "KL not recorded" if not _number(total) else
               f"KL {total:.3f} nats\n(not per dimension: the guide does not factorize)")
    kl.set_title(f"KL(q(z|x) ‖ p(z)) per dimension; {units} of {result.get('z_dim')} units "
                 "active", fontsize=10)
    fig.suptitle(title or f"{result.get('split', 'data')} split, {n} datapoints, K = {k}",
                 fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------- run directories
def load_run(run_dir: str, device="cpu"):
    """The trained VAE of a run directory and its config.json dict (see ``pyvae.Run``).

    Args:
        run_dir: the run directory.
        device: where the VAE's parameters go.

    Returns:
        (vae, config dict).
    """
    run = Run(run_dir)
    return run.load_vae(device), run.config.to_dict()


def _read_report(path: str) -> dict:
    try:
        with open(path) as f:
            report = json.load(f)
        for family, r in gap_results(report).items():
            if not all(isinstance(r[k], (int, float)) for k in ("elbo", "log_px")):
                raise ValueError(f"{family}: elbo and log_px must be numbers")
        if not all(good_records(r.get("history") or []) for r in report["rows"]):
            raise ValueError("a family's history is not a list of epoch records")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"{path} is damaged or not a comparison ({type(e).__name__}: {e})") from None
    return report


def plot_run(run_dir: str, out: Optional[str] = None, fmt: str = "png", split: str = "test",
             data_dir=None, download: bool = True, num_points: int = 2000, seed: int = 0,
             figures: Optional[Sequence[str]] = None, evaluation: Optional[str] = None) -> List[str]:
    """Draw every figure that fits ``run_dir`` into ``out`` (default ``RUN_DIR/figures``).

    A training run (checkpoint.pt) gets: training curves, reconstructions, prior samples, latent
    scatter, interpolation, the latent manifold when z_dim = 2, and ``evaluation.FMT``
    (``plot_evaluation``) of its kept evaluation ``evaluation`` (a name or number as
    ``Run.evaluation`` takes it; None: the latest, and no figure for a run not evaluated yet).
    A comparison directory (compare.json, from ``pyvae compare``) gets the gap plot and the
    training curves of every family.

    Args:
        run_dir: a run directory (checkpoint.pt) or a comparison directory (compare.json).
        out: the directory the figures go to (None: ``RUN_DIR/figures``).
        fmt: the figures' format, "png", "pdf" or "svg".
        split: the data split the data figures draw from.
        data_dir: where the run's data set lies (None: the directory the run recorded).
        download: fetch a missing data set with torchvision.
        num_points: the datapoints drawn at random from ``split`` (the latent scatter shows
            them all).
        seed: picks the datapoints and seeds the samples.
        figures: the names to draw, of "curves", "reconstructions", "samples", "latent",
            "manifold", "interpolation", "evaluation" (None: all that fit).
        evaluation: the kept evaluation drawn (a name or number, as ``Run.evaluation``
            takes it; None: the latest); only for a run directory.

    Returns:
        the written paths.
    """
    choose(fmt, FORMATS, "format")
    check_seed(seed)
    if not os.path.isdir(run_dir):
        raise ConfigError(f"{run_dir} is not a directory")
    out = out or os.path.join(run_dir, FIGURES)
    written = []
    if os.path.isfile(os.path.join(run_dir, "compare.json")):
        if evaluation is not None:
            raise ConfigError(f"--evaluation goes with a run directory; {run_dir} is a "
                              "comparison, drawn from its compare.json")
        report = _read_report(os.path.join(run_dir, "compare.json"))
        written.append(gap_plot(gap_results(report), os.path.join(out, f"gap.{fmt}"),
                                title=report.get("title")))
        histories = {row_label(r): r.get("history") or [] for r in report["rows"]}
        if any(histories.values()):
            written.append(training_curves(histories, os.path.join(out, f"curves.{fmt}"),
                                           title="training curves per family"))
        return written
    if not os.path.isfile(os.path.join(run_dir, CHECKPOINT)):
        raise ConfigError(f"{run_dir} is neither a pyvae run ({CHECKPOINT}) nor a comparison (compare.json)")
    run = Run(run_dir)
    wanted = set(figures or ["curves", "reconstructions", "samples", "latent", "manifold",
                             "interpolation", "evaluation"])
    kept = None  # the evaluation drawn, found before any figure is drawn
    if "evaluation" in wanted and (evaluation is not None or run.evaluations()):
        name = find_evaluation(run.path, evaluation)["name"]
        kept = name, run.evaluation(evaluation)
        check_evaluation(kept[1], f"{run.path}: evaluation {name}")
    vae = run.load_vae()
    data = run.data(split, data_dir, download)
    data.check_for(vae.likelihood, vae.x_dim)
    pyro.set_rng_seed(seed)  # the seed picks the datapoints and draws the samples
    g = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(data), generator=g)[:num_points]
    x = data.batch(index, g)
    labels = None if data.labels is None else data.labels[index]
    shape = data.image_shape
    if "curves" in wanted and run.metrics():
        written.append(training_curves(run.metrics(), os.path.join(out, f"curves.{fmt}")))
    if "reconstructions" in wanted:
        written.append(reconstructions(vae, x, os.path.join(out, f"reconstructions.{fmt}"), image_shape=shape))
    if "samples" in wanted:
        written.append(prior_samples(vae, os.path.join(out, f"samples.{fmt}"), image_shape=shape))
    if "latent" in wanted:
        written.append(latent_scatter(vae, x, labels, os.path.join(out, f"latent.{fmt}")))
    if "manifold" in wanted and vae.z_dim == 2:
        written.append(latent_manifold(vae, os.path.join(out, f"manifold.{fmt}"), image_shape=shape))
    if "interpolation" in wanted and len(x) >= 2:
        a, b = _pairs(labels, len(x), 5)
        written.append(interpolation(vae, x[a], x[b], os.path.join(out, f"interpolation.{fmt}"),
                                     image_shape=shape))
    if kept is not None:
        name, result = kept
        written.append(plot_evaluation(result, os.path.join(out, f"evaluation.{fmt}"), title=(
            f"{name}: {result.get('split', 'data')} split, {result.get('num_datapoints')} "
            f"datapoints, K = {result.get('num_samples')}, epoch {result.get('epoch')}")))
    return written


def _pairs(labels, n: int, count: int):
    """Index pairs of datapoints to interpolate between: different labels when labels exist."""
    a, b = [], []
    for i in range(n):
        for j in range(i + 1, n):
            if labels is None or int(labels[i]) != int(labels[j]):
                a.append(i)
                b.append(j)
                break
        if len(a) == count:
            break
    return a or [0], b or [1]


def row_label(row: dict) -> str:
    """What a comparison's row is called in its figures: its run (``compare_runs``), else its
    family.

    Args:
        row: a row of a compare.json report.
    """
    return row.get("run") or row["guide"]


def gap_results(report: dict) -> Dict[str, dict]:
    """The ``gap_plot`` input from a compare.json report.

    Args:
        report: compare.json's content: a dict whose ``rows`` hold one dict per family.

    Returns:
        ``{family: {"elbo", "log_px", "ais_log_px", "iwae": {k: value}}}``, nats per datapoint.
    """
    out = {}
    for row in report["rows"]:
        out[row_label(row)] = {"elbo": row.get("elbo"), "log_px": row.get("log_px"),
                             "ais_log_px": row.get("ais_log_px"),
                             "iwae": {int(k): v for k, v in (row.get("iwae") or {}).items()}}
    return out


def plot_snr(rows: List[dict], path: str, title: str = "") -> str:
    """SNR against k (log-log), one line per estimator, encoder and decoder side by side.

    Args:
        rows: dicts with ``k``, ``estimator``, ``encoder_snr`` and ``decoder_snr``, as
            ``pyvae snr`` writes them (see ``pyvae.infer.diagnostics``); SNRs <= 0 are left
            off the log axis.
        path: the file to write, its extension the format ("png", "pdf" or "svg"); missing
            directories are made and the file is written atomically.
        title: the figure's title ("": none).

    Returns:
        ``path``.
    """
    fig = _new_figure(9, 3.6)
    axes = fig.subplots(1, 2)
    for ax, side in zip(axes, ("encoder", "decoder")):
        for estimator in dict.fromkeys(r["estimator"] for r in rows):
            mine = sorted((r for r in rows if r["estimator"] == estimator), key=lambda r: r["k"])
            mine = [r for r in mine if r[f"{side}_snr"] > 0]  # (a log axis)
            ax.plot([r["k"] for r in mine], [r[f"{side}_snr"] for r in mine], "o-", label=estimator)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("k (particles)")
        ax.set_ylabel("mean SNR of the gradient")
        ax.set_title(f"{side} ({'guide' if side == 'encoder' else 'model'} parameters)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
