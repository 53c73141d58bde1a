"""The twenty-fourth hostile sweep's cases in `analyze`, the atlas's own files and
`report`: each failed (a wrong figure shown without a word, or a misleading word) before
its fix."""

from __future__ import annotations

import json

import pandas as pd
import pytest


def _edit_modules(atlas, **columns) -> None:
    table = atlas / "modules.parquet"
    pd.read_parquet(table).assign(**columns).to_parquet(table, index=False)


def _edit_summary(atlas, **entries) -> None:
    meta = atlas / "atlas.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), **entries}))


def _labelled(atlas) -> None:
    """Label means of two classes beside the figures they give: module 0 prefers 'b'
    (index (3 - 1) / (3 + 1) = 0.5), module 1 'a' (index 1)."""
    _edit_summary(atlas, label_classes=["a", "b"])
    _edit_modules(
        atlas,
        label_means=[[1.0, 3.0], [2.0, 0.0]],
        preferred_label=["b", "a"],
        selectivity=[0.5, 1.0],
    )


@pytest.mark.parametrize(
    "edit, needle",
    [
        (
            {"preferred_label": ["a", "a"]},
            "`preferred_label` of module 0 in modules.parquet in",
        ),
        ({"selectivity": [0.9, 1.0]}, "`selectivity` of module 0 in modules.parquet in"),
    ],
)
def test_a_preferred_label_or_selectivity_its_label_means_contradict_is_refused(
    tmp_path, two_modules_atlas, run_cli, edit, needle
):
    """A module's `preferred_label` (or `selectivity`) edited by hand was shown on its
    card and in the run's table ("prefers 1") beside label means that prefer another
    class; so was every module's once atlas.json's `label_classes` were reordered."""
    from saeatlas.structure.atlas import Atlas

    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    _labelled(atlas)
    assert Atlas.load(atlas).modules["preferred_label"].tolist() == ["b", "a"]
    _edit_modules(atlas, **edit)
    one_line(cli("report", atlas), needle, "label_means", "rerun `saeatlas analyze`")
    assert not (atlas / "report.html").exists()
    _labelled(atlas)
    _edit_summary(atlas, label_classes=["b", "a"])
    one_line(cli("report", atlas), "`label_means` over atlas.json's `label_classes` prefer 'a'")


def test_a_stability_other_than_the_reproducibility_is_refused(
    tmp_path, two_modules_atlas, run_cli
):
    """`stability` (the ensemble's reproducibility, which the cards and the run's table
    show) edited to 0.1 was shown as "0.10 of the ensemble's members recover it" under a
    headline that counts the module as reproducible by its `reproducibility` of 1."""
    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    _edit_modules(atlas, reproducibility=[1.0, 0.9], stability=[0.1, 0.9])
    one_line(
        cli("report", atlas),
        "`stability` of module 0 in modules.parquet in",
        "is 0.1, but its `reproducibility` is 1.0",
    )


def test_a_layer_profile_its_units_contradict_is_refused(tmp_path, two_modules_atlas, run_cli):
    """A module's `layer_profile` (its units' share per layer, the layer x module map)
    edited by hand was drawn as it stood, against units that lie elsewhere."""
    from saeatlas.structure.atlas import Atlas

    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    _edit_modules(atlas, layer_profile=[[1.0], [1.0]])
    Atlas.load(atlas)  # the profile its units give
    _edit_modules(atlas, layer_profile=[[1.0], [0.5]])
    one_line(
        cli("report", atlas),
        "`layer_profile` of module 1 in modules.parquet in",
        "is [0.5], but its units in units.parquet give [1.0]",
    )


def test_significant_modules_without_the_significant_column_are_refused(
    tmp_path, two_modules_atlas, run_cli
):
    """modules.parquet without its `significant` column under an atlas.json counting
    significant modules: the page marked every module "no" below "3 of them significant
    against every null model"."""
    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    _edit_summary(atlas, n_significant_modules=1)
    one_line(
        cli("report", atlas),
        "counts 1 significant module(s), but modules.parquet has no `significant` column",
    )


@pytest.mark.parametrize(
    "config, advice",
    [
        (
            {"nulls": [], "n_null": 10},
            "Rerun analyze with --nulls permutation rewiring dictionary.",
        ),
        ({"nulls": ["permutation"], "n_null": 0}, "Rerun analyze with --n-null 10."),
        ({"nulls": [], "n_null": 0}, "with --n-null 10 and --nulls permutation"),
    ],
)
def test_no_null_model_names_the_setting_that_ran_none(config, advice):
    """`nulls: []` beside the default `n_null` 10 was told to "Rerun analyze with --n-null
    10", which it had."""
    from saeatlas.structure.atlas import Atlas
    from saeatlas.structure.inference.outcome import decide

    units = pd.DataFrame({"unit": [0, 1], "layer": "a", "index": [0, 1], "module": [-1, -1]})
    atlas = Atlas(
        units=units,
        features=pd.DataFrame({"feature": [0], "module": [-1]}),
        modules=pd.DataFrame({"module": pd.Series([], dtype=int)}),
        summary={"nulls": [], "config": config, "graph": {"n_tests": 3, "n_edges": 2}},
    )
    decide(atlas)
    assert advice in atlas.summary["message"]


