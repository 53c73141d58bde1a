"""The twenty-third hostile sweep's cases in `analyze`, the atlas's own files, `report` and
the exports: each failed (a traceback, a wrong result or a misleading word) before its fix."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest


def test_a_label_column_the_store_lacks_names_the_label_columns(tmp_path, guarded, run_cli):
    """`--label-column lab` was refused listing every column of the store's rows as the
    choices (['row', 'label', 'position', 'sample']), three of which number the rows and
    are no labels; a store without labels was told to "name one of them" of those three."""
    import json as _json

    from saeatlas.store import ActivationStore

    cli, one_line = run_cli
    args = ["analyze", "--sae", guarded.sae, "--out", tmp_path / "a", "--label-column", "lab"]
    one_line(
        cli(*args, "--acts", guarded.store),
        "`label_column` 'lab' is not a column of the store's rows, which record no labels",
        "number them); capture labels with --labels, or leave `label_column` out.",
    )
    labelled = shutil.copytree(guarded.store, tmp_path / "store")
    rows = pd.read_parquet(labelled / "rows.parquet").assign(label=np.arange(300) % 3)
    rows.to_parquet(labelled / "rows.parquet", index=False)
    manifest = _json.loads((labelled / "manifest.json").read_text())
    manifest.pop("rows_sha256", None)  # a label column added by hand, read as the store's
    (labelled / "manifest.json").write_text(_json.dumps(manifest))
    assert "label" in ActivationStore.open(labelled).row_columns()
    line = one_line(
        cli(*args, "--acts", labelled), "its label columns are ['label'] (name one of them)"
    )
    assert "'row'" in line.split("name one of them")[1]  # said to number the rows
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--ablation-draws", "5"], "--ablation-draws is"),
        (["--ablation-mode", "zero"], "--ablation-mode is"),
        (["--model-class", "bogus"], "--model-class is"),
        (["--loss", "next-token", "--model-class", "base"], "--loss and --model-class are"),
    ],
)
def test_ablation_flags_without_a_model_are_refused(tmp_path, guarded, run_cli, flags, named):
    """`analyze --ablation-draws 5` (or `--ablation-mode zero`, `--model-class bogus`)
    without --model ran the analysis and ablated nothing, without a word."""
    cli, one_line = run_cli
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", tmp_path / "a"]
    one_line(cli(*args, *flags), f"Error: {named} for the ablation; give --model and --inputs")
    assert not (tmp_path / "a").exists()


def test_a_model_class_without_a_model_is_refused_by_evaluate_and_the_export(
    tmp_path, guarded, run_cli
):
    """`evaluate --model-class bogus` and `export-neuronpedia --model-class base` without
    --model were passed over without a word."""
    cli, one_line = run_cli
    r = cli("evaluate", "--sae", guarded.sae, "--acts", guarded.store, "--model-class", "bogus")
    one_line(r, "--model-class is for the downstream loss; give --model and --inputs too.")
    r = cli("export-neuronpedia", guarded.atlas, "--out", tmp_path / "np", "--model-class", "base")
    one_line(r, "--model-class is for the features' logits; give --model too.")
    assert not (tmp_path / "np").exists()


def _edit_summary(atlas, edit) -> None:
    summary = json.loads((atlas / "atlas.json").read_text())
    edit(summary)
    (atlas / "atlas.json").write_text(json.dumps(summary))


def _levels(s: dict) -> list:
    return s["ensemble"]["levels"]


MEMBER_EDITS = {
    # one member's modules are untested: the verdict's sentence turned on this count
    "n_members 1": (lambda s: s["ensemble"].update(n_members=1), "`ensemble.n_members`"),
    "n_members 99": (lambda s: s["ensemble"].update(n_members=99), "give 2 members"),
    "n_bootstrap 50": (lambda s: s["ensemble"].update(n_bootstrap=50), "give 51 members"),
    "a scale's n_members": (
        lambda s: _levels(s)[0].update(n_members=7),
        "`ensemble.levels[0].n_members`",
    ),
    "member_n_modules of one member": (
        lambda s: _levels(s)[1].update(member_n_modules=[3]),
        "`ensemble.levels[1].member_n_modules`",
    ),
    "reproducibility of another length": (
        lambda s: _levels(s)[2].update(reproducibility=[1.0]),
        "`ensemble.levels[2].reproducibility`",
    ),
    "n_reproducible_modules above the consensus": (
        lambda s: _levels(s)[2].update(n_reproducible_modules=40),
        "more than its",
    ),
    "every scale chosen": (
        lambda s: [lv.update(chosen=True) for lv in _levels(s)],
        "marks 4 scales `chosen`, not one",
    ),
    "scale not the chosen one": (lambda s: s["ensemble"].update(scale=3.3), "`ensemble.scale`"),
    "a view's member counts": (
        lambda s: s["cross_check"]["raw"].update(n_members=1),
        "`cross_check.raw.levels[0].n_members`",
    ),
    "sweep_modules cut short": (
        lambda s: s.update(
            sweep_modules={
                "over": "k",
                "values": [2, 4, 8],
                "n_modules": [1, 1, 1],
                "neighbour_ari": [0.5],
                "atlas_ari": [0.1, 0.2, 0.3],
            }
        ),
        "`sweep_modules.neighbour_ari`",
    ),
}


@pytest.mark.parametrize("case", sorted(MEMBER_EDITS))
def test_ensemble_counts_that_disagree_with_its_members_are_refused(
    tmp_path, analysed, run_cli, case
):
    """`ensemble.n_members` was not compared with the SAEs and resamples it counts, nor
    with its scales' members: edited to 1 the headline called the SAE's own modules
    untested (and to more than 1 counted one member's modules as reproducible), edited to
    99 it was shown beside "1 SAEs x 2 row samples"; a scale's lists of other lengths,
    several scales `chosen`, and a sweep's ARIs cut short were read and shown as they
    stood."""
    cli, one_line = run_cli
    atlas = shutil.copytree(analysed, tmp_path / "atlas")
    edit, needle = MEMBER_EDITS[case]
    _edit_summary(atlas, edit)
    one_line(cli("report", atlas), needle, "rerun `saeatlas analyze` with --overwrite")
    assert not (atlas / "report.html").exists()


@pytest.mark.parametrize(
    "column, edit, shown",
    [
        ("sae_module", lambda c: c + 50, "modules of the SAE ensemble that atlas.json's"),
        ("consensus_module", lambda c: c * 0 + 1000, "1000, not one of the"),
        ("cross_check_module", lambda c: c - 5, "reproducible modules of the correlations"),
        ("sae_module", lambda c: c.astype(str), "modules of the SAE ensemble"),
    ],
)
def test_a_units_module_of_another_view_out_of_range_is_refused(
    tmp_path, analysed, run_cli, column, edit, shown
):
    """units.parquet's `sae_module`, `consensus_module` and `cross_check_module` (the
    modules of the SAE ensemble, its whole consensus and the units' correlations, which
    `Atlas.load` hands to Python) were read as they stood, also as text or naming modules
    atlas.json does not count; only `submodule` was checked."""
    cli, one_line = run_cli
    atlas = shutil.copytree(analysed, tmp_path / "atlas")
    units = pd.read_parquet(atlas / "units.parquet")
    units[column] = edit(units[column])
    units.to_parquet(atlas / "units.parquet", index=False)
    one_line(cli("report", atlas), f"`{column}` of units.parquet in '{atlas}' names", shown)


GRAPH_EDITS = {
    "n_dense_features 9": (lambda s: s.update(n_dense_features=9), "`n_dense_features`"),
    "n_global_mode_features 3": (
        lambda s: s.update(n_global_mode_features=3),
        "`n_global_mode_features`",
    ),
    # the headline then said that fewer than two features could be tested
    "no pairs tested": (lambda s: s["graph"].update(n_tests=0, n_edges=0), "`graph.n_tests`"),
    "more edges than tests": (
        lambda s: s["graph"].update(n_edges=10**6),
        "is 1000000, more than the",
    ),
}


@pytest.mark.parametrize("case", sorted(GRAPH_EDITS))
def test_the_graph_counts_of_the_headline_agree_with_the_features(
    tmp_path, analysed, run_cli, case
):
    """atlas.json's counts of dense and global-mode features and of the pairs the graph
    tested, which the verdict's sentence gives where no module could be found ("fewer than
    two of the SAE's 24 features can be tested ... (9 fire on more than 30% of them"),
    were not compared with features.parquet's `dense`, `global_mode` and firing."""
    cli, one_line = run_cli
    atlas = shutil.copytree(analysed, tmp_path / "atlas")
    edit, needle = GRAPH_EDITS[case]
    _edit_summary(atlas, edit)
    one_line(cli("report", atlas), needle, "rerun `saeatlas analyze` with --overwrite")


