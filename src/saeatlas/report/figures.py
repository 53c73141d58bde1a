"""Static PNG figures for papers and slides (matplotlib, Agg, no pyplot state).

Each function draws one figure from the same data as its interactive twin in
:mod:`.plots` and returns a :class:`matplotlib.figure.Figure`; :func:`save_png`
writes it atomically.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..store.atomic import atomic_write
from .data import ReportData, SweepInfo
from .effects import specialisation_grid
from .links import ModuleLinks
from .plots import layer_module_matrices, layer_names
from .text import tick_text

DPI = 150


def plain_text() -> AbstractContextManager:
    """Draw (create and save) figures in this context: text from the atlas (layer names,
    labels) is plain text, never matplotlib's mathtext, where a layer named ``a$x^{$``
    ended the report in a ParseSyntaxException and ``a$b$c`` was drawn as a formula."""
    return rc_context({"text.parse_math": False})


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # Agg, whatever backend pyplot would pick
    return fig


def save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` as a PNG, atomically."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    return path


def feature_map_png(data: ReportData) -> Figure:
    """The features drawn on the page's map, coloured by module."""
    fig = _figure(7, 6)
    ax = fig.add_subplot()
    f = data.atlas.features.iloc[data.map_sample.rows]
    rest = f[f["module"] < 0]
    ax.scatter(rest["x"], rest["y"], s=4, c="#c4c4c4", alpha=0.5, lw=0, label="no module")
    for m in range(data.n_modules):
        sub = f[f["module"] == m]
        ax.scatter(sub["x"], sub["y"], s=10, c=data.colour(m), lw=0, label=f"module {m}")
    s = data.map_sample
    title = f"{s.n_members + s.n_others_drawn:,} of {s.n_features:,} features"
    if s.sampled:
        title += f" (all {s.n_members:,} module members, a sample of the rest)"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(f"map x ({data.summary.get('map_method', 'pca')})")
    ax.set_ylabel("map y")
    if data.n_modules <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="best", frameon=False)
    return fig


