"""The seventeenth hostile sweep's cases in analysis, atlas files, the report, interop,
export, evaluate and the Python API: each failed (a wrong or misleading result, a
traceback or no word) before its fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def test_a_regex_over_nnsight_paths_names_the_layers_a_glob_does(tmp_path):
    """On an nnsight wrapper `model.h.*` named the wrapped module's `h.0` and `h.1`, but
    the regex `re:model\\.h\\.\\d+` over the same paths was refused ("No module ...
    matches"): only globs and names were read as nnsight's paths. Both now record the
    layers (and activations) of the model captured bare."""
    nnsight = pytest.importorskip("nnsight")
    from saeatlas.capture import capture_activations, resolve_hookpoints

    torch.manual_seed(0)
    net = torch.nn.Sequential()
    net.add_module("h", torch.nn.ModuleList([torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)]))
    net.forward = lambda x: net.h[1](torch.relu(net.h[0](x)))
    wrapped = nnsight.NNsight(net)
    glob = [hp.name for hp in resolve_hookpoints(wrapped, ["model.h.*"])]
    assert [hp.name for hp in resolve_hookpoints(wrapped, [r"re:model\.h\.\d+"])] == glob
    x = torch.randn(8, 3)
    bare = capture_activations(net, x, [r"re:h\.\d+"], tmp_path / "bare", progress=False)
    got = capture_activations(wrapped, x, [r"re:model\.h\.\d+"], tmp_path / "w", progress=False)
    assert [l.name for l in got.layers] == [l.name for l in bare.layers] == ["h.0", "h.1"]
    torch.testing.assert_close(got.read(), bare.read())


@pytest.mark.parametrize(
    "table, column, needle",
    [
        (
            "modules",
            "z",
            "must hold numbers (finite, or NaN where not measured), not float64 such as inf",
        ),
        (
            "features",
            "mean_activation",
            "(finite, or NaN where not measured), not float64 such as -inf",
        ),
        ("features", "top_unit_weights", "must hold lists of numbers, each finite"),
    ],
)
def test_an_infinite_figure_edited_into_a_table_is_refused(
    two_modules_atlas, tmp_path, edited_table_refused, table, column, needle
):
    """A `z` of inf edited into modules.parquet was loaded and shown as "significant (z
    inf, ...)"; no analysis writes an Inf (a figure it cannot measure is NaN), so a table
    holding one is refused by name, as a column of another kind is."""
    atlas = two_modules_atlas(tmp_path / "atlas")

    def change(frame):
        n = len(frame)
        if column == "top_unit_weights":
            frame[column] = [[0.5, np.inf]] * n
        else:
            frame[column] = [0.0] * (n - 1) + [np.inf if column == "z" else -np.inf]
        if column == "z":
            frame["p"] = 0.5
        return frame

    edited_table_refused(atlas, table, change, needle)


def test_token_ids_recorded_as_a_layer_are_refused(tmp_path, run_cli):
    """TransformerLens's `embed.hook_in` (and an embedding's `:input` in any model) gives
    the token ids, [batch, seq] integers; they were stored as activations, one row per
    sample and one "unit" per position. Integers shaped as the inputs' tokens are refused,
    naming what to record instead; the embedding's output is recorded as before (the
    bridge's own hooks: tests/capture/test_transformer_lens.py)."""
    cli, one_line_error = run_cli
    (tmp_path / "m.py").write_text(
        "import torch\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Embedding(20, 4), torch.nn.Linear(4, 3))\n"
    )
    np.save(tmp_path / "ids.npy", np.random.default_rng(0).integers(0, 20, (6, 5)))
    common = ("capture", "--model", f"{tmp_path / 'm.py'}:build", "--inputs", tmp_path / "ids.npy")
    one_line_error(
        cli(*common, "--layers", "0:input", "--out", tmp_path / "ids", "-q"),
        "Layer '0:input' gives int64 values of shape [6, 5], the inputs' [batch, seq] tokens",
        "not activations",
    )
    assert not (tmp_path / "ids").exists()
    r = cli(*common, "--layers", "0", "--out", tmp_path / "emb", "-q")
    assert r.exit_code == 0, r.output


