"""Top-activating rows and label selectivity of features and modules."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse as sp

from saeatlas.store import LayerSpec
from saeatlas.structure.describe.profiles import (
    row_column,
    selectivity,
    selectivity_index,
    token_contexts,
    top_examples,
)
from saeatlas.structure.graph.codes import Codes


def make_codes(matrix, rows=None) -> Codes:
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    n, d = matrix.shape
    rows = np.arange(n) if rows is None else np.asarray(rows)
    return Codes(
        matrix=matrix,
        rows=rows,
        samples=rows,
        layers=(LayerSpec("layer0", 0, 4, (4,), "sample"),),
        unit_mean=np.zeros(4),
        unit_std=np.ones(4),
        act_sum=np.asarray(matrix.sum(axis=0)).ravel(),
        act_sq_sum=np.asarray(matrix.power(2).sum(axis=0)).ravel(),
        cross=np.zeros((d, 4)),
    )


def test_top_examples_equal_dense_argsort():
    rng = np.random.default_rng(0)
    n_rows, d_sae, n_top = 300, 40, 7
    dense = rng.exponential(size=(n_rows, d_sae)) * (rng.random((n_rows, d_sae)) < 0.05)
    dense[:, 3] = 0.0  # a dead feature: no rows
    dense[:, 5] = 0.0
    dense[[10, 20], 5] = [1.0, 2.0]  # fewer active rows than n_top
    store_rows = 1000 + 3 * np.arange(n_rows)  # the codes cover some of the store's rows
    codes = make_codes(dense, rows=store_rows)
    feature_module = rng.integers(-1, 3, d_sae)
    all_rows = 1000 + np.arange(3 * n_rows)
    meta = pd.DataFrame({"row": all_rows, "sample": all_rows // 7, "label": all_rows % 5})
    meta = meta.sample(frac=1.0, random_state=0)  # the lookup must not rely on order

    table = top_examples(codes, feature_module, pa.Table.from_pandas(meta), n_top=n_top)

    dense = codes.matrix.toarray().astype(np.float64)  # the float32 values as stored
    module_act = dense @ (feature_module[:, None] == np.arange(3)[None, :])
    for kind, acts in (("feature", dense), ("module", module_act)):
        got = table[table["kind"] == kind]
        active = np.flatnonzero((acts > 0).any(axis=0))
        assert sorted(got["id"].unique()) == active.tolist()
        for j in active:
            col = acts[:, j]
            top = np.argsort(-col, kind="stable")[: min(n_top, int((col > 0).sum()))]
            mine = got[got["id"] == j]
            assert mine["rank"].tolist() == list(range(1, len(top) + 1))
            assert mine["row"].tolist() == store_rows[top].tolist()
            np.testing.assert_allclose(mine["activation"], col[top], rtol=1e-6)
    assert (table.loc[table["kind"] == "feature", "id"] != 3).all()
    assert len(table[(table["kind"] == "feature") & (table["id"] == 5)]) == 2
    # Metadata follows the store row, not the table's order.
    assert (table["sample"] == table["row"] // 7).all()
    assert (table["label"] == table["row"] % 5).all()
    assert "context" not in table.columns  # no tokens: not a token store


def token_table() -> pa.Table:
    texts = [["The", "cat", "sat", "on", "the", "mat", "."], ["A", "dog", "ran"]]
    rows = [(s, p, t) for s, toks in enumerate(texts) for p, t in enumerate(toks)]
    order = np.random.default_rng(1).permutation(len(rows))
    return pa.table(
        {
            "row": [int(i) for i in order],
            "sample": [rows[i][0] for i in order],
            "position": [rows[i][1] for i in order],
            "token": [rows[i][2] for i in order],
        }
    )


def test_token_contexts_from_hand_made_table():
    table = token_table()
    where = {int(r): i for i, r in enumerate(table.column("row").to_pylist())}
    # Rows 3 ("on", sample 0) and 7 ("A", first token of sample 1) and 9 ("ran", last).
    got = token_contexts(table, np.array([where[3], where[7], where[9]]), context_size=5)
    assert got == ["The cat sat [[on]] the mat .", "[[A]] dog ran", "A dog [[ran]]"]
    narrow = token_contexts(table, np.array([where[3], where[0]]), context_size=2)
    assert narrow == ["cat sat [[on]] the mat", "[[The]] cat sat"]


def test_top_examples_adds_contexts_for_token_stores():
    table = token_table()
    dense = np.zeros((10, 2), np.float32)
    dense[3, 0], dense[9, 0], dense[5, 1] = 2.0, 1.0, 4.0
    out = top_examples(make_codes(dense), np.array([0, -1]), table, n_top=5)
    feature0 = out[(out["kind"] == "feature") & (out["id"] == 0)]
    assert feature0["context"].tolist() == ["The cat sat [[on]] the mat .", "A dog [[ran]]"]
    assert feature0["token"].tolist() == ["on", "ran"]
    module0 = out[out["kind"] == "module"]
    assert module0["row"].tolist() == [3, 9]  # feature 1 belongs to no module
    assert list(out.columns[:5]) == ["kind", "id", "rank", "row", "activation"]


def test_top_examples_names_missing_store_rows():
    codes = make_codes(np.eye(3), rows=[0, 1, 99])
    with pytest.raises(ValueError, match="99"):
        top_examples(codes, np.array([0, 0, 1]), pa.table({"row": [0, 1, 2]}))


def toy_selectivity_codes():
    labels = np.array([0, 0, 1, 1, 2, 2])
    dense = np.zeros((6, 3))
    dense[:, 0] = [3, 3, 1, 1, 1, 1]  # class means [3, 1, 1]
    dense[4:, 1] = [2.0, 4.0]  # fires only on class 2; feature 2 never fires
    return make_codes(dense), labels


def test_selectivity_index_by_hand():
    codes, labels = toy_selectivity_codes()
    sel = selectivity(codes, np.array([0, 0, -1]), labels, n_perm=0)
    assert sel.classes.tolist() == [0, 1, 2]
    assert sel.class_counts.tolist() == [2, 2, 2]
    np.testing.assert_allclose(sel.feature_means[0], [3, 1, 1])
    np.testing.assert_allclose(sel.feature_index[:2], [(3 - 1) / (3 + 1), 1.0])
    assert sel.feature_preferred.tolist() == [0, 2, -1]
    assert np.isnan(sel.feature_index[2])
    # Module 0 = features 0 + 1: means [3, 1, 4], others' mean (3 + 1) / 2 = 2.
    np.testing.assert_allclose(sel.module_means[0], [3, 1, 4])
    np.testing.assert_allclose(sel.module_index, [(4 - 2) / (4 + 2)])
    assert sel.module_preferred.tolist() == [2]
    assert np.isnan(sel.module_p).all()  # n_perm=0: no test


def test_selectivity_with_string_labels_and_chosen_classes():
    codes, labels = toy_selectivity_codes()
    names = np.array(["cat", "dog", "eel"])[labels].astype(object)
    names[0] = None  # a row without a label is left out
    sel = selectivity(codes, np.array([0, 0, -1]), names, classes=["eel", "dog"], n_perm=0)
    assert sel.classes.tolist() == ["eel", "dog"]
    np.testing.assert_allclose(sel.feature_means[0], [1, 1])
    np.testing.assert_allclose(sel.feature_means[1], [3, 0])
    frame = sel.to_frame()
    feature1 = frame[(frame["kind"] == "feature") & (frame["id"] == 1)].iloc[0]
    assert feature1["preferred_class"] == "eel" and feature1["index"] == 1.0
    assert (
        frame.loc[(frame["kind"] == "feature") & (frame["id"] == 2), "preferred_class"].isna().all()
    )


def test_selectivity_index_stays_in_unit_interval():
    means = np.random.default_rng(0).exponential(size=(200, 4))
    index, preferred = selectivity_index(means)
    assert ((index >= 0) & (index <= 1)).all()
    assert (preferred == means.argmax(axis=1)).all()


def test_permutation_null_is_uniform_for_unrelated_and_small_for_driven_modules():
    rng = np.random.default_rng(0)
    n_rows, n_free = 600, 20
    labels = rng.integers(0, 3, n_rows)
    # Features 0..19: one label-blind module each; feature 20: module 20, tuned to class 0.
    dense = rng.exponential(size=(n_rows, n_free + 1)) * (rng.random((n_rows, n_free + 1)) < 0.3)
    rate = np.where(labels == 0, 0.6, 0.2)
    dense[:, n_free] = rng.exponential(size=n_rows) * (rng.random(n_rows) < rate)
    codes = make_codes(dense)
    sel = selectivity(codes, np.arange(n_free + 1), labels, random_state=0)
    assert sel.n_perm == 100
    assert sel.module_p[n_free] < 0.05
    assert sel.module_preferred[n_free] == 0
    free = sel.module_p[:n_free]
    assert 0.3 < free.mean() < 0.7
    assert (free < 0.05).mean() <= 0.15


def test_blocked_permutation_null_equals_plain_loop(monkeypatch):
    rng = np.random.default_rng(3)
    n_rows = 120
    labels = rng.integers(0, 4, n_rows)
    activity = sp.csc_matrix(rng.exponential(size=(n_rows, 5)) * (rng.random((n_rows, 5)) < 0.4))
    counts = np.bincount(labels, minlength=4)
    from saeatlas.structure.describe import label_null

    monkeypatch.setattr(label_null, "_PERM_BLOCK_NNZ", 3 * n_rows)  # blocks of 3 permutations
    got = label_null.permutation_null(activity, labels, 4, None, 10, np.random.default_rng(7))
    ref_rng, dense, ref = np.random.default_rng(7), activity.toarray(), []
    for _ in range(10):
        y = ref_rng.permutation(labels)
        means = np.stack([dense[y == c].sum(0) / counts[c] for c in range(4)], axis=1)
        ref.append(selectivity_index(means)[0])
    np.testing.assert_allclose(got, np.stack(ref), rtol=1e-10)


def test_row_column_aligns_store_labels():
    codes = make_codes(np.eye(3), rows=[4, 2, 0])
    meta = pa.table({"row": [0, 1, 2, 3, 4], "label": ["a", "b", "c", "d", "e"]})
    assert row_column(codes, meta, "label").tolist() == ["e", "c", "a"]
    with pytest.raises(ValueError, match="no column 'topic'"):
        row_column(codes, meta, "topic")