def test_dense_and_global_mode_of_another_kind_are_refused(tmp_path, analysed, run_cli):
    """features.parquet's `dense` and `global_mode` (the features kept out of modules)
    as text or numbers were read by their truth: 'False' is true."""
    cli, one_line = run_cli
    atlas = shutil.copytree(analysed, tmp_path / "atlas")
    features = pd.read_parquet(atlas / "features.parquet")
    features["dense"] = features["dense"].astype(str)
    features.to_parquet(atlas / "features.parquet", index=False)
    one_line(cli("report", atlas), "`dense` of features.parquet", "must hold true or false")


@pytest.mark.parametrize("n_random, draws", [(100, [5, 5]), (3, [5, 5]), (5, [5, 120])])
def test_ablation_draws_that_disagree_with_n_random_are_refused(
    tmp_path, two_modules_atlas, run_cli, n_random, draws
):
    """An ablation of 5 random sets per module is untested (its smallest p is 1/6), and
    the headline says so from `ablation.n_random`: edited to 100 the sentence read "0 of
    2 hurt the loss more than random unit sets", a finding, above modules of 5 sets each
    (and a module's `ablation_draws` of 120 of 5 passed too)."""
    from saeatlas.structure.atlas import Atlas
    from saeatlas.structure.graph.hypergeom import benjamini_hochberg

    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    p = np.array([1 / 6, 2 / 6])
    modules = pd.read_parquet(atlas / "modules.parquet")
    modules = modules.assign(ablation_effect=[0.2, 0.1], ablation_p=p, ablation_draws=draws)
    modules["ablation_q"] = benjamini_hochberg(p, skip_nan=True)
    modules.to_parquet(atlas / "modules.parquet", index=False)
    ablation = {"mode": "mean", "n_random": n_random, "stop_after": 10}
    _edit_summary(atlas, lambda s: s.update(ablation=ablation))
    one_line(cli("report", atlas), "random unit sets and an `ablation_p` of", "`ablation.n_random`")
    _edit_summary(atlas, lambda s: s["ablation"].update(n_random=5))
    if draws == [5, 5]:  # as the ablation wrote it
        Atlas.load(atlas)


