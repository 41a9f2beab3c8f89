"""Draw the ELBO tutorial's figures from the numbers the tutorial computes.

    python docs/figures/tutorial.py [--out DIR]

Runs every ```python block of docs/tutorial-elbo.md, in order, in one namespace (as the tests and
the notebook do), then draws from that namespace:

    tutorial-height.png     log p(x) as a line, each family's ELBO as a bar, the gap shaded
    tutorial-posterior.png  the posterior p(z|x) of one datapoint, the best diagonal q*, the prior
    tutorial-iwae.png       IWAE_k against k for the prior and the diagonal friend
    compare-gap.png         the gap plot of the nine-family MNIST comparison, read from the
                            measured table in docs/compare.md

Figures are 7 inches wide at 150 dpi with 14-point text, so that they stay readable when a page
shows them about 700 pixels wide.
"""
import argparse
import contextlib
import io
import math
import os
import re

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse, Patch

DOCS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = ("tutorial-height.png", "tutorial-posterior.png", "tutorial-iwae.png", "compare-gap.png")
FONT = 14
DPI = 150
COLORS = {"prior": "#999999", "diagonal": "#1f77b4", "full-rank": "#2ca02c", "gap": "#d62728"}


def python_blocks(path):
    """The ```python blocks of a markdown page, in order."""
    text = open(path, encoding="utf-8").read()
    return [body for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S) if lang == "python"]


def run_tutorial(path=os.path.join(DOCS, "tutorial-elbo.md")):
    """Execute the tutorial's code; return its namespace (what it printed is discarded)."""
    namespace = {"__name__": "tutorial"}
    with contextlib.redirect_stdout(io.StringIO()):
        for i, code in enumerate(python_blocks(path)):
            exec(compile(code, f"{os.path.basename(path)}:block{i}", "exec"), namespace)
    return namespace


def new_figure(width=7.0, height=4.4):
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def style(ax):
    ax.tick_params(labelsize=FONT - 1)
    ax.xaxis.label.set_size(FONT)
    ax.yaxis.label.set_size(FONT)
    ax.title.set_size(FONT)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def save(fig, out, name):
    path = os.path.join(out, name)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


