"""Analyses whose settings leave their tests nothing to compare (seventh sweep): each
stops with one line naming the setting, instead of a verdict that no test supports."""

from __future__ import annotations


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
