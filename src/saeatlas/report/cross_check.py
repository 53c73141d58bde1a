"""The report's line on the units' own correlations (no SAE): how many groups they
form, whether those are groups at all, and the figures behind both.

The verdict reads this view (``atlas.json``'s ``cross_check``): its modules are the
atlas's when the SAE's own do not hold up, and it tells whether the SAE adds anything
to plain correlation. Its headline then names the view's tests ("the units' raw
correlations beat the independent-units and no-groups nulls"), so the page shows
them: the partition's modularity against each null and each group's p-value.
"""

from __future__ import annotations

from typing import Any

from .text import fmt, fmt_p, fmt_z

#: How each view is named on the page.
VIEWS = (
    ("raw", "Raw correlations"),
    ("clean", "Without the global mode and noise bulk"),
)


def cross_check_text(s: dict[str, Any]) -> str:
    """One paragraph per view of ``s["cross_check"]`` (empty: the view was not run)."""
    checks = s.get("cross_check") or {}
    parts = [
        f"{_view_name(name, checks[key])}: {_view_text(checks[key])}"
        for key, name in VIEWS
        if isinstance(checks.get(key), dict)
    ]
    return " ".join(parts)


def _view_name(name: str, v: dict[str, Any]) -> str:
    """The view's name, saying which graph it partitioned where its ``method`` tells: the
    raw view's squared correlations (atlases since December 2026), a positive part."""
    method = v.get("method")
    if not isinstance(method, str):
        return name
    if "squared raw correlations" in method:
        return f"{name} (squared: units that rise as others fall tied too)"
    return f"{name} (positive part)" if "positive part" in method else name


def _view_text(v: dict[str, Any]) -> str:
    n = int(v.get("n_reproducible_modules") or 0)
    scale = v.get("scale")
    at = f" at resolution {fmt(scale, 'g')}" if scale is not None else ""
    text = f"{n} reproducible group{'s' * (n != 1)}{at}"
    shared = v.get("n_shared_mode_groups")
    if isinstance(shared, int) and shared > 0:  # they have no p: 3 groups showed 2 p's
        text += (
            f" ({shared} of them co-firing only through the mode all units share: no "
            f"module{'s' * (shared != 1)}, not tested)"
        )
    tests = v.get("tests") or ([v["test"]] if v.get("test") else [])
    if not tests:
        return f"{text}; not tested against null models (rerun analyze with `--n-null 10`)."
    sig = int(v.get("n_significant_modules") or 0)
    text += f", {sig} significant against every null"
    ps = [fmt_p(p) for p in v.get("module_p") or []]
    if ps:
        text += f" (each group's p, the largest over the nulls after Benjamini-Hochberg: {', '.join(ps)})"
    figures = "; ".join(
        f"against {t.get('null')} {fmt(t.get('null_mean'), '.3f')} ± "
        f"{fmt(t.get('null_std'), '.3f')}: z {fmt_z(t.get('z'))}, p {fmt_p(t.get('p'))}"
        for t in tests
    )
    return f"{text}. The partition's modularity {fmt(tests[0].get('modularity'), '.3f')} {figures}."
