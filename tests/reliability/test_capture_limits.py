"""Capture settings and inputs of the eighth hostile sweep: each is refused in one line
before anything is stored, or stored as it is."""

from __future__ import annotations

import os


def test_shard_rows_too_large_for_memory_is_one_line(tmp_path, outputs, run_cli):
    """--shard-rows 10**12 allocated its shard buffer up front: "Out of memory" on a
    capture of 300 rows, naming no setting to change."""
    cli, one_line = run_cli
    args = ["capture", "--model", outputs.model, "--inputs", outputs.inputs, "--layers", "1",
            "3", "--out", tmp_path / "s", "--shard-rows", str(10**12), "-q"]  # fmt: skip
    one_line(cli(*args), "`shard_rows` (--shard-rows) 1,000,000,000,000", "Give at most")
    assert os.listdir(tmp_path) == []
