"""The report's interactive figures: one function per figure, each returning a :class:`Plot`.

A :class:`Plot` is a Plotly figure, the id of the ``<div>`` it is drawn in, and
``highlight``: how the page's script highlights a module in it (per-trace
opacity for the maps, node borders for the module graph, a band over a heatmap's
row or column). Every figure colours module ``m`` with ``data.colours[m]``.
This file holds the shared pieces and the sweep, training and layer figures;
:mod:`.maps`, :mod:`.graph` and :mod:`.effects` hold the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .data import ReportData, SweepInfo
from .text import axis_ticks, esc, fmt

TEMPLATE = "plotly_white"
CONFIG = {"displaylogo": False, "responsive": True}


@dataclass(frozen=True)
class Plot:
    div_id: str
    figure: go.Figure
    highlight: dict[str, Any] = field(default_factory=dict)


def style_figure(fig: go.Figure, height: int, **kwargs: Any) -> go.Figure:
    """The report's look (template, margins, left-aligned hover labels); ``kwargs`` override."""
    settings = dict(
        template=TEMPLATE,
        height=height,
        margin=dict(l=50, r=20, t=40, b=40),
        hoverlabel=dict(align="left"),
    )
    fig.update_layout(**{**settings, **kwargs})
    return fig


def layer_names(data: ReportData) -> list[str]:
    """The atlas's layers in model order."""
    names = data.summary.get("layers")
    if names:
        return [str(n) for n in names]
    return list(dict.fromkeys(data.atlas.units["layer"].astype(str)))


def layer_module_matrices(data: ReportData) -> dict[str, np.ndarray]:
    """``{title: [n_layers, n_modules]}``: share of each module's units per layer, and
    (when the atlas has it) share of its features' decoder energy per layer."""
    modules = data.atlas.modules
    layers = layer_names(data)
    out = {}
    if "layer_profile" in modules and len(modules):
        out["share of the module's units"] = np.stack(
            [np.asarray(p, float) for p in modules["layer_profile"]], axis=1
        )
    else:  # older atlases: count from units.parquet
        u = data.atlas.units[data.atlas.units["module"] >= 0]
        counts = pd.crosstab(u["layer"].astype(str), u["module"]).reindex(
            index=layers, columns=range(data.n_modules), fill_value=0
        )
        out["share of the module's units"] = (counts / counts.sum(axis=0).replace(0, 1)).to_numpy()
    if "layer_mass" in modules and len(modules):
        out["share of its features' decoder energy"] = np.stack(
            [np.asarray(p, float) for p in modules["layer_mass"]], axis=1
        )
    return out


def layer_module(data: ReportData) -> Plot:
    """The layer x module heatmap, with a switch between unit share and decoder energy."""
    mats = layer_module_matrices(data)
    layers = [esc(n) for n in layer_names(data)]
    cols = [f"M{m}" for m in range(data.n_modules)]
    fig = go.Figure()
    show_text = data.n_modules * len(layers) <= 400
    for i, (title, z) in enumerate(mats.items()):
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=cols,
                y=layers,
                zmin=0,
                zmax=1,
                colorscale="Blues",
                visible=i == 0,
                texttemplate="%{z:.2f}" if show_text else None,
                hovertemplate="%{x} in %{y}: %{z:.3f}<extra>" + title + "</extra>",
                colorbar=dict(title="share"),
                name=title,
            )
        )
    buttons = [
        dict(
            label=title,
            method="update",
            args=[{"visible": [j == i for j in range(len(mats))]}],
        )
        for i, title in enumerate(mats)
    ]
    style_figure(
        fig,
        max(240, 60 + 36 * len(layers)),
        xaxis=dict(title="module", type="category"),
        yaxis=dict(autorange="reversed", type="category", **axis_ticks(layer_names(data))),
        updatemenus=[dict(type="buttons", direction="right", x=0, y=1.18, buttons=buttons)]
        if len(mats) > 1
        else [],
        margin=dict(l=80, r=20, t=60, b=40),
    )
    return Plot(
        "layer-module-plot",
        fig,
        {"kind": "band", "axis": "x", "modules": list(range(data.n_modules)), "labels": cols},
    )


def pareto(sweep: SweepInfo) -> Plot:
    """The sweep's held-out L0 vs FVU, its frontier and the recommended point."""
    pts = sweep.points
    fig = go.Figure()
    label = [f"{sweep.over}={p.value:g}" for p in pts]
    hover = [
        f"<b>{esc(label[i])}</b><br>L0 {p.l0:.1f}, FVU {p.fvu:.4f}<br>dead {p.dead_fraction:.1%}"
        f"<br>decoder stability across seeds {fmt(p.stability, '.2f')}"
        for i, p in enumerate(pts)
    ]
    front = sorted((i for i, p in enumerate(pts) if p.on_front), key=lambda i: pts[i].l0)
    fig.add_trace(
        go.Scatter(
            x=[pts[i].l0 for i in front],
            y=[pts[i].fvu for i in front],
            mode="lines",
            name="frontier",
            line=dict(color="#6b7a8f"),
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[p.l0 for p in pts],
            y=[p.fvu for p in pts],
            mode="markers+text",
            text=[esc(l) for l in label],  # Plotly reads a little HTML: `over` is sweep.json's
            textposition="top right",
            name="SAEs (held out)",
            marker=dict(size=10, color="#4c72b0"),
            hovertext=hover,
            hovertemplate="%{hovertext}<extra></extra>",
        )
    )
    c = sweep.chosen
    fig.add_trace(
        go.Scatter(
            x=[c.l0],
            y=[c.fvu],
            mode="markers",
            name=f"recommended ({esc(label[sweep.recommended])})",
            marker=dict(size=22, symbol="star", color="#f2b01e", line=dict(width=1, color="#111")),
            hovertext=[hover[sweep.recommended]],
            hovertemplate="recommended<br>%{hovertext}<extra></extra>",
        )
    )
    if sweep.atlas_point is not None:
        a = pts[sweep.atlas_point]
        fig.add_trace(
            go.Scatter(
                x=[a.l0],
                y=[a.fvu],
                mode="markers",
                name="the atlas's SAE",
                marker=dict(size=30, symbol="circle-open", color="#111", line=dict(width=2)),
                hoverinfo="skip",
            )
        )
    style_figure(
        fig,
        400,
        xaxis=dict(title="L0 (active latents per row)", type="log"),
        yaxis=dict(title="FVU on held-out rows"),
    )
    return Plot("pareto-plot", fig)


def training_curves(records: pd.DataFrame) -> Plot:
    """FVU, L0 and the dead fraction against training rows."""
    x = records["tokens"] if "tokens" in records else records.get("step", records.index)
    panels = [c for c in ("fvu", "l0", "dead_fraction") if c in records]
    titles = {"fvu": "FVU (training batch)", "l0": "L0", "dead_fraction": "dead latents"}
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[titles[c] for c in panels])
    for i, c in enumerate(panels, start=1):
        fig.add_trace(
            go.Scatter(x=x, y=records[c], mode="lines", name=titles[c], showlegend=False),
            row=1,
            col=i,
        )
        fig.update_xaxes(title_text="rows seen", row=1, col=i)
    if "fvu" in panels:
        fig.update_yaxes(type="log", dtick="D2", row=1, col=1)
    style_figure(fig, 300)
    return Plot("training-plot", fig)
