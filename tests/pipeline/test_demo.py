"""The digits demo end to end (at the tests' size): every stage runs and the atlas is whole."""

import json

import numpy as np
import pandas as pd
import pytest

from saeatlas.demo import digits_config
from saeatlas.demo.digits import DIGITS_LAYERS
from saeatlas.pipeline import module_summary
from saeatlas.pipeline.run import STAGES
from saeatlas.store import ActivationStore
from saeatlas.structure import Atlas
from saeatlas.structure.inference.outcome import VERDICTS


def test_every_stage_runs_and_the_layout_is_complete(quick_demo):
    result, seen = quick_demo
    assert [s.name for s in seen] == list(STAGES)
    assert result.stages == seen
    ran = {s.name for s in seen if s.status == "ran"}
    assert {"capture", "sweep", "train", "analyze", "ablation"} <= ran
    # a fresh run says each stage ran because its output was missing
    assert all("missing" in s.reason for s in seen if s.status == "ran"), seen
    p = result.paths
    store = ActivationStore.open(p.store)
    assert [l.name for l in store.layers] == list(DIGITS_LAYERS) and store.n_rows == 1797
    assert (p.sweep / "sweep.json").is_file()
    for name in ("cfg.json", "sae_weights.safetensors", "metrics.jsonl"):
        assert (p.sae / name).is_file()
    assert (p.out / "config.yaml").is_file() and (p.out / "run.json").is_file()
    state = json.loads((p.out / "run.json").read_text())["stages"]
    assert all(state[s]["complete"] for s in ran)


def test_the_sweep_chooses_the_final_sae_sparsity(quick_demo):
    result, _ = quick_demo
    sweep = json.loads((result.paths.sweep / "sweep.json").read_text())
    chosen = sweep["points"][sweep["recommended"]]["value"]
    values = [p["value"] for p in sweep["points"]]
    # the given values, then any the sweep added past an end while the knee lay there
    assert values == [*digits_config(quick=True).sweep.values, *sweep["extended"]]
    assert result.chosen == chosen and chosen in values
    assert sweep["knee_inside"] or sweep["note"]
    cfg = json.loads((result.paths.sae / "cfg.json").read_text())
    assert cfg["k"] == int(chosen)
    assert [l["name"] for l in cfg["layers"]] == list(DIGITS_LAYERS)  # one joint SAE


def test_atlas_has_significance_and_ablation_that_agree_with_its_verdict(quick_demo):
    """The digits network's units are no more groups than a few dense factors' (the
    no-groups null), so its modules may be none: every part is there all the same."""
    result, _ = quick_demo
    atlas = Atlas.load(result.paths.atlas)  # every file of the directory reads back
    # one verdict, and the fields below it agree with it
    assert atlas.summary["verdict"] in VERDICTS
    assert atlas.summary["significant"] == (atlas.n_significant_modules > 0)
    assert (atlas.summary["verdict"] in ("modules", "modules_visible_without_sae")) == (
        atlas.n_significant_modules > 0
    )
    assert atlas.modules["reproducibility"].ge(0.75).all()
    assert atlas.summary["z"] is not None and atlas.summary["nulls"]
    z = pd.to_numeric(atlas.modules["z"]).to_numpy(float)
    assert np.isfinite(z).all() and atlas.modules["p"].between(0, 1).all()
    assert atlas.summary["sweep"] == str(result.paths.sweep)
    assert atlas.summary["model"] == "saeatlas.demo.digits:digits_model"
    for col in ("ablation_effect", "ablation_z", "ablation_p", "ablation_random_mean"):
        assert col in atlas.modules.columns
    assert atlas.summary["ablation"]["classes"] == [str(c) for c in range(10)]
    assert len(atlas.ablation) == atlas.n_modules * 10
    assert "preferred_label" in atlas.modules.columns or atlas.n_modules == 0
    for name in ("units", "features", "modules", "examples"):
        assert (result.paths.atlas / f"{name}.parquet").is_file()
    # the module x class table, where there are modules to ablate
    assert (result.paths.atlas / "ablation.parquet").is_file() == (atlas.n_modules > 0)


def test_module_summary_rows(quick_demo):
    result, _ = quick_demo
    table = module_summary(result.atlas)
    assert len(table) == result.atlas.n_modules
    for row in table.itertuples():
        assert sum(row.units_per_layer.values()) == row.n_units
        assert set(row.units_per_layer) <= set(DIGITS_LAYERS)
    assert "ablation_p" in table.columns


def test_report_is_written(quick_demo):
    pytest.importorskip("saeatlas.report")
    result, _ = quick_demo
    assert result.report is not None and result.report.stat().st_size > 10_000
    assert list((result.paths.atlas / "figures").glob("*.png"))


def test_demo_seed_varies_the_analysis_not_the_network():
    a, b = digits_config(seed=3), digits_config(seed=3)
    assert a == b and a.train.seed == 3 and a.analyze.seed == 3 and a.ablation.seed == 3
    # another seed: the same network (its factory's arguments), another analysis
    c = digits_config(seed=4)
    assert c.model_args == a.model_args and c.inputs == a.inputs
    assert (c.train.seed, c.analyze.seed, c.ablation.seed) == (4, 4, 4)
