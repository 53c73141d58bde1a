"""What a report reads beside the atlas (eighth sweep): the store atlas.json names,
moved or deleted since the analysis. The page is still written from the atlas's own
files and says what it could not read, instead of that nothing was recorded."""

from __future__ import annotations

import shutil


def test_a_report_of_an_atlas_whose_store_moved_says_so(tmp_path, outputs):
    # the page said the model was "not recorded (no `model` in atlas.json or the
    # store's manifest)", though the manifest that records it had only moved
    from saeatlas.report.data import load_report_data
    from saeatlas.report.summary import header_facts
    from saeatlas.structure import AtlasConfig, map_structure

    store = shutil.copytree(outputs.store, tmp_path / "store")
    cfg = AtlasConfig(n_null=2, nulls=("permutation",), n_examples=2)
    atlas = map_structure(outputs.sae, store, cfg).save(tmp_path / "atlas")
    model = {f.label: f.value for f in header_facts(load_report_data(atlas))}["Model"]
    assert model == outputs.model
    shutil.move(store, tmp_path / "moved")
    fact = next(f for f in header_facts(load_report_data(atlas)) if f.label == "Model")
    assert fact.missing and f"store '{store}', whose manifest names it, is not there" in fact.value
