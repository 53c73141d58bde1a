"""Activations or row metadata that are not those a store (or a ``.npy``) was made with
are found: by ``info --verify``, and by a training run resumed on them."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest


@pytest.fixture
def store_copy(tmp_path, outputs):
    dst = tmp_path / "store"
    shutil.copytree(outputs.store, dst)
    return dst


@pytest.mark.parametrize("damage", ["labels", "samples", "another store's"])
def test_verify_finds_row_metadata_that_was_changed(store_copy, run_cli, damage):
    """rows.parquet with the same rows in order but other labels or samples (or one of
    the same length copied from another store) passed --verify, and the atlas profiled
    its modules against labels the rows never had."""
    cli, one_line = run_cli
    assert cli("info", store_copy, "--verify").exit_code == 0
    rows = store_copy / "rows.parquet"
    table = pq.read_table(rows)
    n = table.num_rows
    if damage == "labels":  # a label column added by hand
        table = table.append_column("label", pa.array(np.zeros(n, np.int64)))
    elif damage == "samples":
        i = table.schema.get_field_index("sample")
        table = table.set_column(i, "sample", pa.array(np.roll(np.arange(n), 1)))
    else:
        table = pa.table({"row": np.arange(n), "sample": np.arange(n), "position": np.zeros(n)})
    pq.write_table(table, rows)
    one_line(cli("info", store_copy, "--verify"), "rows.parquet", "not the one its capture wrote")


def test_a_training_resumed_on_an_npy_with_rows_swapped_is_refused(tmp_path, monkeypatch):
    """A .npy's rows were known by their per-unit mean and std alone: two rows swapped
    (the array saved again in another order) resumed the checkpoint without a word, so
    the rest of the epoch visited some rows twice and others never."""
    from saeatlas.errors import ConfigError
    from saeatlas.train import TrainConfig, train_sae
    from saeatlas.train.run import _Run

    x = np.abs(np.random.default_rng(0).normal(size=(200, 12))).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    cfg = TrainConfig(d_sae=16, k=3, batch_size=32, tokens=32 * 10, checkpoint_every=3)
    real = _Run.train_step

    def dying(self, batch):
        if self.step == 4:  # after the checkpoint at step 3
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(_Run, "train_step", dying)
    with pytest.raises(KeyboardInterrupt):
        train_sae(tmp_path / "a.npy", cfg, tmp_path / "sae", progress=False)
    monkeypatch.setattr(_Run, "train_step", real)
    x[[0, 1]] = x[[1, 0]]
    np.save(tmp_path / "a.npy", x)
    with pytest.raises(ConfigError, match="`rows_digest`: the store's rows differ"):
        train_sae(tmp_path / "a.npy", cfg, tmp_path / "sae", resume=True, progress=False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])  # read directly, or through the map
def test_an_npy_saved_again_while_it_is_read_is_not_mixed_in(tmp_path, dtype):
    """np.save at the same path rewrites the file in place: a training run reading the
    .npy served the new array's rows in its later epochs, under the moments, NaN check
    and digest of the old one; a store directory replaced so was already refused."""
    from saeatlas.errors import StoreError
    from saeatlas.store import ActivationStore

    x = np.random.default_rng(0).normal(size=(64, 6)).astype(dtype)
    np.save(tmp_path / "a.npy", x)
    os.utime(tmp_path / "a.npy", ns=(1, 1))  # written long before it is written again
    store = ActivationStore.open(tmp_path / "a.npy")
    batches = store.iter_batches(16, seed=0)
    next(batches)
    np.save(tmp_path / "a.npy", x[::-1].copy())  # the same shape: the reader cannot tell
    with pytest.raises(StoreError, match="was written again while this run read it"):
        for _ in range(2):  # another epoch
            for _ in store.iter_batches(16, seed=1):
                pass


def test_info_shows_each_layers_mean_and_std_of_its_values(tmp_path, run_cli):
    """The table's `std` was the mean of the layer's unit stds: 0.5 for two units
    around 0 and 10 whose values have a std of 5."""
    cli, _ = run_cli
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)) * [0.5, 0.5, 1.0, 2.0, 3.0] + [0.0, 10.0, -3.0, 1.0, 4.0]
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    (tmp_path / "x.layers.json").write_text(
        '[{"name": "a", "start": 0, "stop": 2}, {"name": "b", "start": 2, "stop": 5}]'
    )
    result = cli("info", tmp_path / "x.npy")
    assert result.exit_code == 0, result.output
    rows = {
        cells[0]: cells
        for line in result.output.splitlines()
        if len(cells := [c.strip() for c in line.strip("│ ").split("│")]) == 7
    }
    values = x.astype(np.float32).astype(np.float64)
    for name, cols in (("a", slice(0, 2)), ("b", slice(2, 5))):
        mean, std = float(rows[name][5]), float(rows[name][6])
        assert mean == pytest.approx(values[:, cols].mean(), rel=1e-3, abs=1e-3)
        assert std == pytest.approx(values[:, cols].std(), rel=1e-3)


@pytest.mark.parametrize("damage", ["samples duplicated", "samples out of order"])
def test_row_metadata_edited_since_the_capture_is_refused_when_read(store_copy, damage):
    """Only `info --verify` compared rows.parquet with its sha256: an analysis read the
    samples (and so the labels) of rows an edit had duplicated or reordered."""
    from saeatlas.errors import ChecksumError
    from saeatlas.store import ActivationStore

    rows = store_copy / "rows.parquet"
    table = pq.read_table(rows)
    n, i = table.num_rows, table.schema.get_field_index("sample")
    sample = np.arange(n) // 2 if damage == "samples duplicated" else np.arange(n)[::-1]
    pq.write_table(table.set_column(i, "sample", pa.array(sample)), rows)
    with pytest.raises(ChecksumError, match="rows.parquet. is not the one its capture wrote"):
        ActivationStore.open(store_copy).rows(["sample"])
    unchecked = ActivationStore.open(store_copy, verify=False).rows(["sample"])
    assert unchecked.column("sample").to_pylist() == sample.tolist()


def test_rows_of_an_unknown_column_name_it_and_the_columns_there_are(tmp_path, make_store):
    # `store.rows(["nope"])` said rows.parquet was unreadable and to recapture the store,
    # and `store.rows("sample")` asked for the columns 's', 'a', 'm', ...
    from saeatlas.errors import ConfigError
    from saeatlas.store import ActivationStore

    store = ActivationStore.open(make_store(tmp_path / "s"))
    assert store.rows(["sample"]).column_names == ["sample"]
    with pytest.raises(
        ConfigError, match="no column 'nope'; its columns are row, position, sample"
    ):
        store.rows(["sample", "nope"])
    with pytest.raises(ConfigError, match="a list of column names, got the text 'sample'"):
        store.rows("sample")
