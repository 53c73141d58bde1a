"""The atlas's one verdict, from everything measured about its modules.

A module counts only when it survives every control: significant against every
null model *and* reproducible (recovered by at least 0.75 of the ensemble's
members). The atlas then states exactly one of four outcomes (:data:`VERDICTS`);
``atlas.json``'s ``verdict`` is its key, ``message`` the sentence with the
counts, and ``significant`` is true exactly when modules are named.

Whether the SAE adds anything is a test too: a counted module is *visible
without the SAE* when the random-dictionary control (:mod:`.control`) or the
units' plain correlations (:mod:`.correlation`) have a module matching it at
Jaccard >= 0.5. Modules whose ablation does not beat random unit sets are
named in the counts: a counted module hurts the loss when its ablation p,
adjusted over the modules ablated (``ablation_q``), is at most
:data:`ABLATION_ALPHA`. :func:`decide` reads only the atlas's tables and
summary, so every step that adds a control (the random SAE, the ablation) calls
it again and the verdict always agrees with the page below it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..repeated_rows import repeated_text
from .partitions import best_match_jaccard

if TYPE_CHECKING:
    from ..atlas import Atlas

#: The four outcomes: ``atlas.json``'s ``verdict`` -> what it means.
VERDICTS: dict[str, str] = {
    "modules": "reproducible modules that the trained SAE reveals beyond the "
    "random-dictionary control and the units' plain correlations",
    "modules_visible_without_sae": "reproducible modules that are also visible without "
    "the SAE (the random-dictionary control or the units' plain correlations find them): "
    "the SAE adds nothing to plain correlation",
    "structure_without_reproducible_modules": "co-firing structure that does not divide "
    "reproducibly into modules",
    "no_significant_structure": "no significant structure",
}
#: A counted module is visible without the SAE when a control has a module matching
#: it at least this well (the Jaccard at which a module counts as recovered).
VISIBLE_JACCARD = 0.5
#: A module hurts the loss more than random unit sets when its ablation p, adjusted over
#: the modules ablated (Benjamini-Hochberg, ``ablation_q``), is at most this.
ABLATION_ALPHA = 0.05


def ablation_q(m: Any) -> Any:
    """``ablation_q`` of the modules (a table) or of one module (a row as a dict): the
    ablation p adjusted over the modules. Atlases written before the adjustment hold
    only ``ablation_p`` and were counted on it; they still are, so that their stored
    headline and their page agree."""
    return m.get("ablation_q", m.get("ablation_p"))


def hurts_loss(m: Any) -> np.ndarray:
    """``[n_modules]`` whether each module's ablation beats random unit sets (all False
    without an ablation)."""
    q = ablation_q(m)
    if q is None:
        return np.zeros(len(m), bool)
    return np.nan_to_num(np.asarray(q, dtype=float), nan=1.0) <= ABLATION_ALPHA


def ablation_untested(s: dict) -> str:
    """Why the count of modules that hurt the loss says nothing, or "": with fewer than
    19 random unit sets per module (``summary["ablation"]["n_random"]``) no p reaches
    :data:`ABLATION_ALPHA` (the smallest is ``1 / (1 + n)``), so "0 of 4 hurt the loss"
    was a finding the ablation could not have made otherwise."""
    n = (s.get("ablation") or {}).get("n_random")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0 or 1 / (1 + n) <= ABLATION_ALPHA:
        return ""
    return (
        f" (not tested: the smallest p that {n} random unit set{'' if n == 1 else 's'} per "
        f"module can give is {1 / (1 + n):.2g}, above {ABLATION_ALPHA:g}; rerun analyze "
        "without --ablation-draws, whose default draws enough)"
    )


def match_jaccard(modules: np.ndarray, other: np.ndarray | None) -> np.ndarray:
    """``[n_modules]`` best-match Jaccard of each unit module with ``other``'s modules
    (NaN when ``other`` is None)."""
    n = int(modules.max(initial=-1)) + 1
    if other is None:
        return np.full(n, np.nan)
    return np.nan_to_num(best_match_jaccard(modules, other, n_modules=n), nan=0.0)


def decide(atlas: Atlas) -> None:
    """Set the atlas's ``verdict``, ``message``, ``significant`` and counts, and the
    modules' ``counted`` and ``visible_without_sae`` columns, from what it holds."""
    m, s = atlas.modules, atlas.summary
    n_modules = len(m)
    significant = (
        m["significant"].to_numpy(bool) if "significant" in m.columns else np.zeros(n_modules, bool)
    )
    from_sae = s.get("modules_from", "sae") == "sae"
    if from_sae and _alone(s):  # every module of one member "reproduces": nothing tested
        significant = np.zeros(n_modules, bool)
    visible = np.zeros(n_modules, bool)
    for col in ("control_jaccard", "correlation_jaccard"):
        if col in m.columns:
            visible |= np.nan_to_num(m[col].to_numpy(float), nan=0.0) >= VISIBLE_JACCARD
    if not from_sae:
        visible[:] = True
    m["visible_without_sae"] = visible
    m["counted"] = significant
    n = int(significant.sum())
    beyond = int((significant & ~visible).sum())
    if n and beyond:
        key = "modules"
    elif n:
        key = "modules_visible_without_sae"
    elif s.get("partition_significant"):
        key = "structure_without_reproducible_modules"
    else:
        key = "no_significant_structure"
    s["verdict"] = key
    s["significant"] = bool(n)
    s["n_modules"] = n_modules
    s["n_significant_modules"] = n
    s["n_sae_only_modules"] = beyond
    if "ablation_p" in m.columns:
        s["n_causal_modules"] = int((significant & hurts_loss(m)).sum())
    s["message"] = _sentence(key, atlas, n, beyond)
    repeated = repeated_text(s.get("n_repeated_rows"), s.get("n_rows_encoded"))
    if repeated and key != "no_significant_structure":  # the headline claimed it unsaid
        s["message"] += f" Caution: {repeated[0].upper()}{repeated[1:]}."


