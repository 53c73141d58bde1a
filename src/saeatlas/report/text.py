"""Short texts the report shows: numbers, unit names, top examples, hover labels.

Every string built from data goes through :func:`esc` before it reaches Plotly
(whose labels accept a little HTML) or the page.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

#: Metadata columns of examples.parquet that describe a row, best first.
_DESCRIBE = ("context", "text", "token")
#: Characters of an example's description kept on the page.
EXAMPLE_CHARS = 80


#: Unicode's explicit direction controls (UAX #9): embeddings and overrides (U+202A-E)
#: and isolates (U+2066-9). Each reaches to the end of its paragraph unless closed.
_OPENS_ISOLATE = "\u2066\u2067\u2068"
_DIRECTION_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2069" + _OPENS_ISOLATE)


def isolate(text: str) -> str:
    """``text`` in a first-strong isolate (FSI ... PDI) when it holds direction controls,
    so they end with it: a layer or label holding a right-to-left override (U+202E)
    reversed the rest of each line the page showed it in (a module's p-value read
    backwards). A PDI of the text's own that closes nothing is dropped (it would end the
    isolate early), and isolates it leaves open are closed."""
    if _DIRECTION_CONTROLS.isdisjoint(text):
        return text
    depth, kept = 0, []
    for c in text:
        if c in _OPENS_ISOLATE:
            depth += 1
        elif c == "\u2069":
            if not depth:
                continue
            depth -= 1
        kept.append(c)
    return "\u2068" + "".join(kept) + "\u2069" * (depth + 1)


def esc(value: Any) -> str:
    """``value`` as text, HTML-escaped and :func:`isolate`-d (for Plotly labels; the page
    template escapes and isolates itself)."""
    return html.escape(isolate(str(value)), quote=False)


#: Characters of a label or a layer name kept on a plot's axis (its hover shows it whole).
TICK_CHARS = 40


def axis_ticks(values: Sequence[Any]) -> dict[str, list[str]]:
    """A category axis's ``tickvals`` (``values``, :func:`esc`-aped, as the traces give
    them) and ``ticktext`` (each cut to :data:`TICK_CHARS` characters): a label of 5,000
    characters was drawn whole under its plot, and the page was 60,000 pixels wide. The
    categories stay whole, so two long labels that begin alike stay two columns."""
    texts = [str(v) for v in values]
    return {"tickvals": [esc(t) for t in texts], "ticktext": [esc(tick_text(t)) for t in texts]}


def tick_text(value: Any) -> str:
    """``value`` as text of at most :data:`TICK_CHARS` characters, for an axis (also of
    the PNG figures, whose axes a 3,000-character layer name squeezed to nothing)."""
    text = str(value)
    return text if len(text) <= TICK_CHARS else text[: TICK_CHARS - 1] + "…"


def is_missing(x: Any) -> bool:
    if x is None:
        return True
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def fmt(x: Any, spec: str = ".3g", missing: str = "–") -> str:
    """A number for the page: ``missing`` for None/NaN, ``spec`` otherwise."""
    if is_missing(x):
        return missing
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    try:
        return format(float(x), spec)
    except (TypeError, ValueError):
        return str(x)


def fmt_p(p: Any) -> str:
    """A p-value: ``< 1e-16`` for what rounds to zero, else 2 significant digits."""
    if is_missing(p):
        return "–"
    p = float(p)
    return "< 1e-16" if p < 1e-16 else format(p, ".2g")


def jsonable(x: Any) -> Any:
    """``x`` with NaN/Inf as None, numpy scalars and arrays as Python ones (for JSON.parse)
    and text :func:`isolate`-d (the page's script shows it)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray, pd.Series)):
        return [jsonable(v) for v in list(x)]
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer, int)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return round_sig(x) if math.isfinite(x) else None
    if x is None or is_missing(x):
        return None
    return isolate(str(x))


def round_sig(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant digits (keeps the embedded data small)."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


def example_description(row: Any, columns: Sequence[str]) -> str:
    """What an example row was: its token context, text or token, and its label."""
    parts = []
    for c in _DESCRIBE:
        if c in columns and not is_missing(getattr(row, c)):
            text = str(getattr(row, c))
            parts.append(text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…")
            break
    if "label" in columns and not is_missing(row.label):
        parts.append(f"label {row.label}")
    if not parts and "sample" in columns and not is_missing(row.sample):
        parts.append(f"sample {row.sample}")
    return ", ".join(parts)


def examples_by_item(examples: pd.DataFrame, kind: str, limit: int) -> dict[int, list[list]]:
    """``{id: [[rank, row, activation, description], ...]}`` for one ``kind`` of item."""
    if examples.empty or "kind" not in examples.columns:
        return {}
    sub = examples[(examples["kind"] == kind) & (examples["rank"] <= limit)]
    sub = sub.sort_values(["id", "rank"])
    cols = list(sub.columns)
    out: dict[int, list[list]] = {}
    for r in sub.itertuples(index=False):
        out.setdefault(int(r.id), []).append(
            [int(r.rank), int(r.row), round_sig(float(r.activation)), example_description(r, cols)]
        )
    return out


def feature_hover(
    fid: int,
    module: int,
    density: Any,
    top_units: Sequence[int],
    top_weights: Sequence[float],
    unit_names: Sequence[str],
    examples: Sequence[list],
) -> str:
    """The feature map's hover label (Plotly's small HTML subset)."""
    where = f"module {module}" if module >= 0 else "no module"
    units = ", ".join(
        f"{esc(unit_names[u])} ({w:+.2f})" for u, w in zip(list(top_units)[:3], top_weights)
    )
    lines = [f"<b>feature {fid}</b> · {where}", f"density {fmt(density)}", f"top units: {units}"]
    for rank, row, act, desc in list(examples)[:3]:
        lines.append(f"#{rank} row {row} ({fmt(act, '.3g')}): {esc(desc)}")
    return "<br>".join(lines)


def fmt_z(z: Any) -> str:
    """A z-score: one decimal, or 3 significant digits when it is huge (a null with
    little spread, such as the permutation null's modularity, gives z in the 1e5s); '–'
    for none (a null whose draws have no spread has no z)."""
    if is_missing(z):
        return "–"
    return format(float(z), ".1f" if abs(float(z)) < 1000 else ".3g")


def summary_alpha(s: dict[str, Any]) -> float | None:
    """The significance level atlas.json's ``config`` records (None: not recorded)."""
    alpha = (s.get("config") or {}).get("alpha") if isinstance(s.get("config"), dict) else None
    return alpha if isinstance(alpha, (int, float)) and not isinstance(alpha, bool) else None


def significance_word(significant: Any, p: Any, alpha: float | None) -> str:
    """A module's "significant" or "not significant", with the reason where its own p is
    below ``alpha``: its partition did not beat the null models ("not significant" beside
    "p 0.026" read as a contradiction)."""
    if significant:
        return "significant"
    below = alpha is not None and isinstance(p, (int, float)) and p < alpha
    return "not significant" + (": its partition does not beat the null models" if below else "")
