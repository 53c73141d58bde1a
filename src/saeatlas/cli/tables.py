"""The tables an atlas prints: its modules with their checks, and its verdict."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .app import console


def print_atlas(atlas: Any) -> None:
    """The atlas's modules as a table (with stability, preferred label and ablation
    when the atlas has them), its verdict, and the random-SAE control."""
    s, m = atlas.summary, atlas.modules
    cols = {
        "module": lambda r: str(r.module),
        "units": lambda r: str(r.n_units),
        "features": lambda r: str(r.n_features),
        "layers": lambda r: escape(", ".join(r.layers)),
        "z": lambda r: fmt(r.z, ".1f"),
        "p": lambda r: fmt(r.p, ".2g"),
        "significant": lambda r: "yes" if r.significant else "no",
    }
    if "reproducibility" in m:
        cols["reproducible"] = lambda r: fmt(r.reproducibility, ".2f")
    if "control_jaccard" in m:
        cols["in control"] = lambda r: fmt(r.control_jaccard, ".2f")
    if "correlation_jaccard" in m:
        cols["in correlations"] = lambda r: fmt(r.correlation_jaccard, ".2f")
    if "preferred_label" in m:
        cols["label"] = _label
    if "ablation_effect" in m:
        cols["ablation Δloss"] = lambda r: fmt(r.ablation_effect, "+.3f")
        if "ablation_q" in m:  # adjusted over the modules: what the verdict counts
            cols["ablation q"] = lambda r: fmt(r.ablation_q, ".2g")
        else:
            cols["ablation p"] = lambda r: fmt(r.ablation_p, ".2g")
    table = Table(title=f"{s['n_modules']} modules ({s['module_kind']})")
    for name in cols:
        table.add_column(name)
    for row in m.itertuples():
        table.add_row(*(fmt(row) for fmt in cols.values()))
    console.print(table)
    if s.get("p") is not None:
        from ..structure.inference.significance import tested_modularity

        view = "unit correlations" if s.get("modules_from") == "unit_correlations" else "SAE"
        z = "not measurable (the draws have no spread; p is their rank)"
        z = z if s.get("z") is None else f"{s['z']:.1f}"
        console.print(
            f"Partition ({view}): modularity {tested_modularity(s):.3f}; strictest null "
            f"({s['strictest_null']}) "
            f"{s['null_mean']:.3f} ± {s['null_std']:.3f}, z {z}, p {s['p']:.2g}.",
            soft_wrap=True,
        )
    console.print(escape(s["message"]), soft_wrap=True)
    _print_submodules(getattr(atlas, "units", None))
    ctl = s.get("control")
    if ctl:
        ari = fmt(ctl.get("unit_ari"), ".2f")
        # the control is compared with the trained SAE's own modules: where the table above
        # lists the units' correlation modules, "the real atlas" had units in modules
        real = (
            "the trained SAE's own"
            if s.get("modules_from") == "unit_correlations"
            else "the real atlas's"
        )
        console.print(
            f"Random-SAE control: {ctl['n_significant_modules']} reproducible significant "
            "modules of its own; "
            + (
                f"unit modules' ARI with {real} {ari}."
                if ari != "-"
                else f"no unit is in a module of it or of {real} modules, so none to compare."
            ),
            soft_wrap=True,
        )


def _print_submodules(units: Any) -> None:
    """How the finer resolution's reproducible modules lie under the modules, if any."""
    if units is None or "submodule" not in units or not (units["submodule"] >= 0).any():
        return
    from ..structure.inference.consensus import nest

    module, sub = units["module"].to_numpy(), units["submodule"].to_numpy()
    holder = nest(module, sub)  # the module holding most of each sub-module's units
    under = [f"module {m}: {int((holder == m).sum())}" for m in range(int(module.max()) + 1)]
    if (holder < 0).any():
        under.append(f"in no module: {int((holder < 0).sum())}")
    console.print(
        f"Sub-modules (a finer resolution; `submodule` in units.parquet): {len(holder)} "
        f"({', '.join(under)}).",
        soft_wrap=True,
    )


def fmt(value: Any, spec: str) -> str:
    """``value`` in ``spec``, or '-' for none (None, NaN: a p of no test printed 'nan')."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, spec)


def _label(r: Any) -> str:
    """A module's preferred label and its selectivity; '-' for none (printed 'None (nan)')."""
    if r.preferred_label is None:
        return "-"
    return f"{escape(str(r.preferred_label))} ({fmt(r.selectivity, '.2f')})"


def print_modules(atlas: Any) -> None:
    """The modules of an atlas as one table: where they live, how sure we are, what they do."""
    from ..pipeline import module_summary

    layers = list(atlas.summary.get("layers", []))
    table = Table(
        title=f"{atlas.summary['n_modules']} modules",
        caption=f"units per layer: {escape(' / '.join(layers))}. Modules are "
        f"{atlas.summary['module_kind']}.",
    )
    columns = atlas.modules.columns
    has = {
        "stability": "reproducibility" in columns,
        "ablation": "ablation_effect" in columns,
        "adjusted": "ablation_q" in columns,  # atlases before the adjustment hold only p
        "label": "preferred_label" in columns,
    }
    heads = ["module", "units", "features", "z", "p", "sig."]
    heads += ["reproducible"] * has["stability"]
    heads += ["ablation Δloss", f"ablation {'q' if has['adjusted'] else 'p'}"] * has["ablation"]
    heads += ["label (selectivity)"] * has["label"]
    for col in heads:
        table.add_column(col, justify="left" if col == "sig." else "right", no_wrap=True)
    for r in module_summary(atlas).itertuples():
        cells = [
            str(r.module),
            "/".join(str(r.units_per_layer.get(l, 0)) for l in layers),
            str(r.n_features),
            fmt(r.z, ".1f"),
            fmt(r.p, ".2g"),
            "yes" if r.significant else "no",
        ]
        if has["stability"]:
            cells.append(fmt(r.stability, ".2f"))
        if has["ablation"]:
            q = r.ablation_q if has["adjusted"] else r.ablation_p
            cells += [fmt(r.ablation_effect, ".3f"), fmt(q, ".2g")]
        if has["label"]:
            label = "-" if r.preferred_label is None else escape(str(r.preferred_label))
            if r.preferred_label is not None and r.selectivity == r.selectivity:
                label += f" ({r.selectivity:.2f})"
            cells.append(label)
        table.add_row(*cells)
    # rich never prints wider than its console (80 columns when not a terminal)
    wide = console if console.width >= 120 else Console(width=120, highlight=False)
    wide.print(table)
    console.print(escape(atlas.summary["message"]), soft_wrap=True)
