"""Twelfth hostile sweep, analysis side: atlas files, the report and the interop paths
on inputs the earlier sweeps did not try."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch


def _many_modules(path, n_modules: int, n_units: int, n_layers: int = 4):
    """An atlas of ``n_modules`` modules over ``n_units`` units (tables alone: no store)."""
    from saeatlas.structure.atlas import Atlas

    rng = np.random.default_rng(0)
    layers = [f"blocks.{i}.mlp" for i in range(n_layers)]
    per = n_units // n_layers
    units = pd.DataFrame(
        {
            "unit": np.arange(per * n_layers),
            "layer": np.repeat(layers, per),
            "index": np.tile(np.arange(per), n_layers),
            "module": rng.integers(-1, n_modules, per * n_layers),
        }
    )
    feature_module = np.arange(-1, n_modules)
    modules = pd.DataFrame(
        {
            "module": np.arange(n_modules),
            "n_units": np.bincount(units["module"][units["module"] >= 0], minlength=n_modules),
            "n_features": np.ones(n_modules, dtype=np.int64),
        }
    )
    features = pd.DataFrame({"feature": np.arange(n_modules + 1), "module": feature_module})
    summary = {"n_modules": n_modules, "layers": layers}
    return Atlas(units=units, features=features, modules=modules, summary=summary).save(path)


def test_module_cards_of_many_modules_list_each_modules_own_units(tmp_path):
    # each module's card filtered every unit of the atlas: 38 s of the 104 s a report of
    # 2,000 modules and 50,000 units took (the README's figures; its cards now take 5 s).
    # The cards, now split by module once, must list what filtering each gave.
    from saeatlas.report.cards import UNITS_PER_LAYER, module_cards
    from saeatlas.report.data import load_report_data

    data = load_report_data(_many_modules(tmp_path / "atlas", 400, 20_000))
    cards = module_cards(data, {})
    units = data.atlas.units
    assert len(cards) == 400
    for card in cards[:: len(cards) // 7]:  # the same members, layer by layer
        mine = units[units["module"] == card.module]
        shown = [
            (layer, [u for u, _ in listed], more) for layer, listed, more in card.units_by_layer
        ]
        want = [
            (layer, sub.index[:UNITS_PER_LAYER].tolist(), max(0, len(sub) - UNITS_PER_LAYER))
            for layer, sub in mine.groupby("layer", sort=False)
        ]
        assert shown == want, card.module


class _LogOfUnit(torch.nn.Module):
    """Two logits from four units; the second is log(unit 3), -inf once unit 3 is 0."""

    def __init__(self) -> None:
        super().__init__()
        self.act = torch.nn.Identity()

    def forward(self, x):
        h = self.act(x)
        return torch.stack([h[:, :3].sum(1), torch.log(h[:, 3])], dim=1)


def test_an_ablation_whose_random_sets_make_the_loss_nan_is_undefined_not_significant(caplog):
    # a random unit set holding unit 3 made the loss NaN: the NaN draws counted as draws the
    # module beat, and module 0 (units 0 and 1, no NaN of its own) got p 1/(n_random + 1)
    from saeatlas.store import LayerSpec
    from saeatlas.structure.causal.ablation import ablate_modules

    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 4, generator=g) + 0.5
    labels = np.arange(64) % 2
    layers = (LayerSpec("act", 0, 4, (4,), "sample"),)
    res = ablate_modules(
        _LogOfUnit(), x, layers, np.array([0, 0, -1, -1]), labels=labels, mode="zero", n_random=8
    )
    assert np.isnan([res.effect[0], res.z[0], res.p[0]]).all(), (res.effect, res.p)
    assert "module(s) [0" in caplog.text


@pytest.mark.parametrize("edit", ["atlas.json's layers reversed", "units interleaved"])
def test_layers_out_of_the_order_of_the_units_are_refused(tmp_path, edit):
    # atlas.json's `layers` edited into another order was read: the ablation then mapped
    # unit numbers to another layer's store columns, and the layer profiles were drawn
    # under other layers' names
    import json

    from saeatlas.structure.atlas import Atlas
    from saeatlas.structure.atlas_format import AtlasFileError

    path = _many_modules(tmp_path / "atlas", 3, 40)
    if edit.startswith("atlas.json"):
        summary = json.loads((path / "atlas.json").read_text())
        summary["layers"] = summary["layers"][::-1]
        (path / "atlas.json").write_text(json.dumps(summary))
    else:  # each layer's units still numbered 0, 1, ... but blocks.0 and blocks.1 alternate
        units = pd.read_parquet(path / "units.parquet")
        units.loc[:19, "layer"] = ["blocks.0.mlp", "blocks.1.mlp"] * 10
        units.loc[:19, "index"] = np.repeat(np.arange(10), 2)
        units.to_parquet(path / "units.parquet")
    with pytest.raises(AtlasFileError, match="not one after another as atlas.json lists them"):
        Atlas.load(path)