def test_ablation_labels_other_than_the_stores_are_refused(outputs, tmp_path, run_cli):
    """`analyze --labels` is the ablation's loss target and per-label split, while the
    atlas's label profiles are of the labels the store recorded. Labels shifted by one
    against the store's, for the same inputs, were taken without a word: the report's
    per-label ablation table then named other samples by the profiles' labels. They are
    refused before the analysis; the store's own labels (as numbers or as text, or one
    class index per recorded class name) and the labels of other inputs (a held-out set)
    are taken."""
    from saeatlas.errors import ConfigError
    from saeatlas.store import ActivationStore
    from saeatlas.structure.causal.ablation_inputs import check_store_labels

    cli, one_line_error = run_cli
    x = np.load(outputs.inputs)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "shifted.npy", (y + 1) % 3)
    store = tmp_path / "store"
    model = ("--model", outputs.model, "--inputs", outputs.inputs)
    r = cli(
        "capture",
        *model,
        "--labels",
        tmp_path / "y.npy",
        "--layers",
        "1",
        "3",
        "--out",
        store,
        "-q",
    )
    assert r.exit_code == 0, r.output
    one_line_error(
        cli(
            "analyze",
            "--sae",
            outputs.sae,
            "--acts",
            store,
            "--out",
            tmp_path / "atlas",
            *model,
            "--labels",
            tmp_path / "shifted.npy",
            "--loss",
            "cross-entropy",
            "-q",
        ),
        "are not the ones the store",
        "300 of 300 samples differ (sample 0: 2 here, 1 in the store)",
    )
    assert not (tmp_path / "atlas").exists()
    opened = ActivationStore.open(store)
    check_store_labels(opened, x, y)
    check_store_labels(opened, x, y.astype(str))
    check_store_labels(opened, x[::-1].copy(), (y + 1) % 3)  # other inputs, their labels
    # class names recorded, one class index per name given (the cross-entropy loss's)
    np.save(tmp_path / "names.npy", np.array(["a", "b", "c"])[y])
    r = cli(
        "capture",
        *model,
        "--labels",
        tmp_path / "names.npy",
        "--layers",
        "1",
        "--out",
        tmp_path / "named",
        "-q",
    )
    assert r.exit_code == 0, r.output
    named = ActivationStore.open(tmp_path / "named")
    check_store_labels(named, x, (y + 1) % 3)
    with pytest.raises(ConfigError, match="are not the ones the store"):
        check_store_labels(named, x, np.minimum(y, 1))  # two names under one index


def test_module_finders_and_api_calls_refuse_what_they_cannot_read(outputs):
    """A graph with NaN or Inf edge weights was partitioned into no module at all (the
    negative-weight check let NaN through); `modularity` with labels of another length
    ended in an IndexError and with float labels in NumPy's casting error;
    `make_planted` given a dict and `encode_store` given a path for the SAE in an
    AttributeError."""
    import scipy.sparse as sp

    from saeatlas.errors import ConfigError
    from saeatlas.structure import LeidenModules, encode_store, make_planted, modularity

    graph = sp.random(12, 12, density=0.4, random_state=0)
    graph = (graph + graph.T).tocsr()
    for bad in (np.nan, np.inf):
        edited = graph.copy()
        edited.data[::4] = bad
        with pytest.raises(ValueError, match="negative, NaN or Inf weights"):
            LeidenModules(random_state=0).fit(edited)
    for labels in (np.zeros(5, np.int64), np.zeros(12)):
        with pytest.raises(ValueError, match="Need 12 integer `labels`"):
            modularity(graph, labels)
    with pytest.raises(ConfigError, match="`config` must be a PlantedConfig, got dict"):
        make_planted({"n_rows": 100})
    with pytest.raises(ConfigError, match="`sae` must be a SparseAutoencoder, got PosixPath"):
        encode_store(outputs.sae, outputs.store)


