"""The report's header: what was mapped, with what SAE, and how sure the atlas is.

Each function returns plain sentences (the template escapes them) built from
``atlas.json``, the sweep and the module table; when something was not
measured, the sentence says so and how to measure it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..sae.architectures import REGISTRY as ARCHITECTURE_REGISTRY
from ..structure.inference.consensus import MIN_AGREEMENT, REPRODUCIBLE
from ..structure.inference.outcome import (
    VERDICTS,
    ablation_untested,
    hurts_loss,
    sae_own_modules,
)
from ..structure.inference.significance import tested_modularity
from ..structure.repeated_rows import repeated_text
from .cross_check import cross_check_text
from .data import ReportData
from .text import fmt, fmt_p, fmt_z


@dataclass(frozen=True)
class Fact:
    label: str
    value: str
    missing: bool = False
    """True when the value says what was not measured."""


def header_facts(data: ReportData) -> list[Fact]:
    """The summary's rows, in reading order."""
    s = data.summary
    return [
        Fact("Model", data.model or _no_model(data), missing=not data.model),
        Fact("Layers", layers_text(data)),
        Fact("Rows analysed", rows_text(s)),
        Fact("SAE", sae_text(s)),
        Fact("Why this sparsity", sparsity_text(data), missing=data.sweep is None),
        Fact("Modules", modules_text(data)),
        Fact("Modularity", modularity_text(s), missing=s.get("p") is None),
        Fact(
            "Plain correlations",
            cross_check_text(s)
            or "Not measured: the units' own correlations were not computed for this atlas.",
            missing=not cross_check_text(s),
        ),
        Fact("Stability", stability_text(data), missing=not data.has_stability),
        Fact("Causal check", ablation_text(data), missing=not data.has_ablation),
    ]


def rows_text(s: dict[str, Any]) -> str:
    """How many rows were encoded, and how many the store's NaN/Inf left out: a page of a
    200-row file said "197" without a word of the 3 (``store_skipped_rows``)."""
    text = fmt(s.get("n_rows_encoded"), ",.0f")
    skipped = s.get("store_skipped_rows")
    if isinstance(skipped, int) and skipped > 0:
        text += (
            f" ({skipped:,} row{'' if skipped == 1 else 's'} of the store with NaN/Inf left out: "
            "--on-nonfinite skip)"
        )
    repeated = repeated_text(s.get("n_repeated_rows"), s.get("n_rows_encoded"))
    return text + (f"; {repeated}" if repeated else "")


def _no_model(data: ReportData) -> str:
    if data.store_unread is not None:
        return f"not known: {data.store_unread}, nor are the heads of per-head units' names"
    return "not recorded (no `model` in atlas.json or the store's manifest)"


def layers_text(data: ReportData) -> str:
    counts = data.atlas.units["layer"].astype(str).value_counts()
    names = data.summary.get("layers") or list(counts.index)
    return ", ".join(f"{n} ({int(counts.get(str(n), 0))} units)" for n in names)


def sae_text(s: dict[str, Any]) -> str:
    sae = s.get("sae") or {}
    parts = [str(sae.get("architecture", "unknown architecture"))]
    if sae.get("d_in") is not None:
        parts.append(f"d_in {sae['d_in']}")
    if sae.get("d_sae") is not None:
        parts.append(f"d_sae {sae['d_sae']:,}")
    arch = ARCHITECTURE_REGISTRY.get(str(sae.get("architecture")))
    if sae.get("k") is not None and arch is not None and arch.topk_family:
        parts.append(f"k {sae['k']}")
    if s.get("mean_l0") is not None:
        parts.append(f"mean L0 on the analysed rows {fmt(s['mean_l0'], '.1f')}")
    where = f" ({sae['path']})" if sae.get("path") else ""
    return ", ".join(parts) + where


