"""The twenty-sixth hostile sweep's cases in `analyze`, the atlas's own files, `report` and
the exports: each failed (a wrong figure shown without a word, a refusal of a valid atlas,
a traceback or a misleading word) before its fix."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from atlas_edits import edit_summary as _edit_summary
from atlas_edits import edit_table


def test_a_correlation_view_with_a_shared_mode_group_is_read(tmp_path, two_modules_atlas, run_cli):
    """A correlation view whose reproducible groups include one that co-fires only through
    the mode all units share has no p for that group (it is no module): a fresh `analyze`
    wrote 3 groups and 2 p-values and then refused its own atlas ("has 2 p-value(s), but
    the view has 3 reproducible groups ...; save the atlas the analysis returned"), losing
    the whole analysis; the report said "3 reproducible groups, 2 significant (each
    group's p: 0.027, 0.027)" without saying why one had none."""
    from saeatlas.structure.atlas import Atlas

    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    view = {"module_p": [0.01, 0.02], "n_reproducible_modules": 3, "n_shared_mode_groups": 1}
    view |= {"n_significant_modules": 2, "partition_significant": True}
    view |= {"tests": [{"null": "independent units", "modularity": 0.4, "z": 9.0, "p": 0.001}]}
    _edit_summary(atlas, config={"alpha": 0.05}, cross_check={"clean": view})
    Atlas.load(atlas)
    assert cli("report", atlas).exit_code == 0
    page = (atlas / "report.html").read_text()
    assert "1 of them co-firing only through the mode all units share" in page
    _edit_summary(atlas, cross_check={"clean": {**view, "n_shared_mode_groups": 0}})
    one_line(cli("report", atlas), "has 2 p-value(s), but the view has 3 reproducible groups")


def test_rows_the_store_holds_many_times_are_counted_and_said(tmp_path, analysed, caplog):
    """A store holding the same rows several times (inputs captured again, a `.npy` of
    `np.tile`'d rows) counts every copy as evidence: 600 rows held five times turned "no
    reproducible modules" into "3 reproducible modules" without a word. The copies are
    counted (`n_repeated_rows`), warned of, and said in the headline and the report."""
    import numpy as np

    from saeatlas.report import write_report
    from saeatlas.structure import AtlasConfig, map_structure
    from saeatlas.structure.atlas import Atlas
    from saeatlas.train import TrainConfig, train_sae

    assert json.loads((analysed / "atlas.json").read_text())["n_repeated_rows"] == 0
    x = np.random.default_rng(1).exponential(size=(40, 6)).astype(np.float32)
    np.save(tmp_path / "acts.npy", np.tile(x, (3, 1)))
    train_sae(tmp_path / "acts.npy", TrainConfig(d_sae=10, k=3, tokens=240), tmp_path / "sae")
    cfg = AtlasConfig(n_null=2, nulls=("permutation",), n_examples=0, control=False)
    with caplog.at_level("WARNING"):
        atlas = map_structure(tmp_path / "sae", tmp_path / "acts.npy", cfg)
    assert atlas.summary["n_repeated_rows"] == 80
    assert "80 of the 120 rows (67%) repeat another row exactly" in caplog.text
    atlas.save(tmp_path / "atlas")
    atlas = Atlas.load(tmp_path / "atlas")
    if atlas.summary["verdict"] != "no_significant_structure":
        assert "Caution: 80 of the 120 rows" in atlas.summary["message"]
    write_report(tmp_path / "atlas")
    assert (
        "80 of the 120 rows (67%) repeat another row"
        in (tmp_path / "atlas/report.html").read_text()
    )


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--nulls", "permutation"], "(`nulls` is ['permutation'])"),
        (["--n-null", "0"], "(`n_null` is 0)"),
    ],
)
def test_null_dictionary_without_the_dictionary_null_is_refused(
    tmp_path, guarded, run_cli, forbid, flags, needle
):
    """`analyze --null-dictionary self --nulls permutation` (or `--n-null 0`) ran no
    dictionary null and passed the flag over without a word, recording
    `null_dictionary: self` for a null it never ran."""
    cli, one_line = run_cli
    import saeatlas.structure

    forbid(saeatlas.structure, "analyze")
    out = tmp_path / "atlas"
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", out, "--seeds", 1]
    one_line(cli(*args, *flags, "--null-dictionary", "self"), "--null-dictionary self", needle)
    assert not out.exists()