@pytest.mark.parametrize("line", ["5", "null", '{"tokens": 64, "fvu": "low"}', '{"step": 3}'])
def test_training_curves_of_another_kind_leave_a_note_not_a_traceback(
    analysed, outputs, tmp_path, run_cli, line
):
    """A line of the SAE's metrics.jsonl that is no record of numbers (a number, null, a
    figure written as text) ended the report in a TypeError traceback, or drew text as a
    curve; records of no curve made a figure of no panels. The page now says why there
    are no training curves, as it does for a missing or unreadable file."""
    import json
    import shutil

    cli, _ = run_cli
    sae = shutil.copytree(outputs.sae, tmp_path / "sae")
    atlas = shutil.copytree(analysed, tmp_path / "atlas")
    summary = json.loads((atlas / "atlas.json").read_text())
    summary["sae"]["path"] = str(sae)
    (atlas / "atlas.json").write_text(json.dumps(summary))
    kept = "" if line.startswith('{"step"') else (sae / "metrics.jsonl").read_text()
    (sae / "metrics.jsonl").write_text(kept + line + "\n")
    r = cli("report", atlas)
    assert r.exit_code == 0, r.output
    page = (atlas / "report.html").read_text()
    assert "No training curves:" in page and (
        "is not one of numbers" in page or "records no fvu" in page
    )


@pytest.mark.parametrize(
    "path, value, needle",
    [
        (("n_rows_encoded",), -1, "`n_rows_encoded` in"),
        (("p",), 3, "`p` in"),
        (("sae", "k"), -1, "`sae.k` in"),
        (("nulls", 0, "p"), 2.0, "`nulls[0].p` in"),
    ],
)
def test_atlas_json_figures_out_of_their_range_are_refused(
    analysed, tmp_path, run_cli, path, value, needle
):
    """atlas.json's entries were checked for their kind only: a count of -1 or a p of 3
    edited by hand was shown as it stood ("Rows analysed -1", "k -1", "against -1 random
    unit sets"). Counts below 0 and p-values outside [0, 1] are refused by name."""
    import json
    import shutil

    cli, one_line_error = run_cli
    atlas = shutil.copytree(analysed, tmp_path / "atlas")
    summary = json.loads((atlas / "atlas.json").read_text())
    target = summary
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    (atlas / "atlas.json").write_text(json.dumps(summary))
    want = "must be 0 or more" if value == -1 else "must be from 0 to 1"
    one_line_error(cli("report", atlas), needle, f"{want}, got {value}")
    assert not (atlas / "report.html").exists()


def test_interop_calls_refuse_what_is_no_sae_or_export(outputs, tmp_path):
    """`read_batches` of a mistyped path or of a file gave an empty list (an export of no
    batch), and of a number ended in pathlib's TypeError; `split_by_layer` given a path
    ended in an AttributeError."""
    from saeatlas.errors import ConfigError
    from saeatlas.export import read_batches
    from saeatlas.sae.saelens import split_by_layer

    for where in (tmp_path / "nowhere", outputs.inputs):
        with pytest.raises(ConfigError, match="is not a directory; give the folder"):
            read_batches(where)
    with pytest.raises(ConfigError, match="`out` must be a path"):
        read_batches(5)
    with pytest.raises(ConfigError, match="`sae` must be a SparseAutoencoder, got PosixPath"):
        split_by_layer(outputs.sae)


@pytest.mark.parametrize("value", ["high", [0.5, 0.1]])
def test_feature_attribution_of_another_kind_is_refused(
    two_modules_atlas, tmp_path, edited_table_refused, value
):
    """The module cards rank a module's features by features.parquet's `attribution`,
    which went unchecked: edited to text it ranked them as text without a word, and to
    lists it ended the report in a ValueError traceback."""
    atlas = two_modules_atlas(tmp_path / "atlas")

    def change(frame):
        frame["attribution"] = [value] * len(frame)
        return frame

    edited_table_refused(atlas, "features", change, "`attribution` of features.parquet")


def test_import_saelens_of_a_saeatlas_sae_is_refused(outputs, tmp_path, run_cli):
    """`import-saelens` given a saeatlas SAE directory read its cfg.json as SAELens's and
    wrote "Imported a topk SAE" without its layer map and training facts (an SAE of no
    layers, read against any store of that width); a saeatlas `relu` SAE was refused as
    a SAELens architecture 'relu' that is not supported."""
    cli, one_line_error = run_cli
    one_line_error(
        cli("import-saelens", outputs.sae, "--out", tmp_path / "imported"),
        "is a saeatlas SAE directory, not a SAELens one",
    )
    assert not (tmp_path / "imported").exists()
