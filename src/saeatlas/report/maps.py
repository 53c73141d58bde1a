"""The feature map and the unit map: one trace per module, so a module can be highlighted."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .data import ReportData
from .plots import Plot, layer_names, style_figure
from .text import axis_ticks, esc, feature_hover

#: Above this many points the maps use WebGL (``scattergl``).
GL_POINTS = 5000
#: Opacity of module members and of the other points when no module is highlighted.
BASE_OPACITY, OTHER_OPACITY = 0.85, 0.45


def _scatter(n_points: int):
    return go.Scattergl if n_points > GL_POINTS else go.Scatter


def _add_selected_trace(fig: Any, cls: Any, trace_modules: list, opacity: list) -> None:
    """Append the ring that marks the selected point, with its bookkeeping entries."""
    fig.add_trace(_selected_trace(cls))
    trace_modules.append(None)
    opacity.append(1.0)


def _selected_trace(cls) -> Any:
    """An empty trace the page moves onto the feature or unit a search found."""
    return cls(
        x=[],
        y=[],
        mode="markers",
        marker=dict(size=20, symbol="circle-open", color="#111", line=dict(width=3)),
        hoverinfo="skip",
        showlegend=False,
        name="selected",
    )


def feature_map(data: ReportData, hovers: dict[int, str]) -> Plot:
    """Features at their map coordinates (``x``, ``y``), one trace per module."""
    f = data.atlas.features.iloc[data.map_sample.rows]
    cls = _scatter(len(f))
    fig = go.Figure()
    trace_modules: list[int | None] = []
    opacity: list[float] = []
    groups = [(-1, f[f["module"] < 0])] + [(m, f[f["module"] == m]) for m in range(data.n_modules)]
    show_legend = data.n_modules <= 40
    for m, sub in groups:
        ids = sub["feature"].to_numpy()
        fig.add_trace(
            cls(
                x=sub["x"].to_numpy(),
                y=sub["y"].to_numpy(),
                mode="markers",
                name=f"module {m}" if m >= 0 else "no module",
                marker=dict(
                    size=7 if m >= 0 else 5,
                    color=data.colour(m),
                    line=dict(width=0),
                ),
                opacity=BASE_OPACITY if m >= 0 else OTHER_OPACITY,
                customdata=ids.tolist(),  # plain list: the page's script reads it
                text=[hovers.get(int(i), f"feature {int(i)}") for i in ids],
                hovertemplate="%{text}<extra></extra>",
                showlegend=show_legend,
            )
        )
        trace_modules.append(m)
        opacity.append(BASE_OPACITY if m >= 0 else OTHER_OPACITY)
    _add_selected_trace(fig, cls, trace_modules, opacity)
    method = data.summary.get("map_method", "pca")
    style_figure(
        fig,
        560,
        xaxis=dict(title=f"map x ({method} of decoder directions)", zeroline=False),
        yaxis=dict(title="map y", zeroline=False),
        legend=dict(title="click: highlight", itemsizing="constant"),
    )
    return Plot(
        "feature-map-plot",
        fig,
        {
            "kind": "traces",
            "modules": trace_modules,
            "opacity": opacity,
            "selected": len(trace_modules) - 1,
            "points": [f["feature"].to_numpy(), f["x"].to_numpy(), f["y"].to_numpy()],
        },
    )


def unit_grid(units: pd.DataFrame, layers: list[str]) -> tuple[np.ndarray, np.ndarray, list]:
    """Positions of units on the unit map: one block per layer, side by side, units in a
    grid inside it ordered by module (members first), then by membership.

    Block width ``w = ceil(sqrt(2 n_max / n_layers))`` makes the whole map about twice
    as wide as it is tall. Returns ``x``, ``y`` (in ``units`` order) and the centre of
    each layer's block (for the axis ticks).
    """
    n_max = max(int(units["layer"].value_counts().max()), 1) if len(units) else 1
    width = max(1, int(np.ceil(np.sqrt(2 * n_max / max(len(layers), 1)))))
    x = np.zeros(len(units))
    y = np.zeros(len(units))
    centres = []
    membership = units["membership"] if "membership" in units else pd.Series(0.0, units.index)
    for i, name in enumerate(layers):
        pos = np.flatnonzero(units["layer"].astype(str).to_numpy() == name)
        module = units["module"].to_numpy()[pos]
        key = np.lexsort((-membership.to_numpy()[pos], np.where(module < 0, 1 << 30, module)))
        order = pos[key]
        x0 = i * (width + 2)
        x[order] = x0 + np.arange(len(order)) % width
        y[order] = np.arange(len(order)) // width
        centres.append(x0 + (width - 1) / 2)
    return x, y, centres


def unit_map(data: ReportData) -> Plot:
    """Every unit as a square, grouped by layer, coloured by module."""
    units = data.atlas.units
    layers = layer_names(data)
    x, y, centres = unit_grid(units, layers)
    cls = _scatter(len(units))
    fig = go.Figure()
    names = np.asarray(data.unit_names, dtype=object)
    module = units["module"].to_numpy()
    member = units["membership"].to_numpy() if "membership" in units else np.zeros(len(units))
    shared = units["shared"].to_numpy() if "shared" in units else np.zeros(len(units), bool)
    trace_modules: list[int | None] = []
    opacity: list[float] = []
    size = 9 if len(units) <= 2000 else 5
    for m in [-1, *range(data.n_modules)]:
        idx = np.flatnonzero(module == m) if m >= 0 else np.flatnonzero(module < 0)
        text = [
            f"<b>{esc(names[u])}</b> · "
            + (f"module {m}, membership {member[u]:.2f}" if m >= 0 else "no module")
            + (" (shared)" if shared[u] else "")
            for u in idx
        ]
        fig.add_trace(
            cls(
                x=x[idx],
                y=y[idx],
                mode="markers",
                name=f"module {m}" if m >= 0 else "no module",
                marker=dict(size=size, symbol="square", color=data.colour(m), line=dict(width=0)),
                opacity=BASE_OPACITY if m >= 0 else OTHER_OPACITY,
                customdata=idx.tolist(),
                text=text,
                hovertemplate="%{text}<extra></extra>",
                showlegend=False,
            )
        )
        trace_modules.append(m)
        opacity.append(BASE_OPACITY if m >= 0 else OTHER_OPACITY)
    _add_selected_trace(fig, cls, trace_modules, opacity)
    style_figure(
        fig,
        max(260, min(720, int(18 * (y.max(initial=0) + 3)))),
        xaxis=dict(
            tickvals=centres,
            ticktext=axis_ticks(layers)["ticktext"],
            showgrid=False,
            zeroline=False,
        ),
        yaxis=dict(autorange="reversed", showticklabels=False, showgrid=False, zeroline=False),
    )
    return Plot(
        "unit-map-plot",
        fig,
        {
            "kind": "traces",
            "modules": trace_modules,
            "opacity": opacity,
            "selected": len(trace_modules) - 1,
            "points": [np.arange(len(units)), x, y],
        },
    )


def feature_hovers(data: ReportData, examples: dict[int, list[list]]) -> dict[int, str]:
    """The hover label of every feature drawn on the map."""
    f = data.atlas.features.iloc[data.map_sample.rows]
    has_units = "top_units" in f
    out = {}
    for r in f.itertuples(index=False):
        fid = int(r.feature)
        units = list(r.top_units) if has_units else []
        weights = list(r.top_unit_weights) if has_units and "top_unit_weights" in f else []
        out[fid] = feature_hover(
            fid,
            int(r.module),
            getattr(r, "density", None),
            units,
            weights,
            data.unit_names,
            examples.get(fid, []),
        )
    return out