def sae_own_modules(s: dict) -> str:
    """What the SAE's own modules did, where the atlas's modules are the units' plain
    correlations (``modules_from``): the verdict's sentence and the report's modules line
    both say it (the report once said they do not reproduce where one did)."""
    own = (s.get("sae_modules") or {}).get("n_significant_modules", 0)
    tried = (s.get("sae_modules") or {}).get("n_modules", 0)
    if own:
        return (
            f"the SAE's own {own} significant reproducible module"
            f"{' covers' if own == 1 else 's cover'} fewer units (units' `sae_module`)"
        )
    if tried:
        return (
            f"the SAE's own {tried} reproducible module{'' if tried == 1 else 's'} "
            f"{'does' if tried == 1 else 'do'} not beat its null models"
        )
    if _alone(s):  # one member: "do not reproduce" was said of what was not tested
        return (
            "the SAE's own modules were not tested for reproducibility (one ensemble member: "
            "analyze with --seeds 3, or `n_bootstrap` 1 or more)"
        )
    return "the SAE's own modules do not reproduce across its ensemble"


def _alone(s: dict) -> bool:
    """Whether the SAE ensemble has one member (``--seeds 1`` with ``n_bootstrap`` 0)."""
    return (s.get("ensemble") or {}).get("n_members") == 1


def _uncounted_groups(beaten: dict) -> str:
    """The cleaned correlations' significant groups, which never count as modules: the
    page listed "2 significant against every null" under a headline of no module."""
    n = (beaten.get("clean") or {}).get("n_significant_modules")
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        return ""
    return (
        f"; the {n} significant group{'s' * (n != 1)} of the units' clean correlations "
        f"{'do' if n != 1 else 'does'} not count as modules (units that share features "
        "form such groups on data without modules too)"
    )


