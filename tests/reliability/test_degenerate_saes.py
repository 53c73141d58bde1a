"""SAEs that are legal but degenerate (ninth sweep): decoder rows of norm 0, an encoder
that never fires. The atlas and its exports must say what the weights say, not list
units a feature does not write."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch


@pytest.fixture(scope="module")
def zero_rows(outputs, tmp_path_factory):
    """The protected SAE with the decoder rows of features 0-4 set to 0, and its atlas."""
    from saeatlas.sae import SparseAutoencoder
    from saeatlas.structure import AtlasConfig, map_structure

    root = tmp_path_factory.mktemp("zero-rows")
    sae = SparseAutoencoder.load(outputs.sae)
    with torch.no_grad():
        sae.W_dec[:5] = 0
        sae.W_enc[:, 3] = 0  # and one feature that reads nothing (its bias alone fires it)
    sae.save(root / "sae")
    cfg = AtlasConfig(n_null=2, nulls=("permutation",), n_examples=2)
    map_structure(root / "sae", outputs.store, cfg).save(root / "atlas")
    return root


def test_a_feature_that_writes_nothing_lists_no_units(zero_rows):
    """Its `top_units` were units 0-4 at weight 0 (argsort of a row of zeros), and the
    report named it among their writers."""
    f = pd.read_parquet(zero_rows / "atlas" / "features.parquet")
    for row in f.itertuples():
        assert len(row.top_units) == len(row.top_unit_weights)
        assert all(w != 0 for w in row.top_unit_weights), row
        assert all(w != 0 for w in row.top_read_weights), row
    assert all(len(t) == 0 for t in f.top_units[:5]) and all(len(t) for t in f.top_units[5:])
    assert len(f.top_read_units[3]) == 0

    from saeatlas.report.data import load_report_data
    from saeatlas.report.html import unit_writers

    writers = unit_writers(load_report_data(zero_rows / "atlas"))
    assert not {0, 1, 2, 3, 4} & {fid for w in writers for fid in w}


def test_neuronpedia_aligns_a_feature_with_no_unit_it_does_not_write(zero_rows, tmp_path):
    from saeatlas.export import export_neuronpedia

    atlas = shutil.copytree(zero_rows / "atlas", tmp_path / "atlas")
    with pytest.warns(UserWarning, match="reads 2 layers"):
        files = export_neuronpedia(atlas, tmp_path / "np", config=_small())
    for feature in json.loads(files[0].read_text())["features"]:
        values = feature["neuron_alignment_values"]
        assert len(values) == len(feature["neuron_alignment_indices"])
        assert all(v != 0 for v in values), feature["feature_index"]
        if feature["feature_index"] < 5:
            assert values == []


def _small():
    from saeatlas.export.neuronpedia import NeuronpediaConfig

    return NeuronpediaConfig(n_examples=2, context=2, n_bins=4)


def test_zero_weights_are_dropped_in_order():
    from saeatlas.structure.describe.tables import _nonzero

    units, weights = _nonzero(
        np.array([[4, 1, 0], [2, 3, 1]]), np.array([[0.5, -0.2, 0.0], [0.0, 0.0, 0.0]])
    )
    assert [list(u) for u in units] == [[4, 1], []]
    assert [list(w) for w in weights] == [[0.5, -0.2], []]
