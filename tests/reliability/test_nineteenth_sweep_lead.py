"""Nineteenth sweep (the lead's): labels files of kinds `--labels` did not read as such,
and a sweep whose members are not the SAEs its sweep.json lists."""

import json

import numpy as np
import pytest


def test_a_json_list_of_labels_is_read_as_the_list(tmp_path):
    """`--labels labels.json` was read as lines of text: a list written over several lines
    (as `json.dump(..., indent=2)` writes it) gave the labels '[', '0,', '1,' and ']'."""
    from saeatlas.capture import load_labels

    path = tmp_path / "labels.json"
    path.write_text(json.dumps([0, 1, 1, 2], indent=2))
    assert load_labels(path).tolist() == [0, 1, 1, 2]
    path.write_text(json.dumps(["cat", "dog"]))
    assert load_labels(path).tolist() == ["cat", "dog"]


def _capture(cli, outputs, tmp_path, labels):
    return cli(
        *("capture", "--model", outputs.model, "--inputs", outputs.inputs, "--layers", "1"),
        *("--out", tmp_path / "store", "--labels", labels, "-q"),
    )


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("labels.json", '{"label": [0, 1]}', "must hold one JSON list of labels"),
        ("labels.json", "[0, 1, [2]]", "must hold one JSON list of labels"),
        ("labels.json", "[0, true]", "must hold one JSON list of labels"),
        ("labels.json", '[1, "1"]', "give labels that are all numbers or all strings"),
        ("labels.json", "[0, 1,", "is not JSON"),
        ("labels.json", "[]", "holds no labels"),
        ("labels.parquet", "PAR1", "Unsupported labels file"),
        ("labels.pt", "", "use .npy, .json (a list), .jsonl, .csv or .txt"),
    ],
)
def test_labels_files_that_are_no_list_of_labels_are_refused(
    outputs, run_cli, tmp_path, name, content, needle
):
    """Any file but .npy, .jsonl and .csv was read as lines of text: a .parquet or .pt file
    ended in "not UTF-8 text" or gave its bytes as labels, and a JSON object, a nested
    list or a one-line list of 300 labels became one label."""
    cli, one_line_error = run_cli
    labels = tmp_path / name
    labels.write_text(content)
    one_line_error(_capture(cli, outputs, tmp_path, labels), needle)
    assert not (tmp_path / "store").exists()


def test_a_json_list_of_labels_labels_the_capture(outputs, run_cli, tmp_path):
    """The same list as a .json file and as a .npy array labels the store alike."""
    from saeatlas.store import ActivationStore

    cli, _ = run_cli
    labels = np.arange(300) % 3
    (tmp_path / "labels.json").write_text(json.dumps(labels.tolist()))
    r = _capture(cli, outputs, tmp_path, tmp_path / "labels.json")
    assert r.exit_code == 0, r.output
    store = ActivationStore.open(tmp_path / "store")
    np.testing.assert_array_equal(store.rows(["label"]).column("label").to_numpy(), labels)


def test_a_sweep_member_of_another_setting_than_listed_is_refused(outputs, run_cli, tmp_path):
    """`analyze --sweep DIR` took each member folder as the SAE of the value sweep.json
    lists for it: a member of k 4 under `k-8` (a sweep.json edited by hand, or a sweep
    rewritten with `--overwrite` between the analysis reading its sweep.json and its
    members) was reported as the modules at k 8."""
    import shutil

    cli, one_line_error = run_cli
    sweep = tmp_path / "sweep"
    shutil.copytree(outputs.sae, sweep / "k-8" / "seed-0")  # trained with k 4
    points = [{"value": 8, "path": "k-8/seed-0"}]
    (sweep / "sweep.json").write_text(json.dumps({"over": "k", "points": points}))
    args = ("--sae", outputs.sae, "--acts", outputs.store, "--out", tmp_path / "atlas")
    one_line_error(
        cli("analyze", *args, "--sweep", sweep, "--seeds", "1"),
        "sweep's member 8 (",
        "has k 4, not the 8 the sweep lists for it",
    )
    assert not (tmp_path / "atlas").exists()


def test_an_adjusted_ablation_p_edited_by_hand_is_refused(run_cli, tmp_path):
    """`ablation_q`, the p the causal count reads, edited in modules.parquet (with the
    count in atlas.json to match) made a module hurt the loss that its own `ablation_p`
    says does not; it must be `ablation_p` adjusted over the modules."""
    import pandas as pd

    from saeatlas.structure.atlas import Atlas

    units = pd.DataFrame(
        {"unit": range(4), "layer": "a", "index": range(4), "module": [0, 0, 1, 1]}
    )
    modules = pd.DataFrame(
        {
            "module": [0, 1],
            "n_units": [2, 2],
            "ablation_effect": [0.3, 0.0],
            "ablation_p": [0.02, 0.5],
            "ablation_q": [0.04, 0.5],
        }
    )
    features = pd.DataFrame({"feature": range(2), "module": [0, 1]})
    atlas = Atlas(units, features, modules, {"n_modules": 2, "layers": ["a"]})
    path = atlas.save(tmp_path / "atlas")  # consistent: saved
    table = pd.read_parquet(path / "modules.parquet")
    table["ablation_q"] = [0.04, 0.04]
    table.to_parquet(path / "modules.parquet", index=False)
    cli, one_line_error = run_cli
    one_line_error(
        cli("report", path), "`ablation_q` of modules.parquet", "not its `ablation_p` adjusted"
    )
