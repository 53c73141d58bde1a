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


def test_python_arguments_of_the_wrong_kind_are_refused_before_the_work(
    tmp_path, make_store, snapshot
):
    """`capture_activations(..., overwrite="no")` replaced the store at `out` (the flag
    read by its truth), as `resume="no"` resumed and `train_sae`'s and `sweep`'s did the
    same; a dict as `train_sae`'s or `sweep`'s settings ended in an AttributeError, a
    number as `out` in pathlib's TypeError, None as the model in an AttributeError, and a
    NumPy number in `provenance` ended the capture after its work, at the manifest."""
    import numpy as np
    import pytest
    import torch

    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.errors import ConfigError
    from saeatlas.sweep import sweep
    from saeatlas.train import TrainConfig, train_sae

    store = make_store(tmp_path / "store")
    before = snapshot(tmp_path)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6))
    x = torch.randn(20, 4)

    def refused(call, needle, **kwargs):
        with pytest.raises(ConfigError, match=needle):
            call(**kwargs)

    def capture(**kw):
        args = {"model": model, "inputs": x, "hookpoints": ["0"], "out": store, "progress": False}
        return capture_activations(**{**args, **kw})

    refused(capture, r"`overwrite` must be True or False, got 'no'", overwrite="no")
    refused(capture, r"`resume` must be True or False, got 'no'", resume="no")
    refused(capture, r"`out` must be a path .* got 5", out=5)
    refused(capture, r"`model` must be a torch.nn.Module .* got NoneType", model=None)
    refused(capture, r"got the class Linear itself", model=torch.nn.Linear)
    refused(capture, r"`config` must be a CaptureConfig, got dict", config={"batch_size": 4})
    new = tmp_path / "new"
    refused(capture, r"`provenance` must be a dict of JSON", out=new, provenance={"n": np.int64(3)})
    assert not list(tmp_path.glob("*new*"))  # refused before the work
    cfg = TrainConfig(d_sae=8, k=2, tokens=200)
    refused(train_sae, r"`cfg` must be a TrainConfig, got dict", store=store, cfg={"k": 2})
    refused(train_sae, r"`out` must be a path", store=store, cfg=cfg, out=5)
    refused(train_sae, r"`resume` must be True or False", store=store, cfg=cfg, out=new, resume=1)
    for kwargs, needle in (
        ({"base": {"k": 2}}, r"`base` must be a TrainConfig, got dict"),
        ({"values": (v for v in (2, 4))}, r"`values` must be a list of numbers, got generator"),
        ({"overwrite": "no"}, r"`overwrite` must be True or False"),
        (
            {"heldout_fraction": "0.1"},
            r"--heldout-fraction \(`heldout_fraction`\) must be in \(0, 0.5\), got '0.1'",
        ),
        ({"extend": True}, r"--extend \(`extend`\) must be a whole number >= 0, got True"),
    ):
        args = {"store": store, "base": cfg, "over": "k", "values": [2, 4], "out": new}
        refused(sweep, needle, **{**args, **kwargs})
    assert snapshot(tmp_path) == before
    # NumPy values are numbers: they were refused as "--values must be finite positive numbers"
    res = sweep(store, cfg, "k", np.array([2, 4]), new, seeds=1, extend=0, progress=False)
    assert [p.value for p in res.points] == [2.0, 4.0]
    assert capture(out=tmp_path / "s2", config=CaptureConfig(), provenance={"n": 3}).n_rows == 20


BLOCKS = """
import torch
from torch import nn

class Act(nn.Module):
    def forward(self, x):
        return torch.relu(x)
"""

MODEL_OF_BLOCKS = """
import torch
from torch import nn
from sixteenth_blocks import Act

def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 10), Act(), nn.Linear(10, 3))
"""

TINY_RUN = """
model: model.py:build
inputs: x.npy
layers: ['1']
sweep: {enabled: false}
train: {d_sae: 8, k: 2, tokens: 256, batch_size: 64}
stability: {n_seed_saes: 0}
analyze: {n_null: 0, nulls: [permutation], n_examples: 1}
ablation: {enabled: false}
report: {enabled: false}
"""


