"""The fifteenth hostile sweep's cases in analysis, atlas files, the report, interop and
export: each failed (a wrong or contradictory page, a traceback or no word) before its fix."""

from __future__ import annotations

from types import SimpleNamespace


def _level(n: int, reproducible: int, reproducibility: list[float], agreement: float) -> dict:
    return {
        "scale": 1.0,
        "chosen": True,
        "n_consensus_modules": n,
        "n_reproducible_modules": reproducible,
        "reproducibility": reproducibility,
        "agreement": agreement,
    }


def test_the_stability_line_describes_the_correlation_modules_the_verdict_reports():
    """Where the verdict reports the units' correlation modules ("visible without the SAE"),
    the Stability line said only how the SAE ensemble's modules held up: on the digits demo
    '0 of 6 reproducible ... the members divide the units in unrelated ways' under a verdict
    of 3 reproducible modules. It now describes the reported modules first."""
    from saeatlas.report.summary import stability_text

    ensemble = {
        "n_saes": 3,
        "n_bootstrap": 1,
        "n_members": 6,
        "scale": 1.0,
        "levels": [_level(6, 0, [0.67, 0.67, 0.83, 0.67, 0.5, 0.17], 0.21)],
    }
    raw = {"n_members": 6, "scale": 1.0, "levels": [_level(3, 3, [1.0, 1.0, 0.83], 0.68)]}
    summary = {
        "modules_from": "unit_correlations",
        "ensemble": ensemble,
        "cross_check": {"raw": raw, "clean": {"n_members": 6, "levels": []}},
    }
    text = stability_text(SimpleNamespace(summary=summary))
    first, _, rest = text.partition(" The SAE's own modules")
    assert first.startswith("Modules of the units' correlations (6 members"), text
    assert "3 of 3 reproducible; members' mean pairwise ARI 0.68." in first, text
    assert "unrelated ways" not in first, text
    assert "which the verdict does not report" in rest and "0 of 6 reproducible" in rest, text
    # the SAE's own modules, when they are what the verdict reports, keep their line
    summary["modules_from"] = "sae"
    text = stability_text(SimpleNamespace(summary=summary))
    assert text.startswith("Ensemble of 3 SAEs x 2 row samples") and "0 of 6" in text, text
