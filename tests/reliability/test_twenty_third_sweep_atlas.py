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