@pytest.mark.parametrize(
    "l0, loss, needle",
    [
        ([1, 2, 3], [0.5, 0.4], "got shapes (3,) and (2,)"),
        ([[1, 2], [3, 4]], [[1, 2], [3, 4]], "got shapes (2, 2) and (2, 2)"),
        ([1, 2, float("nan")], [0.3, 0.2, 0.1], "The point(s) at [2] have an L0 or loss"),
        ([1, 2, 3], [0.3, float("inf"), 0.1], "The point(s) at [1] have an L0 or loss"),
    ],
)
@pytest.mark.parametrize("helper", ["pareto_front", "knee"])
def test_frontier_helpers_refuse_points_that_do_not_pair(l0, loss, needle, helper):
    """`knee` and `pareto_front` given arrays of other lengths ended in numpy's "all keys
    need to be the same shape"; a NaN L0 was put on the frontier and the knee taken of the
    rest (index 0 of [1, 2, nan] beside losses [0.3, 0.2, 0.1]) without a word."""
    import saeatlas.sweep as sweep
    from saeatlas.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        getattr(sweep, helper)(l0, loss)
    assert needle in str(e.value)


def test_the_knee_of_no_points_is_refused():
    """`knee([], [])` ended in numpy's "attempt to get argmin of an empty sequence"."""
    from saeatlas.errors import ConfigError
    from saeatlas.sweep import knee

    with pytest.raises(ConfigError, match="No points to take the knee of"):
        knee([], [])


def test_more_repeated_rows_than_rows_is_refused(tmp_path, two_modules_atlas, run_cli):
    """`n_repeated_rows` edited past the rows encoded was the page's "5,000 of the 3,000
    rows (167%) repeat another row exactly"."""
    from saeatlas.structure.atlas import Atlas

    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    _edit_summary(atlas, n_rows_encoded=3000, n_repeated_rows=2400)
    Atlas.load(atlas)
    _edit_summary(atlas, n_repeated_rows=5000)
    one_line(cli("report", atlas), "`n_repeated_rows` in '", "is 5000, but only 3000 rows")


def test_a_module_below_alpha_that_is_not_significant_says_why(tmp_path, two_modules_atlas):
    """A module whose own p (0.01) is below alpha is not significant where its partition
    did not beat the null models; its card and the module graph said "not significant"
    beside "p 0.01", a contradiction on the page, without the reason."""

    from saeatlas.report import write_report

    atlas = two_modules_atlas(tmp_path / "atlas")
    edit_table(atlas, "modules", z=[3.0, 0.5], p=[0.01, 0.4], significant=[False, False])
    _edit_summary(atlas, config={"alpha": 0.05})
    write_report(atlas)
    page = (atlas / "report.html").read_text()
    assert page.count("not significant: its partition does not beat the null models") == 2


def test_the_correlation_views_nulls_read_the_analysed_rows(tmp_path, monkeypatch):
    """The units' correlation view was tested on the store's first rows: of a store whose
    rows come class by class the test saw the first classes alone (z 2.7 where the same
    rows shuffled gave 42.9, and no significant group where there were two), and with
    `max_rows` it read rows the atlas never analysed. It now takes evenly spaced blocks
    of the analysed rows, as the SAE's null models do."""
    import numpy as np

    from saeatlas.structure import AtlasConfig, map_structure
    from saeatlas.structure.inference import correlation_nulls
    from saeatlas.train import TrainConfig, train_sae

    x = np.random.default_rng(2).exponential(size=(400, 6)).astype(np.float32)
    np.save(tmp_path / "acts.npy", x)
    train_sae(tmp_path / "acts.npy", TrainConfig(d_sae=10, k=3, tokens=400), tmp_path / "sae")
    reads, block = [], correlation_nulls.null_block

    def spied(inp):
        with monkeypatch.context() as m:
            read = inp.store.read
            m.setattr(inp.store, "read", lambda a, b, **k: reads.append((a, b)) or read(a, b, **k))
            return block(inp)

    monkeypatch.setattr(correlation_nulls, "null_block", spied)
    cfg = AtlasConfig(n_null=2, nulls=("permutation",), n_examples=0, max_rows=32, batch_size=16)
    map_structure(tmp_path / "sae", tmp_path / "acts.npy", cfg)
    assert reads == [(0, 16), (384, 400)]


