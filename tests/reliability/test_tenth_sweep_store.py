"""Tenth hostile sweep, store half: rows.parquet checked once per opened store, ranks
of a torchrun capture compared by a digest of their .npy inputs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest


def test_rows_parquet_is_hashed_once_per_opened_store_and_again_when_it_changes(
    tmp_path, make_store, monkeypatch
):
    """`store.rows()` hashed the whole rows.parquet on every call (an analysis asks for
    its columns several times); an edit after the first check must still be found."""
    import saeatlas.store.integrity as integrity
    from saeatlas.errors import ChecksumError
    from saeatlas.store import ActivationStore

    path = make_store(tmp_path / "s")
    real, hashed = integrity.file_sha256, []
    monkeypatch.setattr(integrity, "file_sha256", lambda p: hashed.append(p) or real(p))
    store = ActivationStore.open(path)
    for columns in (None, ["sample"], ["position"]):
        assert store.rows(columns).num_rows == store.n_rows
    assert len(hashed) == 1
    rows = path / "rows.parquet"
    table = pq.read_table(rows)
    i = table.schema.get_field_index("sample")
    pq.write_table(table.set_column(i, "sample", pa.array(np.arange(table.num_rows)[::-1])), rows)
    with pytest.raises(ChecksumError, match="not the one its capture wrote"):
        store.rows(["sample"])
