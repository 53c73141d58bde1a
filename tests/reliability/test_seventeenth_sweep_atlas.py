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