def layer_module_png(data: ReportData) -> Figure:
    """Layer x module: the share of each module's units (and decoder energy) per layer."""
    mats = layer_module_matrices(data)
    layers = [tick_text(n) for n in layer_names(data)]
    # room for the names (about 0.07 inch a character at 8 points): a module path of 40
    # characters squeezed the axes of a two-module atlas to nothing
    names = 0.07 * max((len(n) for n in layers), default=0)
    width = min(16, 2.5 + 0.45 * max(data.n_modules, 1) + names)
    fig = _figure(width, 1.2 + 0.9 * len(mats) * max(len(layers), 1) * 0.4 + 0.6)
    axes = fig.subplots(len(mats), 1, squeeze=False)[:, 0]
    for ax, (title, z) in zip(axes, mats.items()):
        if z.size == 0:
            ax.text(0.5, 0.5, "no modules", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        im = ax.imshow(z, aspect="auto", cmap="Blues", vmin=0, vmax=1)
        ax.set_yticks(range(len(layers)), layers, fontsize=8)
        ax.set_xticks(range(data.n_modules), [f"M{m}" for m in range(data.n_modules)], fontsize=7)
        ax.set_title(title, fontsize=9)
        if z.size <= 400:
            for (i, j), v in np.ndenumerate(z):
                ax.text(
                    j,
                    i,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if v > 0.6 else "#222",
                )
        fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def pareto_png(sweep: SweepInfo) -> Figure:
    """The sweep's held-out L0-FVU points, frontier and recommendation."""
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    pts = sweep.points
    front = sorted((i for i, p in enumerate(pts) if p.on_front), key=lambda i: pts[i].l0)
    ax.plot([pts[i].l0 for i in front], [pts[i].fvu for i in front], c="#6b7a8f", lw=1)
    ax.scatter([p.l0 for p in pts], [p.fvu for p in pts], c="#4c72b0", s=25, zorder=3)
    for p in pts:
        ax.annotate(
            f"{sweep.over}={p.value:g}",
            (p.l0, p.fvu),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    c = sweep.chosen
    ax.scatter(
        [c.l0],
        [c.fvu],
        marker="*",
        s=220,
        c="#f2b01e",
        edgecolors="#111",
        zorder=4,
        label="recommended",
    )
    if sweep.atlas_point is not None:
        a = pts[sweep.atlas_point]
        ax.scatter(
            [a.l0],
            [a.fvu],
            s=300,
            facecolors="none",
            edgecolors="#111",
            zorder=5,
            label="the atlas's SAE",
        )
    ax.set_xscale("log")
    ax.set_xlabel("L0 (active latents per row)")
    ax.set_ylabel("FVU on held-out rows")
    ax.legend(fontsize=8, frameon=False)
    return fig


def specialisation_png(data: ReportData) -> Figure:
    """Ablation: each module's loss increase against random sets, and its label profile."""
    labels, grid = specialisation_grid(data)
    m = data.atlas.modules
    fig = _figure(min(16, 4 + 0.5 * len(labels) + 0.35 * len(m)), 2.5 + 0.25 * len(m))
    left, right = fig.subplots(1, 2, width_ratios=[1, max(1.0, len(labels) / 6)])
    y = np.arange(len(m))
    left.barh(y, m["ablation_effect"], color=[data.colour(int(i)) for i in m["module"]])
    if "ablation_random_mean" in m:
        left.scatter(
            m["ablation_random_mean"],
            y,
            marker="|",
            s=200,
            c="#111",
            label="random unit sets",
            zorder=3,
        )
        left.legend(fontsize=7, frameon=False)
    left.set_yticks(y, [f"M{i}" for i in m["module"]], fontsize=7)
    left.invert_yaxis()
    left.set_xlabel("loss increase when ablated")
    im = right.imshow(grid, aspect="auto", cmap="Reds", vmin=0, vmax=1)  # shares
    right.set_xticks(range(len(labels)), [tick_text(n) for n in labels], fontsize=7)
    right.set_yticks(y, [f"M{i}" for i in m["module"]], fontsize=7)
    right.set_xlabel("label")
    right.set_title("share of the module's excess damage", fontsize=9)
    fig.colorbar(im, ax=right, shrink=0.8)
    return fig


def module_graph_png(data: ReportData, links: ModuleLinks, pos: np.ndarray) -> Figure:
    """Modules as nodes (size: units; thick ring: significant), links as edges."""
    fig = _figure(6, 6)
    ax = fig.add_subplot()
    e = links.edges
    for s, t, w in zip(e["source"], e["target"], e["weight"]):
        ax.plot(
            pos[[s, t], 0],
            pos[[s, t], 1],
            lw=0.5 + 5 * min(abs(w), 1),
            c="#6b7a8f" if w > 0 else "#c0504d",
            ls="-" if w > 0 else "--",
            zorder=1,
        )
    m = data.atlas.modules
    sig = m["significant"].to_numpy(bool) if "significant" in m else np.zeros(len(m), bool)
    n = m["n_units"].to_numpy(float)
    size = 150 + 900 * n / max(n.max(initial=1), 1)
    ax.scatter(
        pos[:, 0],
        pos[:, 1],
        s=size,
        c=[data.colour(int(i)) for i in m["module"]],
        edgecolors="#111",
        linewidths=np.where(sig, 2.5, 0.4),
        zorder=2,
    )
    for (x, y), i in zip(pos, m["module"]):
        ax.text(x, y, f"M{i}", ha="center", va="center", fontsize=7, color="white", zorder=3)
    ax.set_axis_off()
    ax.set_aspect("equal")
    ax.margins(0.15)
    edges = {
        "flows": "co-activation across consecutive layers (dashed: negative)",
        "examples": "shared top rows",
        "none": "none stored",
    }[links.kind]
    ax.set_title(f"modules (thick ring: significant); edges: {edges}", fontsize=9)
    return fig
