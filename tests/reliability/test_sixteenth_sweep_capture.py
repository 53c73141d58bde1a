"""Sixteenth hostile sweep, capture, training and runs half: a run's report older than a
table of its atlas edited by hand."""

from __future__ import annotations

import os
import shutil

import pandas as pd


def test_a_report_older_than_a_table_edited_by_hand_is_made_again(analysed, tmp_path):
    """`saeatlas run` kept the report of an atlas whose `modules.parquet` was edited by
    hand since (a valid edit: a selectivity), its stage skipped as complete: the page
    showed the old value while the run's own table showed the new one."""
    from saeatlas.pipeline import RunConfig
    from saeatlas.pipeline.outputs import RunPaths
    from saeatlas.pipeline.record import stage_complete

    paths = RunPaths(tmp_path / "run")
    shutil.copytree(analysed, paths.atlas)
    paths.report.write_text("<html></html>")
    os.utime(paths.atlas / "atlas.json", ns=(paths.report.stat().st_mtime_ns - 10**9,) * 2)
    cfg = RunConfig(model="m.py:f", inputs="x.npy", layers=("1",))
    assert stage_complete("report", paths, cfg)
    table = paths.atlas / "modules.parquet"
    modules = pd.read_parquet(table)
    modules["n_features"] = modules["n_features"] + 1
    modules.to_parquet(table, index=False)
    now = table.stat().st_mtime_ns  # the summary, then the page, then the edit
    os.utime(paths.atlas / "atlas.json", ns=(now - 2 * 10**9,) * 2)
    os.utime(paths.report, ns=(now - 10**9,) * 2)
    assert not stage_complete("report", paths, cfg)
