"""Assemble the page: the template, the figures' ``<div>``s, and the data the page's script reads.

One self-contained file: the stylesheet, Plotly's JavaScript (once, in the
head), the page script and the data are all inline, so the page opens from
disk without a network. Text from the atlas is escaped by the template
(Jinja2 autoescape), inside Plotly labels by :func:`.text.esc`, and inside the
JSON block by escaping ``<``, ``>`` and ``&``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import plotly.io as pio
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from .. import __version__
from .cards import TABLE_COLUMNS, ModuleCard
from .data import ReportData
from .links import ModuleLinks
from .plots import CONFIG, Plot
from .summary import control_rows, header_facts
from .text import isolate, jsonable

#: Examples per feature kept in the page's data (the side panel shows them).
PANEL_EXAMPLES = 5
#: Features listed per unit as the ones writing most to it.
UNIT_WRITERS = 6


def _env() -> Environment:
    return Environment(
        loader=PackageLoader("saeatlas.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_isolated,
    )


def _isolated(value: Any) -> Any:
    """Text the template shows, :func:`.text.isolate`-d (markup is the page's own)."""
    return isolate(value) if isinstance(value, str) and not isinstance(value, Markup) else value


def inline_script(js: str) -> Markup:
    """JavaScript safe to place between ``<script>`` tags."""
    return Markup(js.replace("</script", "<\\/script").replace("<!--", "<\\!--"))


def json_block(obj: Any) -> Markup:
    """JSON for a ``<script type="application/json">`` block (no ``</script>`` can close it)."""
    text = json.dumps(jsonable(obj), separators=(",", ":"), allow_nan=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def plot_div(plot: Plot | None) -> Markup | None:
    """The figure's ``<div>`` and the call that draws it (Plotly's JS is loaded once, elsewhere)."""
    if plot is None:
        return None
    return Markup(
        pio.to_html(
            plot.figure,
            full_html=False,
            include_plotlyjs=False,
            div_id=plot.div_id,
            config=CONFIG,
            default_width="100%",
            default_height=f"{plot.figure.layout.height or 450}px",
        )
    )


def page_data(
    data: ReportData, plots: dict[str, Plot | None], feature_examples: dict[int, list[list]]
) -> dict[str, Any]:
    """What the page's script needs: highlight specs, modules, features and units."""
    f = data.atlas.features
    u = data.atlas.units
    drawn = f.iloc[data.map_sample.rows]
    detail = {}
    optional = {
        "fd": "firing_density",
        "ma": "mean_activation",
        "mc": "max_unit_corr",
        "st": "stability",
        "sel": "selectivity",
        "pl": "preferred_label",
    }
    for r in drawn.to_dict("records"):
        fid = int(r["feature"])
        d: dict[str, Any] = {k: r[c] for k, c in optional.items() if c in r}
        if "top_units" in r:
            d["u"], d["w"] = list(r["top_units"]), list(r.get("top_unit_weights", []))
        if "top_read_units" in r:
            d["r"], d["rw"] = list(r["top_read_units"]), list(r.get("top_read_weights", []))
        d["ex"] = feature_examples.get(fid, [])[:PANEL_EXAMPLES]
        detail[fid] = d
    return {
        "plots": {p.div_id: p.highlight for p in plots.values() if p is not None and p.highlight},
        "modules": [{"id": m, "colour": data.colour(m)} for m in range(data.n_modules)],
        "features": {
            "id": f["feature"].to_numpy(),
            "module": f["module"].to_numpy(),
            "density": f["density"].to_numpy() if "density" in f else [None] * len(f),
        },
        "featureDetail": detail,
        "units": {
            "name": data.unit_names,
            "module": u["module"].to_numpy(),
            "membership": u["membership"].to_numpy() if "membership" in u else [None] * len(u),
            "shared": u["shared"].to_numpy() if "shared" in u else [False] * len(u),
            "writers": unit_writers(data),
        },
        "sampled": data.map_sample.sampled,
    }


def unit_writers(data: ReportData) -> list[list[int]]:
    """Per unit, the features whose largest decoder weights include it (largest first)."""
    f = data.atlas.features
    writers: list[list[tuple[float, int]]] = [[] for _ in range(len(data.atlas.units))]
    if "top_units" not in f:
        return [[] for _ in writers]
    weights = f["top_unit_weights"] if "top_unit_weights" in f else None
    for i, (fid, top) in enumerate(zip(f["feature"], f["top_units"])):
        w = weights.iloc[i] if weights is not None else [1.0] * len(top)
        for unit, wt in zip(top, w):
            if 0 <= unit < len(writers):
                writers[unit].append((abs(float(wt)), int(fid)))
    return [[fid for _, fid in sorted(ws, reverse=True)[:UNIT_WRITERS]] for ws in writers]


def render_page(
    data: ReportData,
    plots: dict[str, Plot | None],
    links: ModuleLinks,
    cards: list[ModuleCard],
    feature_examples: dict[int, list[list]],
    figures: list[str],
) -> str:
    """The whole report as one HTML string."""
    from plotly.offline import get_plotlyjs

    env = _env()
    template = env.get_template("report.html.j2")
    loader = env.loader
    assert loader is not None
    css, _, _ = loader.get_source(env, "report.css")
    js, _, _ = loader.get_source(env, "report.js")
    has_examples = not data.atlas.examples.empty
    return template.render(
        title=data.model or data.atlas_dir.name,
        data=data,
        s=data.summary,
        facts=header_facts(data),
        control=control_rows(data),
        plots={k: plot_div(v) for k, v in plots.items()},
        links=links,
        cards=cards,
        columns={k: h for k, h in TABLE_COLUMNS.items() if any(k in c.table for c in cards)},
        sample=data.map_sample,
        has_examples=has_examples,
        figures=figures,
        css=Markup(css),
        plotly_js=inline_script(get_plotlyjs()),
        page_js=inline_script(js),
        page_data=json_block(page_data(data, plots, feature_examples)),
        version=__version__,
        written=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
