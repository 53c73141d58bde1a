"""The module graph: modules as nodes, the links of :mod:`.links` as edges."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .data import ReportData
from .links import ModuleLinks
from .plots import Plot, style_figure
from .text import esc, fmt, fmt_p, fmt_z, significance_word, summary_alpha


def module_graph_positions(n_modules: int, links: ModuleLinks) -> np.ndarray:
    """``[n_modules, 2]`` node positions: a Fruchterman-Reingold spring layout
    (scikit-network) over the links' absolute weights, started on a circle."""
    angle = 2 * np.pi * np.arange(n_modules) / max(n_modules, 1)
    circle = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    if n_modules < 3 or links.edges.empty:
        return circle
    import scipy.sparse as sp
    from sknetwork.embedding import Spring

    e = links.edges
    w = e["weight"].abs().to_numpy()
    adj = sp.coo_matrix(
        (np.r_[w, w], (np.r_[e["source"], e["target"]], np.r_[e["target"], e["source"]])),
        shape=(n_modules, n_modules),
    ).tocsr()
    return kept_apart(Spring(n_iter=100).fit_transform(adj, position_init=circle))


#: The least distance between two nodes' centres, as a share of the layout's extent:
#: the largest markers are 40 px across on a plot of about 400.
NODE_GAP = 0.12


def kept_apart(pos: np.ndarray, gap: float = NODE_GAP, rounds: int = 200) -> np.ndarray:
    """``pos`` with every two nodes at least ``gap`` of the layout's extent apart, each
    close pair pushed apart along the line between them (a spring layout drew linked
    modules within 0.7 of each other on a plot 12 wide: their markers overlapped, and
    hovering one node's centre picked another). Nodes on one spot part along fixed
    directions of their index, so the layout stays the same for the same links."""
    pos = np.array(pos, dtype=np.float64)
    n = len(pos)
    if n < 2:
        return pos
    spread = np.stack([np.cos(np.arange(n)), np.sin(np.arange(n))], axis=1)
    for _ in range(rounds):
        d = gap * max(float(np.ptp(pos, axis=0).max()), 1e-9)
        diff = pos[:, None, :] - pos[None, :, :]
        dist = np.linalg.norm(diff, axis=2)
        np.fill_diagonal(dist, np.inf)
        if dist.min() >= d * (1 - 1e-9):
            break
        same = dist < 1e-12 * d
        direction = np.where(
            same[..., None],
            spread[:, None, :] - spread[None, :, :],
            diff / np.where(same, 1.0, dist)[..., None],
        )
        push = np.clip(d - dist, 0.0, None) / 2
        pos += (push[..., None] * direction).sum(axis=1)
    return pos


def module_graph(data: ReportData, links: ModuleLinks, pos: np.ndarray) -> Plot:
    """Modules as nodes (size: units; ring: significant), links as edges."""
    modules = data.atlas.modules
    fig = go.Figure()
    e = links.edges
    # Plotly draws one width per trace: edges go into a few width classes.
    mid_x, mid_y, mid_text = [], [], []
    for sign, dash in ((1, "solid"), (-1, "dash")):
        for lo, hi, width in ((0, 0.3, 1.5), (0.3, 0.6, 3.5), (0.6, np.inf, 6)):
            sel = e[(np.sign(e["weight"]) == sign) & e["weight"].abs().between(lo, hi, "left")]
            if sel.empty:
                continue
            xs, ys = [], []
            for s, t in zip(sel["source"], sel["target"]):
                xs += [pos[s, 0], pos[t, 0], None]
                ys += [pos[s, 1], pos[t, 1], None]
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines",
                    line=dict(width=width, color="#6b7a8f" if sign > 0 else "#c0504d", dash=dash),
                    hoverinfo="skip",
                    showlegend=False,
                )
            )
    for s, t, d in zip(e["source"], e["target"], e["detail"]):
        mid_x.append((pos[s, 0] + pos[t, 0]) / 2)
        mid_y.append((pos[s, 1] + pos[t, 1]) / 2)
        mid_text.append(esc(d))
    if mid_x:
        fig.add_trace(
            go.Scatter(
                x=mid_x,
                y=mid_y,
                mode="markers",
                marker=dict(size=8, color="rgba(0,0,0,0)"),
                text=mid_text,
                hovertemplate="%{text}<extra></extra>",
                showlegend=False,
            )
        )
    sig = (
        modules["significant"].to_numpy(bool)
        if "significant" in modules
        else np.zeros(len(modules), bool)
    )
    n_units = modules["n_units"].to_numpy(float)
    size = 14 + 26 * np.sqrt(n_units / max(n_units.max(initial=1), 1))
    line_width = np.where(sig, 3.0, 0.5)
    text, alpha = [], summary_alpha(data.summary)
    for r in modules.itertuples(index=False):
        m = int(r.module)
        parts = [f"<b>module {m}</b>", f"{r.n_units} units, {r.n_features} features"]
        if "z" in modules:
            verdict = significance_word(getattr(r, "significant", False), r.p, alpha)
            parts.append(f"{verdict} (z {fmt_z(r.z)}, p {fmt_p(r.p)})")
        if "stability" in modules:  # an atlas of an ensemble has no stability verdict
            verdict = getattr(r, "stability_verdict", None)
            parts.append(
                f"stability {fmt(r.stability, '.2f')}"
                + (f" ({verdict})" if isinstance(verdict, str) and verdict else "")
            )
        if m in links.self_links:
            parts.append(f"own activity across layers r {links.self_links[m]:+.2f}")
        if "ablation_effect" in modules:
            parts.append(f"ablation +{fmt(r.ablation_effect)} loss (p {fmt_p(r.ablation_p)})")
        text.append("<br>".join(parts))
    node_trace = len(fig.data)
    fig.add_trace(
        go.Scatter(
            x=pos[:, 0],
            y=pos[:, 1],
            mode="markers+text",
            text=[f"M{m}" for m in modules["module"]],
            textposition="middle center",
            textfont=dict(color="white", size=11),
            customdata=modules["module"].astype(int).tolist(),
            hovertext=text,
            hovertemplate="%{hovertext}<extra></extra>",
            marker=dict(
                size=size,
                color=[data.colour(int(m)) for m in modules["module"]],
                line=dict(width=line_width, color="#111"),
                opacity=1.0,
            ),
            showlegend=False,
        )
    )
    pad = dict(showgrid=False, zeroline=False, showticklabels=False)
    style_figure(fig, 460, xaxis=pad, yaxis=dict(scaleanchor="x", **pad))
    return Plot(
        "module-graph-plot",
        fig,
        {
            "kind": "graph",
            "trace": node_trace,
            "modules": modules["module"].astype(int).tolist(),
            "lineWidth": line_width.tolist(),
        },
    )
