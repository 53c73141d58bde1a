"""Sixteenth hostile sweep, capture, training and runs half: a run's report older than a
table of its atlas edited by hand."""

from __future__ import annotations

import os
import shutil

import numpy as np
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


RANK_CHANGES = """
import torch
from torch import nn

class Spread(nn.Module):
    # [batch, d] for full batches, [batch, 3, d] for the last, smaller one
    def forward(self, x):
        return x if x.shape[0] == 7 else x.unsqueeze(1).expand(-1, 3, -1)

def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), Spread())
"""


def test_a_layer_whose_output_changes_rank_between_batches_is_refused(tmp_path, run_cli):
    """A layer that gave [batch, d] in the first batches and [batch, seq, d] in the last
    was stored without a word: one row per sample and one per token mixed, under the
    first batch's layout and shape."""
    cli, one_line = run_cli
    (tmp_path / "model.py").write_text(RANK_CHANGES)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(20, 4)).astype("f4"))
    r = cli(
        "capture", "--model", f"{tmp_path / 'model.py'}:build", "--inputs", tmp_path / "x.npy",
        "--layers", "1", "--batch-size", "7", "--out", tmp_path / "store", "-q",
    )  # fmt: skip
    one_line(r, "layout 'token' in input batch 2", "layout 'sample' in the first batch")
    assert not (tmp_path / "store").exists()