def sparsity_text(data: ReportData) -> str:
    sw = data.sweep
    if sw is None:
        return f"{data.sweep_note} {sweep_modules_text(data.summary)}".strip()
    c = sw.chosen
    text = (
        f"{sw.over} = {c.value:g} is the sweep's recommendation among "
        f"{len(sw.points)} SAEs, by the rule: {sw.rule}. Held-out FVU {c.fvu:.4f} at "
        f"L0 {c.l0:.1f} ({sw.heldout_rows:,} held-out rows)"
    )
    if c.stability is not None:
        text += f"; decoder stability across two seeds {c.stability:.2f}"
        if c.stability < sw.unstable_below:
            text += f" (below {sw.unstable_below:g}: the dictionary differs between seeds)"
    text += ". "
    if sw.extended:
        added = ", ".join(f"{v:g}" for v in sw.extended)
        text += f"The knee lay at an end of the given values, so the sweep added {added}. "
    if not sw.knee_inside:
        text += f"{sw.note} " if sw.note else "The recommendation is at an end of the range. "
    if sw.atlas_point is None:
        text += "The atlas's SAE is not a member of this sweep."
    elif sw.atlas_point == sw.recommended:
        text += "The atlas uses this SAE."
    else:
        other = sw.points[sw.atlas_point]
        text += (
            f"The atlas uses another member ({sw.over} = {other.value:g}), not the recommended one."
        )
    return f"{text} {sweep_modules_text(data.summary)}".strip()


def sweep_modules_text(summary: dict) -> str:
    """How the modules change across the sweep's members, from ``atlas.json``."""
    sm = summary.get("sweep_modules")
    if not sm or len(sm.get("values", ())) < 2:
        return ""
    v, over = sm["values"], sm["over"]
    pairs = ", ".join(
        f"{a:g} to {b:g}: {fmt(r, '.2f')}" for a, b, r in zip(v, v[1:], sm["neighbour_ari"])
    )
    own = ", ".join(f"{a:g}: {fmt(r, '.2f')}" for a, r in zip(v, sm["atlas_ari"]))
    return (
        f"Modules across the sweep (unit-module ARI between neighbouring {over}; 1 is the same "
        f"map): {pairs}. Each member against this atlas: {own}."
    )


def modules_text(data: ReportData) -> str:
    s = data.summary
    n, n_sig = data.n_modules, int(s.get("n_significant_modules", 0))
    kind = s.get("module_kind", "")
    source = (
        f"the units' plain correlations ({sae_own_modules(s)})"
        if s.get("modules_from") == "unit_correlations"
        else "the SAE ensemble's consensus"
    )
    verdict = VERDICTS.get(s.get("verdict", ""), "not decided (an atlas from an older saeatlas)")
    found = f"{n} reproducible modules from {source}"
    if s.get("modules_from", "sae") == "sae" and (s.get("ensemble") or {}).get("n_members") == 1:
        # "3 reproducible modules" was said of one member's, which the verdict calls untested
        found = f"{n} modules of the SAE's one ensemble member (their reproducibility untested)"
    return (
        f"{found}; {n_sig} of them significant against every "
        f"null model, which is what counts. Verdict: {verdict}. Kind: {kind}."
    )


def modularity_text(s: dict[str, Any]) -> str:
    if s.get("p") is None:
        return (
            f"{fmt(s.get('modularity'))}; not tested against null models (rerun analyze with "
            "`--n-null 10`)."
        )
    nulls = ", ".join(
        f"{n['null']} z {fmt_z(n['z'])} p {fmt_p(n['p'])}" for n in s.get("nulls", [])
    )
    return (
        f"{fmt(tested_modularity(s), '.3f')} (the tested partition: {s.get('statistic', '')}) "
        f"against {fmt(s['null_mean'], '.3f')} ± "
        f"{fmt(s['null_std'], '.3f')} under the strictest null ({s.get('strictest_null')}): "
        f"z {fmt_z(s['z'])}, p {fmt_p(s['p'])}. All nulls: {nulls}.{no_spread_text(s)}"
        f"{dictionary_text(s)}"
    )


def no_spread_text(s: dict[str, Any]) -> str:
    """What a z of '–' beside a p-value means (:mod:`..structure.inference.draws`)."""
    flat = [n for n in s.get("nulls", []) if n.get("z") is None and n.get("p") is not None]
    if not flat:
        return ""
    n = max(int(x.get("n_draws") or 0) for x in flat)
    return (
        f" The draws of {', '.join(x['null'] for x in flat)} have no spread, so no z is "
        f"measured and the p-value is the draws' rank, at least 1/(1 + draws) = "
        f"{fmt_p(1 / (1 + n))} here (rerun analyze with more --n-null to go lower)."
    )