def test_a_negative_ablation_seed_is_refused_by_the_check(tmp_path, guarded, run_cli):
    """A run config's `ablation.seed: -1` was called valid by `run --check`; the run then
    captured, trained and analysed, and its ablation refused `random_state` -1."""
    cli, one_line = run_cli
    run = {"model": guarded.model, "inputs": str(guarded.inputs), "layers": ["1", "3"]}
    (tmp_path / "run.json").write_text(json.dumps({**run, "ablation": {"seed": -1}}))
    one_line(cli("run", tmp_path / "run.json", "--check"), "`ablation.seed` must be >= 0, got -1")
    assert not (tmp_path / "run").exists()


def test_labels_of_too_few_rows_are_not_profiled(tmp_path, outputs, caplog):
    """A label column that labels 2 of the 300 analysed rows ('a' and 'b', the rest None)
    was profiled as 2 classes (the rule of two rows per class counted every analysed
    row): each module "prefers" the class of the one row it fired most on."""
    import shutil

    from saeatlas.structure import AtlasConfig, analyze

    store = shutil.copytree(outputs.store, tmp_path / "store")
    rows = pd.read_parquet(store / "rows.parquet")
    rows.assign(label=pd.Series([None] * 298 + ["a", "b"], dtype=object)).to_parquet(
        store / "rows.parquet", index=False
    )
    manifest = json.loads((store / "manifest.json").read_text())
    manifest.pop("rows_sha256", None)  # a label column added by hand, read as the store's
    (store / "manifest.json").write_text(json.dumps(manifest))
    caplog.set_level("WARNING")
    cfg = AtlasConfig(n_null=0, n_bootstrap=0, control=False, n_examples=0, resolutions=(1.0,))
    atlas = analyze(outputs.sae, store, cfg)
    assert "label_classes" not in atlas.summary
    assert "preferred_label" not in atlas.modules.columns
    assert "has 2 class(es) on the analysed rows, 2 of them labelled" in caplog.text


def test_a_layer_without_units_is_refused(tmp_path, two_modules_atlas, run_cli):
    """atlas.json's `layers` edited to list a layer no unit lies in ('b') was shown as a
    layer of the model read ("b (0 units)") and drawn as a column of the layer maps."""
    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    _edit_summary(atlas, layers=["a", "b"])
    one_line(cli("report", atlas), "lists the layer 'b', but no unit of units.parquet lies in it")


def test_rows_encoded_other_than_the_graph_counted_are_refused(analysed, tmp_path, run_cli):
    """`n_rows_encoded` (the page's "Rows analysed", and the verdict's "on these N rows")
    edited to 5 was shown above a co-occurrence graph of 300 rows."""
    import shutil

    cli, one_line = run_cli
    atlas = shutil.copytree(analysed, tmp_path / "atlas")
    _edit_summary(atlas, n_rows_encoded=5)
    one_line(
        cli("report", atlas),
        "`n_rows_encoded` in",
        "is 5, but the co-occurrence graph counted 300 rows (`graph.n_rows`)",
    )


def _sweep(folder, points: list[tuple[float, float, float]], best: int, **edit) -> None:
    """A sweep.json of `(value, l0, fvu)` points, each marked on the frontier as `sweep`
    marks it, recommending point `best` by the sweep's own rule; then `edit`."""
    from saeatlas.sweep.pareto import RULE, pareto_front

    front = set(pareto_front([p[1] for p in points], [p[2] for p in points]).tolist())
    raw = {
        "over": "k",
        "rule": RULE,
        "heldout_rows": 30,
        "recommended": best,
        "points": [
            {"value": v, "path": f"k-{v:g}/seed-0", "fvu": fvu, "l0": l0, "dead_fraction": 0.1}
            | {"stability": None, "on_front": i in front}
            for i, (v, l0, fvu) in enumerate(points)
        ],
    }
    for key, value in edit.items():
        value(raw) if callable(value) else raw.update({key: value})
    folder.mkdir()
    (folder / "sweep.json").write_text(json.dumps(raw))