def test_a_store_that_only_begins_like_the_atlases_is_refused(tmp_path, outputs, analysed, run_cli):
    """A store was known as the atlas's by its row count, layers and first 64 rows: one of
    as many rows that began alike (the same rows held five times, another capture whose
    first text was the same) passed, and `export-neuronpedia --acts` read its rows as the
    atlas's. The store's moments are now compared too; the same rows as a `.npy` still
    pass."""
    import numpy as np

    cli, one_line = run_cli
    x = np.load(outputs.npy)
    layers = (outputs.root / "acts.layers.json").read_text()
    for name, rows in (("same", x), ("other", np.concatenate([x[:100], x[:100], x[:100]]))):
        np.save(tmp_path / f"{name}.npy", rows)
        (tmp_path / f"{name}.layers.json").write_text(layers)
    args = ["export-neuronpedia", analysed, "--layer", 1, "--n-examples", 2]
    assert cli(*args, "--acts", tmp_path / "same.npy", "--out", tmp_path / "np1").exit_code == 0
    out = tmp_path / "np2"
    result = cli(*args, "--acts", tmp_path / "other.npy", "--out", out)
    one_line(result, "is not the one the atlas was made from", "its rows differ")
    assert not out.exists()


def test_label_selectivity_permutes_the_labels_of_samples_not_of_their_rows():
    """A label given per sample (a text's topic) is carried by all its rows (tokens): the
    selectivity test permuted it across rows, each row independent evidence, so a module
    firing in the tokens of 3 texts of one topic got p 0.0099 where 3 texts drawn at
    random share a topic about one time in 5. Samples' labels are now permuted."""
    import numpy as np
    import scipy.sparse as sp

    from saeatlas.structure.describe.profiles import selectivity
    from saeatlas.structure.graph.codes import Codes

    samples = np.repeat(np.arange(20), 10)
    labels = np.where(samples < 10, "a", "b")
    fires = np.stack([samples < 3, np.ones(200, bool)], axis=1).astype(np.float32)

    def codes(of):
        zeros = np.zeros(2)
        return Codes(
            sp.csr_matrix(fires), np.arange(200), of, (), zeros, zeros, zeros, zeros, zeros
        )

    tokens = selectivity(codes(samples), np.array([0, 1]), labels, random_state=0)
    rows = selectivity(codes(np.arange(200)), np.array([0, 1]), labels, random_state=0)
    assert rows.module_p[0] < 0.02  # rows that are samples of their own: as before
    assert tokens.module_p[0] > 0.1


def test_the_headline_says_the_clean_correlations_groups_are_no_modules(
    tmp_path, two_modules_atlas
):
    """The headline said "the units' clean correlations beat the ... nulls, but no module
    is both significant and recovered ..." above a Plain correlations line of "3
    reproducible groups ..., 2 significant against every null": it now says why those
    groups are not counted."""
    from saeatlas.structure.atlas import Atlas
    from saeatlas.structure.inference.outcome import decide

    atlas = Atlas.load(two_modules_atlas(tmp_path / "atlas"))
    atlas.modules["significant"] = False
    clean = {"partition_significant": True, "n_significant_modules": 2, "tests": [{}, {}]}
    atlas.summary |= {"partition_significant": True, "cross_check": {"clean": clean}}
    decide(atlas)
    assert atlas.summary["verdict"] == "structure_without_reproducible_modules"
    assert (
        "the 2 significant groups of the units' clean correlations do not count as "
        in (atlas.summary["message"])
    )


def test_a_module_whose_ablation_is_no_worse_than_random_has_no_specialisation(
    tmp_path, two_modules_atlas
):
    """The module x label grid drew each label's share of a module's excess damage over
    random unit sets even where the module's ablation did not beat them: 1.00 on one
    label for a module of p 0.77 whose ablation lowered the loss. Its row is now blank."""
    from saeatlas.report.data import load_report_data
    from saeatlas.report.effects import specialisation_grid

    atlas = two_modules_atlas(tmp_path / "atlas")
    edit_table(atlas, "modules", ablation_effect=[0.5, -0.01], ablation_p=[0.01, 0.77])
    edit_table(atlas, "modules", ablation_q=[0.02, 0.77], ablation_random_mean=[0.0, 0.0])
    table = {"module": [0, 0, 1, 1], "label": ["a", "b", "a", "b"]}
    table |= {"effect": [0.9, 0.1, 0.002, -0.02], "random_effect": [0.0, 0.0, 0.001, 0.0]}
    pd.DataFrame({**table, "specialisation": [0.9, 0.1, 1.0, 0.0]}).to_parquet(
        atlas / "ablation.parquet", index=False
    )
    _, grid = specialisation_grid(load_report_data(atlas))
    assert grid[0].tolist() == [0.9, 0.1] and np.isnan(grid[1]).all()
