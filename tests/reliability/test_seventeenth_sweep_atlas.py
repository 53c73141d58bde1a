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
        ("modules", "z", "must hold numbers (finite, or NaN where not measured), not float64 such as inf"),
        ("features", "mean_activation", "(finite, or NaN where not measured), not float64 such as -inf"),
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
