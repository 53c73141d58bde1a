"""``info --verify`` finds every file of a store that is not the one its capture wrote."""

from __future__ import annotations

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