# ------------------------------------------------------------------------------ the figures
def height_figure(ns, path):
    """log p(x) as a dashed line, each family's exact ELBO as a bar, the gap shaded."""
    log_px, elbo = ns["log_px"], ns["exact_elbo"]
    names = list(elbo)
    fig = new_figure(7.0, 4.6)
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    for ax, zoom in zip(axes, (False, True)):
        shown = names if not zoom else [n for n in names if n != "prior"]
        bottom = (min(elbo[n] for n in names) - 3) if not zoom else log_px - 1.2
        for i, n in enumerate(shown):
            ax.bar(i, elbo[n] - bottom, bottom=bottom, width=0.6, color=COLORS[n])
            gap = log_px - elbo[n]
            ax.bar(i, gap, bottom=elbo[n], width=0.6, color=COLORS["gap"], alpha=0.25,
                   hatch="//", edgecolor=COLORS["gap"], linewidth=0)
            ax.text(i, log_px + (0.6 if not zoom else 0.04), f"gap\n{gap:.2f}", ha="center",
                    va="bottom", fontsize=FONT - 2, color=COLORS["gap"])
        ax.axhline(log_px, color="black", linestyle="--", linewidth=1.5)
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels(shown, fontsize=FONT)
        ax.set_ylim(bottom, log_px + (4.0 if not zoom else 0.3))
        ax.set_xlim(-0.6, len(shown) - 0.4)
        style(ax)
    axes[0].set_ylabel("nats per datapoint")
    axes[0].set_title("ELBO of each friend")
    axes[1].set_title("the top, enlarged")
    handles = [Line2D([], [], color="black", linestyle="--", linewidth=1.5),
               Patch(facecolor=COLORS["gap"], alpha=0.25, hatch="//", edgecolor=COLORS["gap"])]
    fig.legend(handles, [f"log p(x) = {log_px:.2f}", "gap = KL(q ‖ p(z|x))"], loc="upper center",
               ncol=2, fontsize=FONT - 1, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return save(fig, *os.path.split(path))


def _ellipse(ax, loc, cov, nsig, **kw):
    values, vectors = torch.linalg.eigh(cov)
    angle = math.degrees(math.atan2(float(vectors[1, 1]), float(vectors[0, 1])))
    width, height = (2 * nsig * values.sqrt()).tolist()[::-1]
    ax.add_patch(Ellipse(loc.tolist(), width, height, angle=angle, **kw))


def posterior_figure(ns, path):
    """Contours of p(z|x) for the first datapoint, the best diagonal q*, and the prior."""
    x = ns["x"][:1]
    post = ns["lg"].posterior(x)
    q = ns["diagonal_q"](x)
    loc, cov = post.loc[0], post.covariance_matrix[0]
    q_cov = q.covariance_matrix[0]
    fig = new_figure(7.0, 5.2)
    ax = fig.subplots()
    for nsig in (1, 2):
        _ellipse(ax, loc, cov, nsig, facecolor=COLORS["full-rank"], alpha=0.25 if nsig == 1 else 0.12,
                 edgecolor=COLORS["full-rank"], linewidth=2, label="posterior p(z|x)" if nsig == 1 else None)
        _ellipse(ax, q.loc[0], q_cov, nsig, fill=False, edgecolor=COLORS["diagonal"], linewidth=2.5,
                 linestyle="--", label="best diagonal q*" if nsig == 1 else None)
        _ellipse(ax, torch.zeros(2), torch.eye(2), nsig, fill=False, edgecolor="black", linewidth=1.5,
                 linestyle=":", label="prior p(z)" if nsig == 1 else None)
    ax.plot(*loc.tolist(), "o", color=COLORS["full-rank"], markersize=6)
    ax.plot(0, 0, "+", color="black", markersize=10)
    span = 2.4
    centre = (loc / 2).tolist()
    ax.set_xlim(centre[0] - span, centre[0] + span)
    ax.set_ylim(centre[1] - span * 0.8, centre[1] + span * 0.8)
    ax.set_aspect("equal")
    ax.set_xlabel("z₁")
    ax.set_ylabel("z₂")
    ax.set_title(f"one datapoint: gap of the best diagonal q* = {ns['lg'].best_diagonal_kl():.3f} nats")
    ax.legend(fontsize=FONT - 2, loc="lower right", frameon=False)
    style(ax)
    fig.tight_layout()
    return save(fig, *os.path.split(path))


def iwae_figure(ns, path):
    """IWAE_k against k (log scale), with error bars, and the exact log p(x)."""
    ks, iwae, log_px = ns["ks"], ns["iwae"], ns["log_px"]
    fig = new_figure(7.0, 4.6)
    ax = fig.subplots()
    for name, estimates in iwae.items():
        ax.errorbar(ks, [e.mean for e in estimates], yerr=[2 * e.mean_stderr for e in estimates],
                    marker="o", markersize=7, linewidth=2.5, capsize=3, color=COLORS[name],
                    label=f"{name} friend")
    ax.axhline(log_px, color="black", linestyle="--", linewidth=1.5, label=f"log p(x) = {log_px:.2f}")
    ax.set_xscale("log")
    ax.set_ylim(log_px - 1.6, log_px + 0.25)
    ax.set_xlabel("k, samples per bound")
    ax.set_ylabel("IWAE_k, nats")
    ax.set_title("IWAE_k climbs towards log p(x)")
    ax.text(ks[0], log_px + 0.08, f"prior at k = 1: {iwae['prior'][0].mean:.1f} (below the axis)",
            fontsize=FONT - 2, color=COLORS["prior"], va="bottom")
    ax.legend(fontsize=FONT - 2, loc="center right", frameon=False)
    style(ax)
    fig.tight_layout()
    return save(fig, *os.path.split(path))


def compare_table(path=os.path.join(DOCS, "compare.md")):
    """{family: {"elbo", "iwae": {k: value}, "log_px", "gap"}} from the measured table of
    docs/compare.md (the rows of the table whose header starts with "| family |")."""
    lines = open(path, encoding="utf-8").read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| family |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        number = lambda text: float(text.split("±")[0].replace("−", "-"))
        iwae = {int(k): float(v.replace("−", "-")) for k, v in
                (part.split(":") for part in cells["IWAE_k"].split(","))}
        rows[cells["family"]] = {"elbo": number(cells["test ELBO"]), "iwae": iwae,
                                 "log_px": number(cells["log p̂(x)"]),
                                 "gap": number(cells["log p̂(x) − ELBO"])}
    return rows


def gap_figure(rows, path):
    """Per family: the bounds as points on one axis (left), the gap as a bar from 0 (right).

    The bounds are points, not bars: on an axis that starts at an arbitrary value (here about
    -156 nats) the length of a bar means nothing. The gap log p̂(x) − ELBO has a meaningful zero
    (q(z|x) = p(z|x)), so it is drawn as a bar from 0.
    """
    order = sorted(rows, key=lambda f: rows[f]["log_px"])
    fig = new_figure(7.0, 6.0)
    bounds, gaps = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [1.7, 1]})
    ks = sorted({k for r in rows.values() for k in r["iwae"]})
    markers = dict(zip(ks, ("^", ">", "<", "v")))
    for i, family in enumerate(order):
        r = rows[family]
        first = i == 0
        bounds.plot([r["elbo"], r["log_px"]], [i, i], color="#bbbbbb", linewidth=2, zorder=1)
        bounds.plot(r["elbo"], i, "o", color="black", markersize=8, label="ELBO" if first else None)
        for k in sorted(r["iwae"]):
            bounds.plot(r["iwae"][k], i, markers[k], color="#444444", markersize=8,
                        label=f"IWAE_{k}" if first else None)
        bounds.plot(r["log_px"], i, "|", color=COLORS["gap"], markersize=18, markeredgewidth=3,
                    label="log p̂(x)" if first else None)
        gaps.barh(i, r["gap"], left=0.0, height=0.6, color=COLORS["gap"], alpha=0.6)
        gaps.text(r["gap"] + 0.15, i, f"{r['gap']:.2f}", va="center", fontsize=FONT - 2)
    bounds.set_yticks(range(len(order)))
    bounds.set_yticklabels(order, fontsize=FONT)
    bounds.set_xlabel("nats per datapoint")
    bounds.set_title("the bounds (higher is better)")
    bounds.legend(fontsize=FONT - 3, loc="lower right", frameon=True, framealpha=0.9)
    bounds.grid(axis="x", alpha=0.3)
    gaps.set_xlim(0.0, max(r["gap"] for r in rows.values()) * 1.35)
    gaps.set_xlabel("nats")
    gaps.set_title("gap log p̂(x) − ELBO")
    gaps.tick_params(axis="y", left=False)
    for ax in (bounds, gaps):
        style(ax)
    fig.suptitle("MNIST, 2 epochs per family", fontsize=FONT)
    fig.tight_layout()
    return save(fig, *os.path.split(path))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(DOCS, "figures"), help="output folder (default docs/figures)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    ns = run_tutorial()
    written = [height_figure(ns, os.path.join(args.out, FIGURES[0])),
               posterior_figure(ns, os.path.join(args.out, FIGURES[1])),
               iwae_figure(ns, os.path.join(args.out, FIGURES[2])),
               gap_figure(compare_table(), os.path.join(args.out, FIGURES[3]))]
    for path in written:
        print("wrote", os.path.relpath(path))
    return written


if __name__ == "__main__":
    main()
