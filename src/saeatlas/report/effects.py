"""What modules do: ablation effects, the module x label specialisation, label selectivity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..structure.inference.outcome import hurts_loss
from .data import ReportData
from .plots import Plot, style_figure
from .text import axis_ticks, esc, fmt_p, fmt_z


def _sorted_labels(labels: pd.Series) -> list[str]:
    """Distinct labels as text, in numeric order when they are all numbers."""
    distinct = list(dict.fromkeys(labels.astype(str)))
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return sorted(distinct)


def specialisation_grid(
    data: ReportData, value: str = "specialisation"
) -> tuple[list[str], np.ndarray]:
    """The labels and the ``[n_modules, n_labels]`` grid of one column of ``atlas.ablation``
    (``specialisation``, ``effect`` or ``random_effect``), modules in ``atlas.modules`` order.

    A module whose ablation does not hurt the loss more than random unit sets has no
    specialisation row (blank): the share of an excess that is noise was drawn as a whole
    class (1.00 on one label for a module of p 0.77 whose ablation lowered the loss)."""
    t = data.ablation.assign(label=data.ablation["label"].astype(str))
    labels = _sorted_labels(t["label"])
    grid = t.pivot_table(index="module", columns="label", values=value, aggfunc="mean")
    modules = data.atlas.modules["module"].astype(int).tolist()
    out = grid.reindex(index=modules, columns=labels).to_numpy(float, copy=True)
    if value == "specialisation":
        out[~hurts_loss(data.atlas.modules)] = np.nan
    return labels, out


def specialisation(data: ReportData) -> Plot:
    """Module x label: each label's share of the module's excess damage when ablated."""
    labels, share = specialisation_grid(data)
    _, effect = specialisation_grid(data, "effect")
    _, random = specialisation_grid(data, "random_effect")
    rows = [f"M{m}" for m in data.atlas.modules["module"].astype(int)]
    fig = go.Figure(
        go.Heatmap(
            z=share,
            x=[esc(l) for l in labels],
            y=rows,
            customdata=np.stack([effect, random], axis=-1),
            zmin=0,
            zmax=1,
            colorscale="Reds",
            colorbar=dict(title="share"),
            hovertemplate="%{y} on label %{x}<br>share of excess damage %{z:.2f}"
            "<br>loss increase %{customdata[0]:.3g} (random sets %{customdata[1]:.3g})"
            "<extra></extra>",
        )
    )
    label_column = (data.summary.get("ablation") or {}).get("label_column") or "label"
    style_figure(
        fig,
        max(260, 60 + 24 * len(rows)),
        xaxis=dict(title=esc(label_column), type="category", **axis_ticks(labels)),
        yaxis=dict(title="module", autorange="reversed", type="category"),
    )
    return Plot(
        "specialisation-plot",
        fig,
        {
            "kind": "band",
            "axis": "y",
            "modules": data.atlas.modules["module"].astype(int).tolist(),
            "labels": rows,
        },
    )


def ablation_effects(data: ReportData) -> Plot:
    """Each module's loss increase when ablated, beside random unit sets matched by layer."""
    m = data.atlas.modules
    x = [f"M{i}" for i in m["module"]]
    p = m["ablation_p"].to_numpy(float) if "ablation_p" in m else np.full(len(m), np.nan)
    q = m["ablation_q"].to_numpy(float) if "ablation_q" in m else p
    z = m["ablation_z"].to_numpy(float) if "ablation_z" in m else np.full(len(m), np.nan)
    hover = [
        f"z {fmt_z(zi)}, p {fmt_p(pi)}" + (f", adjusted {fmt_p(qi)}" if "ablation_q" in m else "")
        for zi, pi, qi in zip(z, p, q)
    ]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=x,
            y=m["ablation_effect"],
            name="module ablated",
            marker_color=[data.colour(int(i)) for i in m["module"]],
            marker_line=dict(width=np.where(hurts_loss(m), 2.0, 0.0), color="#111"),
            hovertext=hover,
            hovertemplate="%{x}: loss +%{y:.3g}<br>%{hovertext}<extra></extra>",
        )
    )
    if "ablation_random_mean" in m:
        fig.add_trace(
            go.Scatter(
                x=x,
                y=m["ablation_random_mean"],
                mode="markers",
                name="random unit sets (mean)",
                marker=dict(
                    symbol="line-ew-open", size=26, color="#111", line=dict(width=3, color="#111")
                ),
                hovertemplate="%{x}: random sets +%{y:.3g}<extra></extra>",
            )
        )
    style_figure(
        fig,
        320,
        xaxis=dict(title="module", type="category"),
        yaxis=dict(title="loss increase"),
        legend=dict(orientation="h", y=1.12),
    )
    return Plot(
        "ablation-plot",
        fig,
        {"kind": "band", "axis": "x", "modules": m["module"].astype(int).tolist(), "labels": x},
    )


def selectivity(data: ReportData) -> Plot | None:
    """Module x label mean activity (each row scaled to sum 1): what modules co-occur with."""
    m = data.atlas.modules
    classes = data.summary.get("label_classes")
    if "label_means" not in m or not classes or not len(m):
        return None
    z = np.stack([np.asarray(r, float) for r in m["label_means"]])
    z = z / np.where(z.sum(1, keepdims=True) > 0, z.sum(1, keepdims=True), 1)
    y = [f"M{i}" for i in m["module"]]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[esc(c) for c in classes],
            y=y,
            zmin=0,
            colorscale="Blues",
            colorbar=dict(title="share"),
            hovertemplate="%{y} on label %{x}: %{z:.2f} of its activity<extra></extra>",
        )
    )
    style_figure(
        fig,
        max(260, 60 + 24 * len(y)),
        xaxis=dict(
            title=esc(data.summary.get("label_column", "label")),
            type="category",
            **axis_ticks(classes),
        ),
        yaxis=dict(title="module", autorange="reversed", type="category"),
    )
    return Plot(
        "selectivity-plot",
        fig,
        {"kind": "band", "axis": "y", "modules": m["module"].astype(int).tolist(), "labels": y},
    )