def _sentence(key: str, atlas: Atlas, n: int, beyond: int) -> str:
    m, s = atlas.modules, atlas.summary
    ens = s.get("ensemble") or {}
    members = f"{ens.get('n_members', 1)} ensemble members"
    if key in ("modules", "modules_visible_without_sae"):
        noun = "module" if n == 1 else "modules"
        # only the controls that ran: without the random dictionary the sentence claimed
        # to be beyond it, then said it was not run
        ran = [
            name
            for col, name in (
                ("control_jaccard", "the random-dictionary control"),
                ("correlation_jaccard", "the units' plain correlations"),
            )
            if col in m.columns
        ]
        controls = f" beyond {' and '.join(ran)}" if ran else ""
        if key == "modules":
            text = f"{n} reproducible {noun} that the trained SAE reveals{controls}"
            if beyond < n:
                text = (
                    f"{n} reproducible {noun}, {beyond} of them revealed by the trained SAE"
                    f"{controls} ({n - beyond} also visible without the SAE)"
                )
        elif s.get("modules_from") == "unit_correlations":
            text = f"{n} reproducible {noun} of correlated units, visible without the SAE"
            if (s.get("sae_modules") or {}).get("n_significant_modules", 0):
                text += (
                    f"; {sae_own_modules(s)}, so at this scale it adds nothing to plain correlation"
                )
            else:
                text += f": {sae_own_modules(s)}, so it adds nothing to plain correlation here"
        else:
            text = (
                f"{n} reproducible {noun}, also visible without the SAE (the random-dictionary "
                "control or the units' plain correlations find them): the SAE adds nothing "
                "to plain correlation here"
            )
        if "control_jaccard" not in m.columns and s.get("modules_from") == "sae":
            text += " (the random-dictionary control was not run)"
        if "ablation_p" in m.columns:
            text += (
                f"; {s['n_causal_modules']} of {n} hurt the loss more than random unit sets"
                + ablation_untested(s)
            )
        return text[0].upper() + text[1:] + "."
    if key == "structure_without_reproducible_modules":
        # say whose partition beat its nulls: the SAE's, or only the units' correlations'
        beaten = {
            k: v for k, v in (s.get("cross_check") or {}).items() if v.get("partition_significant")
        }
        beat = ["the SAE's partition beats the null models"]
        if beaten:
            beat = beat if s.get("sae_partition_significant") else []
            # atlases before the no-groups null tested the views against independent units
            both = all(len(v.get("tests") or ()) > 1 for v in beaten.values())
            nulls = (
                "the independent-units and no-groups nulls"
                if both
                else "the independent-units null"
            )
            beat.append(f"the units' {' and '.join(beaten)} correlations beat {nulls}")
        untested = (
            " (one member cannot test that: analyze with --seeds 3, or `n_bootstrap` 1 or more)"
            if s.get("modules_from", "sae") == "sae" and _alone(s)
            else ""
        )
        return (
            f"Co-firing structure that does not divide reproducibly into modules: "
            f"{' and '.join(beat)}, but no module is both significant and recovered by at "
            f"least 75% of the {members}{untested}{_uncounted_groups(beaten)}."
        )
    graph = s.get("graph") or {}
    if graph.get("n_tests") == 0:  # "use a larger k" was said of an SAE with k = d_sae
        d_sae = (s.get("sae") or {}).get("d_sae", "?")
        dense = (s.get("config") or {}).get("max_density")
        dense = f"{dense:.0%}" if type(dense) in (int, float) else "`max_density`"
        return (
            f"No significant structure: fewer than two of the SAE's {d_sae} features can be "
            f"tested for co-firing on these {s.get('n_rows_encoded', 0):,} rows "
            f"({s.get('n_dense_features', 0)} fire on more than {dense} of them and "
            f"{s.get('n_global_mode_features', 0)} follow the units' global mode, both kept "
            "out of modules; any others never fire), so the co-occurrence graph has no pairs "
            "to test. Use an SAE of more latents with fewer active per row (a smaller k), or "
            "a higher --max-density."
        )
    if graph.get("n_edges") == 0:
        l0 = s.get("mean_l0") or 0.0
        return (
            "No significant structure: no two features fire together more often than chance "
            f"on these {s.get('n_rows_encoded', 0):,} rows (mean L0 {l0:.1f}), so the "
            "co-occurrence graph has no edges. Use an SAE with more active latents per row (a "
            "larger k), more rows, or count co-firing over consecutive tokens with --window N."
        )
    if not s.get("nulls"):
        # `nulls` empty beside the default `n_null` 10 was told to rerun with --n-null 10
        cfg = s.get("config") if isinstance(s.get("config"), dict) else {}
        fix = "--n-null 10" if cfg.get("n_null") == 0 or cfg.get("nulls") != [] else ""
        if cfg.get("nulls") == []:
            fix += (" and " if fix else "") + "--nulls permutation rewiring dictionary"
        return (
            "No significant structure: no null model was run (`n_null` 0 or `nulls` empty), "
            f"so nothing was tested and no module counts. Rerun analyze with {fix}."
        )
    return "No significant structure: the partition does not beat the null models."
