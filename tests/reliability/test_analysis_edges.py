"""Analyses at the edges of their settings and inputs (seventh sweep): settings that
leave the tests nothing to compare, an SAE of another store, a store read without its
NaN rows. Each stops with one line naming the problem before anything is written, or
gives an atlas every later step reads."""

from __future__ import annotations

import pytest


def test_null_rows_too_few_for_any_edge_is_refused_not_a_verdict(tmp_path, guarded, run_cli):
    # `--null-rows 1`: the real graph on that row had no edges, every null graph was
    # built as dense (empty), all scored modularity 0, and a planted case with z 11 was
    # reported as "no significant structure: the partition does not beat the null models"
    cli, one_line = run_cli
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", tmp_path / "a"]
    args += ["--seeds", "1", "--n-bootstrap", "0", "--no-control", "--n-examples", "0"]
    args += ["--nulls", "permutation", "--n-null", "2", "--null-rows", "1", "-q"]
    one_line(cli(*args), "--null-rows 1", "has no edges", "Raise --null-rows")
    assert not (tmp_path / "a").exists()


def test_an_sae_of_another_store_trains_no_seed_saes_on_this_one(tmp_path, outputs, run_cli):
    # `--acts` of another store: the missing <sae>-seed1, -seed2 were trained on it
    # (the SAE's own settings, any number of tokens) before the analysis refused the
    # pair, and then blocked the right store's run as "left from before"
    import shutil

    import numpy as np

    cli, one_line = run_cli
    sae = shutil.copytree(outputs.sae, tmp_path / "sae")
    np.save(tmp_path / "other.npy", np.ones((40, 12), np.float32))
    args = ["analyze", "--sae", sae, "--acts", tmp_path / "other.npy", "--out", tmp_path / "a"]
    one_line(cli(*args, "--seeds", "3", "-q"), "trained on another store")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.npy", "sae"]


def test_an_atlas_of_a_store_read_without_its_nan_rows_exports(tmp_path, outputs, run_cli):
    # analyze --on-nonfinite skip left the NaN rows out; export-neuronpedia opened the
    # store without skipping and stopped with "pass --on-nonfinite skip", a flag it has not
    import json
    import shutil

    import numpy as np

    cli, _ = run_cli
    x = np.load(outputs.npy)
    x[[3, 40]] = np.nan
    np.save(tmp_path / "acts.npy", x)
    shutil.copy(outputs.root / "acts.layers.json", tmp_path / "acts.layers.json")
    args = ["analyze", "--sae", outputs.sae, "--acts", tmp_path / "acts.npy"]
    args += ["--out", tmp_path / "a", "--on-nonfinite", "skip", "--seeds", "1", "-q"]
    args += ["--n-bootstrap", "0", "--no-control", "--nulls", "permutation", "--n-null", "2"]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "a" / "atlas.json").read_text())["store_skipped_rows"] == 2
    with pytest.warns(UserWarning, match="reads 2 layers"):  # a joint SAE's batches
        result = cli("export-neuronpedia", tmp_path / "a", "--out", tmp_path / "np")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "np" / "batch-0.json").is_file()


def test_a_label_column_of_one_class_per_row_leaves_the_modules_unprofiled(
    tmp_path, outputs, run_cli, caplog
):
    # `--label-column sample` profiled the modules against 300 classes of one row each
    # (on a store of a million rows, or a `token` column, a dense [d_sae, classes] array
    # that does not fit in memory); the atlas listed every sample as a label class
    import json

    cli, _ = run_cli
    args = ["analyze", "--sae", outputs.sae, "--acts", outputs.npy, "--out", tmp_path / "a"]
    args += ["--seeds", "1", "--n-bootstrap", "0", "--no-control", "--nulls", "permutation"]
    result = cli(*args, "--n-null", "2", "--label-column", "sample", "--max-density", "0.5")
    assert result.exit_code == 0, result.output
    assert "'sample' has 300 class(es) on the analysed rows" in caplog.text
    assert "label_classes" not in json.loads((tmp_path / "a" / "atlas.json").read_text())