def test_an_sae_width_other_than_the_units_is_refused(tmp_path, analysed, run_cli):
    """atlas.json's `sae.d_in` was not compared with units.parquet (`sae.d_sae` was with
    features.parquet): edited to 99 the page described an SAE of "d_in 99" above the 18
    units it lists."""
    cli, one_line = run_cli
    atlas = shutil.copytree(analysed, tmp_path / "atlas")
    _edit_summary(atlas, lambda s: s["sae"].update(d_in=99))
    one_line(cli("report", atlas), "units.parquet in", "must list each unit (the SAE's 99) once")


def test_a_sweep_over_no_sweepable_setting_is_refused(tmp_path, guarded, run_cli):
    """A sweep.json whose `over` was edited to 'bogus' (or `analyze(sweep=("bogus", ...))`
    from Python) was analysed to the end with no member compared with the value listed
    for it (each member's setting was read as None and passed), and atlas.json recorded
    how the modules change "across bogus"."""
    from saeatlas.errors import ConfigError
    from saeatlas.structure import AtlasConfig, analyze

    cli, one_line = run_cli
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    points = [{"value": v, "path": str(guarded.sae)} for v in (4, 8)]
    (sweep / "sweep.json").write_text(json.dumps({"over": "bogus", "points": points}))
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", tmp_path / "a"]
    one_line(
        cli(*args, "--sweep", sweep, "--seeds", "2"),
        "holds no readable sweep.json (`over` is 'bogus', not one of ['k',",
    )
    assert not (tmp_path / "a").exists()
    with pytest.raises(ConfigError, match="The sweep varies 'bogus', not a setting of the"):
        analyze(guarded.sae, guarded.store, AtlasConfig(), sweep=("bogus", [(4, guarded.sae)]))


