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


def test_a_module_preferring_the_empty_label_says_so():
    # a label column whose classes include "" (an empty string is a class of its own):
    # a module preferring it was shown as preferring "–", as a module with no preference
    from saeatlas.report.cards import _stats, _table_cells

    row = {"selectivity": 0.4, "preferred_label": "", "selectivity_p": 0.01}
    assert dict(_stats(row, []))["label selectivity"].startswith('0.40, prefers ""')
    assert _table_cells(row)["label"] == '""'
    assert _table_cells({**row, "preferred_label": None})["label"] == "–"


def test_a_report_page_under_a_file_is_refused_before_the_work(tmp_path, run_cli, outputs):
    # `report --out FILE/page.html` drew every figure, then stopped with "Cannot write or
    # read 'FILE': File exists. Check free space and permissions ... capture and train
    # continue with --resume"
    cli, one_line = run_cli
    (tmp_path / "notes.txt").write_text("mine")
    one_line(cli("report", outputs.atlas, "--out", tmp_path / "notes.txt" / "r.html"),
             "notes.txt' exists and is not a directory")  # fmt: skip
    assert not (outputs.atlas / "figures").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_store_captured_again_since_the_analysis_names_no_model(tmp_path, outputs, make_store):
    # the store was captured again at its path from another model: the page gave the
    # atlas that model's name (and its heads' unit names), read from the new manifest
    from saeatlas.report.data import load_report_data
    from saeatlas.report.summary import header_facts
    from saeatlas.structure import AtlasConfig, map_structure

    store = shutil.copytree(outputs.store, tmp_path / "store")
    cfg = AtlasConfig(n_null=2, nulls=("permutation",), n_examples=2)
    atlas = map_structure(outputs.sae, store, cfg).save(tmp_path / "atlas")
    assert load_report_data(atlas).model == outputs.model
    shutil.rmtree(store)
    make_store(store, rows=40)  # another model's rows, at the atlas's store's path
    fact = next(f for f in header_facts(load_report_data(atlas)) if f.label == "Model")
    assert fact.missing and "is not the one the atlas was made from" in fact.value
    assert str(store) in fact.value