def dictionary_text(s: dict[str, Any]) -> str:
    """Whose dictionary the dictionary null synthesised its rows from."""
    source = s.get("dictionary_null_source")
    if not source:
        return ""
    if str(source).startswith("self"):
        why = str(source)[len("self") :].strip(" ()") or "--null-dictionary self"
        return (
            f" The dictionary null used the SAE's own dictionary ({why}): a weaker null "
            "that misses the co-firing of features the SAE did not learn; rerun analyze with "
            "--seed-sae DIR (an SAE trained the same way with another seed)."
        )
    return f" The dictionary null's rows come from the dictionary of {source}."


def stability_text(data: ReportData) -> str:
    s = data.summary
    ens = s.get("ensemble")
    view = (s.get("cross_check") or {}).get("raw")
    if ens and s.get("modules_from") == "unit_correlations" and view:
        # the verdict reports the correlation view's modules: the line said only how the
        # SAE ensemble's modules (0 of 6 reproducible) held up, beside 3 counted modules
        n = int(view.get("n_members") or 1)
        rows = f"all rows and {n - 1} Poisson-bootstrap resamples" if n > 1 else "all rows"
        text = _consensus_text(
            view, f"Modules of the units' correlations ({n} member{'s' * (n > 1)}: {rows})"
        )
        return (
            f"{text} The SAE's own modules, which the verdict does not report: "
            + _consensus_text(ens, _ensemble_members(ens, "its ensemble"))
        )
    if ens:
        return _consensus_text(ens, _ensemble_members(ens, "Ensemble"))
    st = data.summary.get("stability")
    if not st:
        v = data.atlas.modules.get("stability", pd.Series(dtype=float)).to_numpy(float)
        if np.isfinite(v).any():
            return f"Mean module stability {fmt(np.nanmean(v), '.2f')} (best-match Jaccard)."
        return (
            "Not measured: rerun `saeatlas analyze` with `--seeds 3` (an ensemble of SAEs "
            "trained with other seeds) and `--n-bootstrap 1` (row resamples of each)."
        )
    th = st.get("thresholds", {})
    runs = []
    if st.get("n_bootstrap"):
        ari = [a for a in st.get("bootstrap_ari", []) if a is not None]
        runs.append(
            f"{st['n_bootstrap']} row bootstraps (feature ARI {fmt(np.mean(ari) if ari else None, '.2f')})"
        )
    if st.get("n_seeds"):
        ari = [a for a in st.get("seed_unit_ari", []) if a is not None]
        runs.append(
            f"{st['n_seeds']} other SAE seeds (unit ARI {fmt(np.mean(ari) if ari else None, '.2f')})"
        )
    return (
        f"{st.get('n_stable_modules', 0)} of {data.n_modules} modules stable (best-match "
        f"Jaccard ≥ {th.get('stable', 0.75)}), {st.get('n_dissolved_modules', 0)} dissolved "
        f"(< {th.get('dissolved', 0.5)}), over {' and '.join(runs) or 'no reruns'}."
    )


def _ensemble_members(ens: dict[str, Any], noun: str) -> str:
    return (
        f"{noun} of {ens.get('n_saes')} SAEs x {1 + (ens.get('n_bootstrap') or 0)} row "
        f"samples ({ens.get('n_members')} members)"
    )


def _consensus_text(ens: dict[str, Any], members: str) -> str:
    """How the modules of ``ens`` (``atlas.json``'s ``ensemble``, or a correlation view of
    ``cross_check``) held up across its members, after ``members`` (who they are)."""
    chosen = next((lv for lv in ens.get("levels", []) if lv.get("chosen")), {})
    scales = ", ".join(f"{lv['scale']:g}" for lv in ens.get("levels", []) if lv.get("scale"))
    n = chosen.get("n_consensus_modules", 0)
    if ens.get("n_members") == 1:  # it said "3 of 3 reproducible" of one member's modules
        return (
            f"{members} at resolutions {scales or 'one scale'}; reported resolution "
            f"{fmt(ens.get('scale'), 'g')}: {n} modules, whose reproducibility one member "
            "cannot test (rerun analyze with --seeds 3, or --n-bootstrap 1 or more)."
        )
    # recovered and reproducible differ where the members disagree: it said "0 of 2
    # recovered by at least 75%" of two modules every member recovered
    recovered = sum(r >= REPRODUCIBLE - 1e-12 for r in chosen.get("reproducibility") or [])
    agreement = chosen.get("agreement", ens.get("agreement"))
    disagree = agreement is not None and agreement < MIN_AGREEMENT
    return (
        f"{members} at resolutions {scales or 'one scale'}; reported "
        f"resolution {fmt(ens.get('scale'), 'g')}: {recovered} of {n} consensus modules "
        f"recovered by at least {REPRODUCIBLE:.0%} of the members (Jaccard ≥ 0.5), "
        f"{chosen.get('n_reproducible_modules', 0)} of {n} reproducible; members' mean "
        f"pairwise ARI {fmt(agreement, '.2f')}"
        + (
            f" (below {MIN_AGREEMENT:g}: the members divide the units in unrelated ways, so "
            "no module there counts as reproducible)."
            if disagree
            else "."
        )
        + _submodules_text(ens)
    )


