"""What a report reads beside the atlas (eighth sweep): the store atlas.json names,
moved or deleted since the analysis. The page is still written from the atlas's own
files and says what it could not read, instead of that nothing was recorded."""

from __future__ import annotations

import shutil

import pytest


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


def test_a_module_card_says_which_p_is_adjusted_for_the_modules_tested():
    # the card set the module's p (Benjamini-Hochberg over the modules, the largest over
    # the nulls) beside each null's own unadjusted p without a word: 0.03 under 0.004
    from saeatlas.report.cards import _stats

    row = {"z": 3.1, "p": 0.03, "z_dictionary": 3.1, "p_dictionary": 0.004}
    stats = dict(_stats(row, ["dictionary"]))
    assert stats["significance (strictest)"].endswith("(adjusted for the modules tested)")
    assert stats["  vs dictionary null"].endswith("p 0.004 (unadjusted)")


def test_a_module_card_says_what_its_stability_measures():
    # an ensemble's module showed "stability (Jaccard) 1.00 (–)": a fraction of members
    # read as a Jaccard, with a dash for the verdict only older atlases have
    from saeatlas.report.cards import _stats

    ensemble = dict(_stats({"stability": 0.96}, []))["stability"]
    assert ensemble == "0.96 of the ensemble's members recover it (Jaccard ≥ 0.5)"
    older = dict(_stats({"stability": 0.41, "stability_verdict": "dissolved"}, []))
    assert older["stability"] == "0.41 (best-match Jaccard over row resamples: dissolved)"


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


def test_training_curves_of_an_sae_trained_again_at_its_path_are_not_shown(tmp_path, outputs):
    # the page showed the curves of whatever SAE was at the recorded path: one trained
    # again there since the analysis (another seed) lent the atlas its training curves
    from saeatlas.report.data import load_report_data
    from saeatlas.sae import SparseAutoencoder
    from saeatlas.structure import AtlasConfig, map_structure

    sae = shutil.copytree(outputs.sae, tmp_path / "sae")
    cfg = AtlasConfig(n_null=2, nulls=("permutation",), n_examples=2)
    atlas = map_structure(sae, outputs.store, cfg).save(tmp_path / "atlas")
    assert load_report_data(atlas).training is not None
    other = SparseAutoencoder.load(sae)
    other.W_dec.data.mul_(-1.0)
    other.save(sae, files={"metrics.jsonl": (sae / "metrics.jsonl").read_bytes()})
    data = load_report_data(atlas)
    assert data.training is None
    assert "is not the one the atlas was made from" in data.training_note
    shutil.rmtree(sae)
    assert "is not there (moved or deleted)" in load_report_data(atlas).training_note


def test_a_sweep_trained_on_other_rows_is_not_shown(tmp_path):
    # a sweep beside the atlas of the same layers but another store's rows was shown as
    # the reason for the atlas's sparsity
    import json

    from saeatlas.errors import ConfigError
    from saeatlas.report.data import _find_sweep

    sweep = tmp_path / "sweep"
    (sweep / "k-4").mkdir(parents=True)
    member = {"layers": [{"name": "3"}], "metadata": {"rows_digest": "0123"}}
    (sweep / "k-4" / "cfg.json").write_text(json.dumps(member))
    point = {"value": 4, "path": "sweep/k-4", "fvu": 0.2, "l0": 4, "dead_fraction": 0.0}
    point.update(stability=None, on_front=True)
    raw = {"over": "k", "rule": "knee", "heldout_rows": 10, "recommended": 0, "points": [point]}
    (sweep / "sweep.json").write_text(json.dumps(raw))
    summary = {"layers": ["3"], "sae": {"rows_digest": "4567"}}
    found, note = _find_sweep(tmp_path / "atlas", summary, None, None)
    assert found is None and "trained on other rows than the atlas's SAE" in note
    with pytest.raises(ConfigError, match="other rows than the atlas's SAE"):
        _find_sweep(tmp_path / "atlas", summary, sweep, None)
    summary["sae"]["rows_digest"] = "0123"
    assert _find_sweep(tmp_path / "atlas", summary, None, None)[0] is not None
    # the SAE at the recorded path, a member, is not the atlas's: no point is marked
    summary["sae"]["path"] = str(sweep / "k-4")
    assert _find_sweep(tmp_path / "atlas", summary, None, None)[0].atlas_point == 0
    assert _find_sweep(tmp_path / "atlas", summary, None, "moved")[0].atlas_point is None