def test_a_run_sees_the_code_its_model_imports_edited_since_its_capture(
    tmp_path, monkeypatch, run_cli, snapshot
):
    """A model file that imports its blocks from another module: that module edited
    since (a ReLU made a Tanh) left `saeatlas run` skipping every stage, its store
    holding the old model's rows, because the run stamped only the model file itself
    (and nothing of a `package.module:factory` spec). The capture's record now stamps
    the files of the model's module classes and of such specs."""
    cli, one_line = run_cli
    blocks = tmp_path / "sixteenth_blocks.py"
    blocks.write_text(BLOCKS)
    (tmp_path / "model.py").write_text(MODEL_OF_BLOCKS)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(200, 4)).astype("f4"))
    (tmp_path / "run.yaml").write_text(TINY_RUN)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    r = cli("run", tmp_path / "run.yaml", "--out", run, "-q")
    assert r.exit_code == 0, r.output
    before = snapshot(run)
    blocks.write_text(BLOCKS.replace("torch.relu(x)", "torch.tanh(x)  # was a ReLU"))
    r = cli("run", tmp_path / "run.yaml", "--out", run, "-q")
    one_line(
        r, "store (capture: its model, inputs or labels file changed since it ran (or the code"
    )
    assert snapshot(run) == before


def test_a_run_without_a_record_compares_the_settings_its_atlas_records(analysed, tmp_path):
    """With no `run.json` (deleted, or an atlas analysed by hand into the run directory),
    a complete atlas was kept "as is" whatever settings made it, and its report with it,
    although `atlas.json` records them: one of other settings is now refused without
    --overwrite, naming them, and made again with it; one of the run's own is kept."""
    import pytest

    from saeatlas.errors import ConfigError
    from saeatlas.pipeline import RunConfig
    from saeatlas.pipeline.outputs import RunPaths
    from saeatlas.pipeline.record import RunState, fingerprints, stage_settings
    from saeatlas.pipeline.run import _decide, _refuse_changed
    from saeatlas.structure import AtlasConfig

    paths = RunPaths(tmp_path / "run")
    shutil.copytree(analysed, paths.atlas)
    made = AtlasConfig(n_null=2, nulls=("permutation",), n_examples=2)  # the atlas's own
    for analyze, kept in ((made, True), (AtlasConfig(n_null=3, nulls=("permutation",)), False)):
        cfg = RunConfig(model="m.py:f", inputs="x.npy", layers=("1",), analyze=analyze)
        state, prints, settings = RunState(paths.state), fingerprints(cfg), stage_settings(cfg)
        if kept:  # as the run checks, before it decides (which starts the stage's record)
            _refuse_changed(cfg, paths, state, prints, settings)
        else:
            with pytest.raises(ConfigError, match=r"atlas \(analyze: `analyze.n_examples` was 2"):
                _refuse_changed(cfg, paths, state, prints, settings)
        outcome, resume, why = _decide("analyze", cfg, paths, state, prints, settings, None)
        assert (outcome is not None and outcome.status == "skipped") == kept, why
        assert kept or (why == "its settings changed" and not resume)


def test_an_output_named_as_a_working_folder_of_another_is_refused(tmp_path, outputs, run_cli):
    """A store written as `DIR/.a.partial` was moved to `DIR/a` by the next reader of
    `a` (`info DIR/a`: a capture a kill stopped before its swap, it seemed), and one in
    `DIR/.a.partial/x` deleted by the next `capture --out DIR/a`."""
    cli, one_line = run_cli
    for name, where in ((".a.partial", "is named as"), (".a.partial/x", "is inside"),
                        (".a.old", "is named as"), (".a.lock", "is named as")):  # fmt: skip
        r = cli("capture", "--model", outputs.model, "--inputs", outputs.inputs,
                "--layers", "1", "--out", tmp_path / name, "-q")  # fmt: skip
        one_line(r, where, "saeatlas keeps beside an output 'a'", "Choose another name")
        r = cli("train", "--acts", outputs.store, "--out", tmp_path / name, "--seeds", "1")
        one_line(r, where, "saeatlas keeps beside an output 'a'")
    assert not list(tmp_path.iterdir())