def _submodules_text(ens: dict[str, Any]) -> str:
    """The scale that divides the reported modules into sub-modules, if one does."""
    finer = next((lv for lv in ens.get("levels", []) if lv.get("submodules")), None)
    n = (finer or {}).get("n_reproducible_modules") or 0
    if n == 0:
        return ""
    return (
        f" Sub-modules: the {n} reproducible modules of the finer resolution "
        f"{fmt(finer.get('scale'), 'g')} (`submodule` in units.parquet)."
    )


def ablation_text(data: ReportData) -> str:
    if not data.has_ablation:
        if data.summary.get("ablation") and data.n_modules == 0:
            # the demo's page said "No model given" of an ablation that ran and had nothing
            return "The model was given, but the atlas has no modules to ablate."
        return "No model given: no causal check."
    a = data.summary.get("ablation") or {}
    m = data.atlas.modules
    above = int(hurts_loss(m).sum()) if "ablation_p" in m else None
    stop = a.get("stop_after")  # atlases before it drew every set
    n_random = a.get("n_random")
    if isinstance(stop, int) and isinstance(n_random, int) and stop > n_random:
        stop = None  # "draws stop once 10 sets did" was said of 5 sets
    text = (
        f"{a.get('mode', 'mean')} ablation of each module's units against "
        f"{'up to ' if stop else ''}{a.get('n_random', '?')} random unit sets with as many "
        "units per layer"
        + (f" (a module's draws stop once {stop} sets did at least its damage)" if stop else "")
    )
    if a.get("clean_loss") is not None:
        text += f"; clean loss {fmt(a['clean_loss'], '.4f')}"
    if above is not None:
        adjusted = (
            "p ≤ 0.05 after the Benjamini-Hochberg adjustment over the modules"
            if "ablation_q" in m
            else "p ≤ 0.05"
        )
        text += (
            f". {above} of {len(m)} modules damage the loss more than random sets ({adjusted})"
            + ablation_untested(data.summary)
        )
    return text + "."


@dataclass(frozen=True)
class ControlRow:
    label: str
    real: str
    control: str


def control_rows(data: ReportData) -> list[ControlRow] | None:
    """The trained SAE beside the random-directions control (``summary["control"]``)."""
    c = data.summary.get("control")
    if not c:
        return None
    s = data.summary
    real = c.get("real") or {
        "n_modules": data.n_modules,
        "n_significant_modules": s.get("n_significant_modules"),
        "modularity": s.get("modularity"),
        "z": {n["null"]: n["z"] for n in s.get("nulls", [])},
        "verdict": s.get("verdict"),
    }

    def strictest(z: dict | None) -> str:
        vals = [v for v in (z or {}).values() if v is not None]
        return fmt(min(vals), ".1f") if vals else "–"

    rows = [
        ControlRow("modules", fmt(real.get("n_modules"), ".0f"), fmt(c.get("n_modules"), ".0f")),
        ControlRow(
            "significant modules",
            fmt(real.get("n_significant_modules"), ".0f"),
            fmt(c.get("n_significant_modules"), ".0f"),
        ),
        ControlRow(
            "modularity", fmt(real.get("modularity"), ".3f"), fmt(c.get("modularity"), ".3f")
        ),
        ControlRow("strictest null z", strictest(real.get("z")), strictest(c.get("z"))),
        ControlRow("verdict", str(real.get("verdict") or "–"), str(c.get("verdict") or "–")),
    ]
    if c.get("unit_ari") is not None:
        rows.append(
            ControlRow("unit modules, real vs control (ARI)", "", fmt(c["unit_ari"], ".2f"))
        )
    return rows