@pytest.mark.parametrize("call", ["analyze", "map_structure"])
def test_progress_of_another_kind_is_refused(guarded, call):
    """`analyze(..., progress="no")` (and `map_structure`) read the flag by its truth and
    drew the progress bars; `ablate_atlas` already refused it."""
    import saeatlas.structure as structure
    from saeatlas.errors import ConfigError

    with pytest.raises(ConfigError, match="`progress` must be True or False, got 'no'"):
        getattr(structure, call)(guarded.sae, guarded.store, progress="no")


def test_sweep_modules_over_no_sweepable_setting_is_refused(tmp_path, analysed, run_cli):
    """atlas.json's `sweep_modules.over` edited to a setting no sweep varies was shown as
    "Modules across the sweep (unit-module ARI between neighbouring bogus ...)"."""
    cli, one_line = run_cli
    atlas = shutil.copytree(analysed, tmp_path / "atlas")
    sweep = {"over": "bogus", "values": [2, 4], "n_modules": [1, 1]}
    sweep |= {"neighbour_ari": [0.5], "atlas_ari": [0.1, 0.2]}
    _edit_summary(atlas, lambda s: s.update(sweep_modules=sweep))
    one_line(cli("report", atlas), "`sweep_modules.over` in", "is 'bogus', not a setting")


def test_a_reader_finishes_an_analysis_killed_while_it_swapped_its_atlas_in(
    tmp_path, analysed, two_modules_atlas, run_cli
):
    """`analyze --overwrite` killed (`kill -9`) between moving the old atlas aside and
    putting the new one in place left both complete beside ATLAS: `report ATLAS` called it
    "not a directory", and an export and `Atlas.load` "not a complete atlas (no
    atlas.json); run `saeatlas analyze` to make one" (readers of stores and SAEs put such
    a directory in place). A mistyped atlas path was sent to make an atlas there too."""
    from saeatlas.errors import AtlasError
    from saeatlas.structure.atlas import Atlas

    cli, one_line = run_cli
    atlas = tmp_path / "atlas"
    two_modules_atlas(atlas).rename(tmp_path / ".atlas.old")  # the old atlas, moved aside
    shutil.copytree(analysed, tmp_path / ".atlas.partial")  # the new one, complete
    assert Atlas.load(atlas).summary["n_rows_encoded"] == 300  # the new one, in place
    assert not (tmp_path / ".atlas.old").exists() and not (tmp_path / ".atlas.partial").exists()
    for reader in (
        lambda p: cli("report", p),
        lambda p: cli("export-neuronpedia", p, "--out", tmp_path / "np"),
    ):
        one_line(reader(tmp_path / "atlass"), f"'{tmp_path / 'atlass'}' does not exist; give the")
    with pytest.raises(AtlasError, match="does not exist; give the atlas directory"):
        Atlas.load(tmp_path / "atlass")


@pytest.mark.parametrize(
    "edit, name",
    [
        (lambda s: s["sae_modules"].update(n_significant_modules=5), "sae_modules"),
        (lambda s: s.update(control={"n_modules": 0, "n_significant_modules": 9}), "control"),
        (
            lambda s: s.update(
                control={"n_modules": 0, "real": {"n_modules": 1, "n_significant_modules": 3}}
            ),
            "control.real",
        ),
    ],
)
def test_more_significant_modules_than_modules_are_refused(tmp_path, analysed, run_cli, edit, name):
    """`sae_modules.n_significant_modules` (the headline's "the SAE's own 5 significant
    reproducible modules cover fewer units") and the random-SAE control's counts were
    read above fewer modules than they count as significant."""
    cli, one_line = run_cli
    atlas = shutil.copytree(analysed, tmp_path / "atlas")
    _edit_summary(atlas, edit)
    one_line(cli("report", atlas), f"`{name}.n_significant_modules` in", "more than its")


def test_ranks_of_an_analysis_given_another_out_are_refused():
    """Rank 0 alone writes the atlas: a rank given another --out was dropped without a
    word (the ranks of `train` and `sweep` must agree on it already)."""
    from pathlib import Path

    from saeatlas._world import differing
    from saeatlas.cli.analyze_flags import flag_facts
    from saeatlas.errors import ConfigError

    rank0 = flag_facts(1, [], None, None, out=Path("atlas"))
    with pytest.raises(ConfigError, match=r"different --out \(ranks \[1\]"):
        differing([rank0, flag_facts(1, [], None, None, out=Path("other"))], "this analysis", "")
    differing([rank0, flag_facts(1, [], None, None, out=Path("atlas"))], "this analysis", "")