#: A sweep of k 2, 4, 8 and 16 whose knee is k 4 (point 1), and 1 (k 1) added last by an
#: extension: points are listed in the order they were trained.
POINTS = [(2.0, 2.0, 0.5), (4.0, 4.0, 0.2), (8.0, 8.0, 0.15), (16.0, 16.0, 0.12), (1.0, 1.0, 0.9)]


@pytest.mark.parametrize(
    "edit, says",
    [
        (
            {"reorder": lambda raw: raw["points"].reverse()},
            "`recommended` is point 1, but the knee of the points' L0 and FVU is point 3",
        ),
        ({"recommended": 2}, "`recommended` is point 2, but the knee"),
        (
            {"twice": lambda raw: raw["points"][2].update(value=4.0)},
            "the values [4.0] are listed more than once",
        ),
        (
            {"front": lambda raw: raw["points"][1].update(on_front=False)},
            "the points marked `on_front` are [0, 2, 3, 4], but their L0 and FVU put [0, 1, 2",
        ),
    ],
)
def test_a_sweep_json_its_points_contradict_is_refused_by_the_report(
    tmp_path, two_modules_atlas, run_cli, edit, says
):
    """sweep.json's points reordered by hand moved its `recommended` index to another
    point ("k = 16 is the sweep's recommendation" of a knee at 4); a value listed twice was
    shown as two members of one k, and `on_front` flags edited drew another frontier."""
    from saeatlas.report.data import _read_sweep

    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    _sweep(tmp_path / "fine", POINTS, 1)
    assert _read_sweep(tmp_path / "fine", None, strict=True).recommended == 1
    _sweep(tmp_path / "sweep", POINTS, 1, **edit)
    one_line(cli("report", atlas, "--sweep", tmp_path / "sweep"), "is unreadable (", says)


def test_two_sweep_members_of_one_value_are_refused(outputs, forbid):
    """`analyze(sweep=("k", [(4, sae), (4, other_seed)]))` compared the two members as
    neighbouring values: their ARI (that of two seeds) was reported as how the modules
    change "from k 4 to k 4"."""
    import saeatlas.structure.inputs as inputs
    from saeatlas.errors import ConfigError
    from saeatlas.structure import AtlasConfig, analyze

    forbid(inputs, "prepare")
    sweep = ("k", [(4, outputs.sae), (8.0, outputs.sae), (4.0, outputs.sae)])
    with pytest.raises(ConfigError, match="`sweep` gives several members the value 4 of `k`"):
        analyze(outputs.sae, outputs.store, AtlasConfig(), sweep=sweep)


def test_layer_shares_that_do_not_add_up_are_refused(tmp_path, two_modules_atlas, run_cli):
    """`layer_mass` (a module's or feature's shares of its write energy per layer) of 0.9
    in each layer was drawn as it stood: 270% of a module's energy."""
    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    _edit_summary(atlas, layers=["a", "b"])
    units = pd.read_parquet(atlas / "units.parquet")
    units.assign(layer=["a"] * 3 + ["b"] * 3, index=[0, 1, 2] * 2).to_parquet(
        atlas / "units.parquet", index=False
    )
    _edit_modules(atlas, layer_mass=[[0.25, 0.75], [0.0, 0.0]])
    table = atlas / "features.parquet"
    pd.read_parquet(table).assign(layer_mass=[[0.9, 0.9]] + [[0.5, 0.5]] * 3).to_parquet(
        table, index=False
    )
    one_line(
        cli("report", atlas),
        "`layer_mass` of features.parquet in",
        "adds up to 1.8 in row 0, not 1",
    )


@pytest.mark.parametrize(
    "ranks, activations, says",
    [
        (
            [1, 2, 3],
            [1.0, 2.0, 0.5],
            "ranks feature 0's rows otherwise than 1, 2, ... by falling activation (rank 2,",
        ),
        ([1, 3, 4], [3.0, 2.0, 1.0], "by falling activation (rank 3, activation 2)"),
    ],
)
def test_top_examples_out_of_their_order_are_refused(
    tmp_path, two_modules_atlas, run_cli, ranks, activations, says
):
    """examples.parquet edited so that a feature's activations rise with the rank (or its
    ranks skip one) listed as its top examples rows that are not."""
    from saeatlas.structure.atlas import Atlas

    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    examples = {"kind": "feature", "id": 0, "row": [5, 3, 9]}
    good = pd.DataFrame({**examples, "rank": [1, 2, 3], "activation": [3.0, 2.0, 2.0]})
    good.to_parquet(atlas / "examples.parquet", index=False)
    assert len(Atlas.load(atlas).examples) == 3  # ties keep their ranks
    edited = good.assign(rank=ranks, activation=activations)
    edited.to_parquet(atlas / "examples.parquet", index=False)
    one_line(cli("report", atlas), "examples.parquet in", says)
