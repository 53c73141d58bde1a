"""Bad inputs to the analysis side (analyze, report, run configs): one line, exit 1,
nothing written, and never a silently wrong atlas."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest

from saeatlas.sae import SparseAutoencoder
from saeatlas.store.manifest import LayerSpec


def _seed_like(outputs, path, **change):
    """An SAE saved at ``path``: the protected one with ``change`` made to its config."""
    sae = SparseAutoencoder.load(outputs.sae)
    cfg = replace(sae.cfg, **change)
    SparseAutoencoder(cfg).save(path)
    return path


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"d_sae": 32}, "has d_sae 32, the analysed SAE 24"),
        ({"k": 2}, "has k 2, the analysed SAE 4"),
        (
            {"d_in": 8, "layers": (LayerSpec("3", 0, 8),)},
            "reads the layers [('3', 8)] (name, units), the analysed SAE [('1', 10), ('3', 8)]",
        ),
    ],
)
def test_a_seed_sae_unlike_the_analysed_one_is_refused(tmp_path, guarded, run_cli, change, needle):
    cli, one_line = run_cli
    seed = _seed_like(guarded, tmp_path / "seed", **change)
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", tmp_path / "a"]
    one_line(cli(*args, "--seeds", "2", "--seed-sae", seed), "The seed SAE", needle)
    assert not (tmp_path / "a").exists()


def test_the_analysed_sae_or_a_repeated_one_is_no_seed_sae(tmp_path, guarded, run_cli):
    """A member counted twice would make every module look reproducible."""
    cli, one_line = run_cli
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", tmp_path / "a"]
    one_line(cli(*args, "--seeds", "2", "--seed-sae", guarded.sae), "is the analysed SAE")
    seed = guarded.root / "sae-seed1"
    one_line(cli(*args, "--seeds", "3", "--seed-sae", seed, seed), "another seed SAE again")
    copy = shutil.copytree(guarded.sae, tmp_path / "copy")
    one_line(cli(*args, "--seeds", "2", "--seed-sae", copy), "the analysed SAE's own weights")
    # a copy of a seed SAE under another name is that SAE again
    twin = shutil.copytree(seed, tmp_path / "seed-copy")
    one_line(cli(*args, "--seeds", "3", "--seed-sae", seed, twin), "have the same weights")


def test_more_seed_saes_than_seeds_is_refused(tmp_path, guarded, run_cli):
    """Every --seed-sae was taken into the ensemble and --seeds passed over without a word."""
    cli, one_line = run_cli
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", tmp_path / "a"]
    seeds = [guarded.root / "sae-seed1", guarded.root / "sae-seed2"]
    needle = "--seed-sae gives 2 SAE(s), but --seeds 2 counts 1 besides --sae; give --seeds 3"
    one_line(cli(*args, "--seeds", "2", "--seed-sae", *seeds), needle)


def test_a_stale_seed_directory_is_not_reused_as_the_null_source(tmp_path, guarded, run_cli):
    cli, one_line = run_cli
    sae = _seed_like(guarded, tmp_path / "sae", d_sae=32)  # retrained wider; seed1 is old
    _seed_like(guarded, tmp_path / "sae-seed1")
    args = ["analyze", "--sae", sae, "--acts", guarded.store, "--out", tmp_path / "a"]
    # its recorded settings match (copied), its dictionary does not: named as stale
    one_line(cli(*args, "--seeds", "1", "--n-null", "2", "-q"), "sae-seed1' has d_sae 24", "stale")


@pytest.mark.parametrize(
    "text,needle",
    [
        # once allocated 19 GiB for the draws' seeds before any work
        ("n_null: 100000000000\n", "`n_null` must be in [0, 10000]"),
        ("n_bootstrap: 100000\n", "`n_bootstrap` must be in [0, 100]"),
        ("resolutions: [1.0, 1]\n", "`resolutions` has repeated values: [1.0, 1.0]"),
        ("nulls: [dictionary, dictionary]\n", "`nulls` has repeated values"),
        # a traceback from the Leiden finder's RandomState, after the whole encoding
        (f"seed: {2**32}\n", "`seed` must be in [0, 4294967295]"),
    ],
)
def test_bad_analysis_settings(tmp_path, guarded, run_cli, text, needle):
    cli, one_line = run_cli
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", tmp_path / "a"]
    one_line(cli(*args, "--config", cfg), needle)


def test_too_few_rows_to_analyze(tmp_path, save_acts, guarded, run_cli):
    """One row once ended in numpy's 'Eigenvalues did not converge'."""
    cli, one_line = run_cli
    args = ["analyze", "--sae", guarded.sae, "--out", tmp_path / "a"]
    one_line(cli(*args, "--acts", save_acts(np.load(guarded.npy)[:1])), "1 rows", "Capture more")
    one_line(cli(*args, "--acts", guarded.store, "--max-rows", "3"), "--max-rows must be >= 16")
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    "edit,needle",
    [
        ([1, 2], "must hold a JSON object, not list"),  # was a TypeError traceback
        ({"nulls": "x"}, "`nulls` in"),  # was a TypeError traceback
        ({"nulls": [1]}, "`nulls[0]` in"),
        ({"ensemble": 5}, "`ensemble` in"),  # was an AttributeError traceback
        ({"n_modules": "three"}, "must be an integer, got 'three'"),
        ({"significant": "yes"}, "must be true or false, got 'yes'"),
        ({"modularity": "high"}, "must be an integer or a number or null"),
        ({"verdict": "lots"}, "`verdict` in"),
        # inside its objects: each was a traceback, half-way through the page
        ({"nulls": [{"null": "x", "z": "big", "p": 0.1}]}, "`nulls[0].z` in"),
        ({"nulls": [{"null": "x", "p": 0.1}]}, ("`nulls[0]` in", "has no `z`")),
        ({"sae": {"d_sae": "24"}}, ("`sae.d_sae` in", "must be an integer or null, got '24'")),
        ({"ensemble": {"levels": [[1]]}}, ("`ensemble.levels[0]` in", "must be an object")),
        ({"ensemble": {"n_bootstrap": "2"}}, "`ensemble.n_bootstrap` in"),
        ({"ensemble": {"levels": [{"scale": "x"}]}}, "`ensemble.levels[0].scale` in"),
        ({"stability": {"thresholds": {"stable": "x"}}}, "`stability.thresholds.stable` in"),
        ({"control": {"z": {"permutation": "high"}}}, "`control.z.permutation` in"),
        ({"control": {"real": []}}, "`control.real` in"),
        ({"sweep_modules": {"over": "k", "values": [1, 2]}}, "has no `neighbour_ari`"),
        ({"cross_check": {"raw": {"partition_significant": "no"}}}, "`cross_check.raw.part"),
        ({"layers": [1, 2]}, ("`layers[0]` in", "must be text, got 1")),
        # an atlas of a newer format was read as if it were this one's
        ({"format_version": 2}, ("has format_version 2; this saeatlas reads 1 to 1", "Upgrade")),
        ({"format_version": "1"}, "`format_version` in"),
    ],
)
def test_an_edited_atlas_json_is_refused_by_report(tmp_path, outputs, run_cli, edit, needle):
    cli, one_line = run_cli
    needle = needle if isinstance(needle, tuple) else (needle,)
    atlas = shutil.copytree(outputs.atlas, tmp_path / "atlas")
    summary = json.loads((atlas / "atlas.json").read_text())
    (atlas / "atlas.json").write_text(
        json.dumps(edit if isinstance(edit, list) else {**summary, **edit})
    )
    one_line(cli("report", atlas), *needle, "rerun `saeatlas analyze` with --overwrite")
    assert not (atlas / "report.html").exists()


def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path, outputs, run_cli):
    """PyYAML keeps the last of two keys silently: a second `analyze:` section dropped
    the first, and the run went on with settings nobody wrote."""
    cli, one_line = run_cli
    p = tmp_path / "run.yaml"
    p.write_text(
        f"model: {outputs.model}\ninputs: {outputs.inputs}\nlayers: ['1', '3']\n"
        "analyze: {n_null: 2}\nsweep: {enabled: false}\nanalyze: {seed: 1}\n"
    )
    one_line(cli("run", p, "--check"), "at line 6, column 1: the key 'analyze' is given twice")
    p.write_text("n_null: 2\nalpha: 0.01\nn_null: 3\n")
    args = ["analyze", "--sae", outputs.sae, "--acts", outputs.store, "--out", tmp_path / "a"]
    one_line(cli(*args, "--config", p), "the key 'n_null' is given twice")
    # YAML merge keys still work: the keys written override the merged ones
    p.write_text("base: &b {n_null: 2, seed: 1}\nanalyze:\n  <<: *b\n  n_null: 3\n")
    from saeatlas._config_cli import load_config_file

    assert load_config_file(p)["analyze"] == {"n_null": 3, "seed": 1}


@pytest.mark.parametrize("seeds", ["0", "-2"])
def test_validate_with_no_seed_is_an_error_not_an_empty_table(run_cli, seeds):
    cli, one_line = run_cli
    one_line(cli("validate", "--cases", "easy", "--seeds", seeds), "--seeds must be in [1, 100]")


def test_validate_refuses_a_case_given_twice(run_cli):
    """It was run twice, its rows listed twice in the table."""
    cli, one_line = run_cli
    one_line(cli("validate", "--cases", "easy", "null", "easy"), "--cases names ['easy'] more")


@pytest.mark.parametrize(
    "flags,needle",
    [
        # named a temporary file and told the user to capture more rows
        (["--rows", "5"], "--rows (5) must be at least 1024"),
        (["--rows", "1000"], "--rows (1000) must be at least 1024"),  # named --batch-size
        (["--d-sae", "8"], "--d-sae (8) must be at least 16"),
        (["--tokens", "10"], "--tokens (10) must be at least 1024"),
    ],
)
def test_validate_sizes_too_small_name_the_flag(run_cli, flags, needle):
    cli, one_line = run_cli
    one_line(cli("validate", "--cases", "easy", *flags), needle)


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--seeds", "0"], "--seeds must be in [1, 100]"),  # was taken as 1
        (["--seeds", "1000000000"], "--seeds must be in [1, 100]"),  # listed 1e9 directories
        (["--timeout", "0"], "--timeout must be a positive number"),
        (["--timeout", "nan"], "--timeout must be a positive number"),
        (["--ablation-draws", "-1"], "--ablation-draws must be in [2, 10000]"),  # a traceback
        (["--ablation-draws", "100000000000"], "--ablation-draws must be in [2, 10000]"),
        # refused by the ablation, after the whole analysis
        (["--ablation-mode", "zeros"], "Unknown --ablation-mode 'zeros'; expected one of"),
    ],
)
def test_bad_analyze_flags_fail_before_the_work(tmp_path, guarded, run_cli, flags, needle):
    """--ablation-draws -1 once failed with a numpy traceback after the whole analysis."""
    cli, one_line = run_cli
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", tmp_path / "a"]
    one_line(cli(*args, *flags), needle)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("manifest", ["[1]", '{"provenance": "x", "layers": ["1"]}'])
def test_a_damaged_store_manifest_does_not_stop_the_report(tmp_path, run_cli, manifest):
    """The report reads the atlas's store only for names: a manifest that is JSON but not
    a manifest's was an AttributeError traceback."""
    cli, _ = run_cli
    atlas = _atlas_of_one_module(tmp_path / "atlas")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "manifest.json").write_text(manifest)
    summary = json.loads((atlas / "atlas.json").read_text())
    (atlas / "atlas.json").write_text(json.dumps({**summary, "store": str(tmp_path / "store")}))
    r = cli("report", atlas)
    assert r.exit_code == 0 and (atlas / "report.html").is_file(), r.output


def test_report_of_a_file_names_it_as_no_atlas(tmp_path, outputs, run_cli):
    """It was called an output to choose again ('exists and is not a directory')."""
    cli, one_line = run_cli
    one_line(cli("report", outputs.inputs), "is not a directory; give the atlas directory")


@pytest.mark.parametrize("target", ["atlas.json", "units.parquet", "../notes.txt"])
def test_report_never_writes_over_a_file_that_is_not_a_report(
    tmp_path, outputs, run_cli, snapshot, target
):
    """`report ATLAS --out ATLAS/atlas.json` once replaced the atlas's summary with HTML."""
    cli, one_line = run_cli
    atlas = shutil.copytree(outputs.atlas, tmp_path / "atlas")
    (tmp_path / "notes.txt").write_text("keep")
    before = snapshot(tmp_path)
    one_line(
        cli("report", atlas, "--out", atlas / target), "is a file that is not a saeatlas report"
    )
    assert snapshot(tmp_path) == before
    from saeatlas.report.write import _is_report

    page = tmp_path / "old.html"
    page.write_text('<!DOCTYPE html>\n<meta name="generator" content="saeatlas 0.1.0">\n')
    assert _is_report(page) and not _is_report(atlas / "atlas.json")


def test_one_lock_per_output_however_it_is_spelled(tmp_path, monkeypatch):
    """`--out .` once locked './..lock' and, on release, removed '../.NAME.lock' (another
    writer's), so a writer of '.' and one of its full path did not exclude each other."""
    import subprocess
    import sys

    from saeatlas.store.lock import lock_path, output_lock

    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    monkeypatch.chdir(out)
    assert lock_path(".") == lock_path(out) == lock_path("sub/..") == tmp_path / ".out.lock"
    other = f"from saeatlas.store.lock import acquire; acquire({str(out)!r})"
    with output_lock("."):
        r = subprocess.run([sys.executable, "-c", other], capture_output=True, text=True)
        assert r.returncode == 1 and "is being written by process" in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["sub"]


def test_an_out_of_other_files_is_refused_before_the_analysis(tmp_path, guarded, run_cli, forbid):
    """`analyze --out SAE_DIR --overwrite` once ran the whole analysis before saving
    refused the folder."""
    import saeatlas.structure

    forbid(saeatlas.structure, "analyze")
    cli, one_line = run_cli
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--seeds", "1"]
    one_line(cli(*args, "--out", guarded.sae, "--overwrite"), "not an atlas's", "cfg.json")


def test_a_sweep_member_of_other_layers_is_refused(tmp_path, outputs):
    """It once failed after the analysis with sklearn's 'The labelings differ in length'."""
    from saeatlas.errors import ConfigError
    from saeatlas.structure import AtlasConfig, analyze

    member = _seed_like(outputs, tmp_path / "k-2", d_in=8, layers=(LayerSpec("3", 0, 8),))
    with pytest.raises(ConfigError, match=r"The sweep's member 2 \('.*k-2'\) reads the layers"):
        analyze(outputs.sae, outputs.store, AtlasConfig(), sweep=("k", [(2.0, member)]))


def test_report_refuses_a_sweep_of_other_layers(tmp_path):
    """The page said "k = 4 is the sweep's recommendation" for a sweep trained on another
    layer than the atlas's SAE."""
    from saeatlas.errors import ConfigError
    from saeatlas.report.data import _find_sweep

    sweep = tmp_path / "sweep"
    (sweep / "k-4").mkdir(parents=True)
    (sweep / "k-4" / "cfg.json").write_text(json.dumps({"layers": [{"name": "3"}]}))
    point = {"value": 4, "path": "sweep/k-4", "fvu": 0.2, "l0": 4, "dead_fraction": 0.0}
    point.update(stability=None, on_front=True)
    (sweep / "sweep.json").write_text(
        json.dumps(
            {"over": "k", "rule": "knee", "heldout_rows": 10, "recommended": 0, "points": [point]}
        )
    )
    summary = {"layers": ["1", "3"]}
    with pytest.raises(ConfigError, match=r"trained on the layers \['3'\], the atlas's SAE on"):
        _find_sweep(tmp_path / "atlas", summary, sweep, None)
    found, note = _find_sweep(tmp_path / "atlas", summary, None, None)  # sweep/ beside the atlas
    assert found is None and note.startswith("No sparsity sweep shown: the one found beside")
    summary["layers"] = ["3"]
    assert _find_sweep(tmp_path / "atlas", summary, sweep, None)[0] is not None


@pytest.mark.parametrize(
    "key,value",
    [("fvu", "x"), ("l0", None), ("value", "4"), ("stability", "high"), ("on_front", 1)],
)
def test_report_refuses_an_edited_sweep_point(tmp_path, key, value):
    """Each was a traceback from the Pareto figure, half-way through the report."""
    from saeatlas.errors import ConfigError
    from saeatlas.report.data import _read_sweep

    point = {"value": 4, "path": "sweep/k-4", "fvu": 0.2, "l0": 4, "dead_fraction": 0.0}
    point.update(stability=None, on_front=True)
    sweep = {"over": "k", "rule": "knee", "heldout_rows": 10, "recommended": 0}
    (tmp_path / "sweep.json").write_text(json.dumps({**sweep, "points": [point]}))
    assert _read_sweep(tmp_path, None, strict=True).points[0].fvu == 0.2
    (tmp_path / "sweep.json").write_text(json.dumps({**sweep, "points": [{**point, key: value}]}))
    with pytest.raises(ConfigError, match=rf"is unreadable \(.*`{key}` {re.escape(repr(value))}"):
        _read_sweep(tmp_path, None, strict=True)


def _atlas_of_one_module(path):
    """A small atlas whose files agree: one module of unit 0 and feature 0."""
    import pandas as pd

    from saeatlas.structure.atlas import Atlas
    from saeatlas.structure.inference.outcome import decide

    atlas = Atlas(
        units=pd.DataFrame(dict(unit=[0, 1], layer=["a", "a"], index=[0, 1], module=[0, -1])),
        features=pd.DataFrame(dict(feature=[0], module=[0], top_units=[[0, 1]])),
        modules=pd.DataFrame(dict(module=[0], n_units=[1], n_features=[1], significant=[True])),
        summary={"layers": ["a"]},
    )
    decide(atlas)
    atlas.save(path)
    Atlas.load(path)  # as written, it agrees with itself
    return path


@pytest.mark.parametrize(
    "name,change,needle",
    [
        # a module dropped by hand: the units still named it, and the page drew it grey
        ("modules", lambda m: m.iloc[:0], "names the module 0, not one of the 0 modules"),
        ("modules", lambda m: m.assign(module=m.module + 10), "numbers its 1 modules [10]"),
        ("units", lambda u: u.assign(module=[0, 7]), "names the module 7"),
        ("units", lambda u: u.assign(module=[0.0, 0.0]), "names the module 0.0"),
        ("units", lambda u: u.iloc[[0, 0, 1]], "must list each unit once"),
        ("units", lambda u: u.iloc[:0], "`top_units` of features.parquet"),  # an IndexError
        ("features", lambda f: f.assign(module=3), "names the module 3"),
        ("features", lambda f: f.assign(top_units=[None]), "must list units of units.parquet"),
        # floats were cast to unit numbers, then indexed a list in the report: a traceback
        ("features", lambda f: f.assign(top_units=[[0.0, 1.0]]), "must list units of units"),
        # a name for a list of names: the page listed the module's layers as a, c, t, 1
        ("modules", lambda m: m.assign(layers=["act1"]), "lists of layer names, not"),
        ("units", lambda u: u.assign(shared=[2, 0]), "`shared` of units.parquet"),
        # a plotly traceback
        ("modules", lambda m: m.assign(n_units=-3), "is [-3], but units.parquet puts [1]"),
        # columns of another kind, each a traceback half-way through the report
        ("units", lambda u: u.assign(index=[0.0, None]), "`index` of units.parquet"),
        ("units", lambda u: u.assign(membership=["1", "0"]), "must hold numbers from 0 to 1, not"),
        ("units", lambda u: u.assign(layer=[1, 2]), "`layer` of units.parquet"),
        ("features", lambda f: f.assign(top_unit_weights=["0.5"]), "lists of numbers"),
        ("modules", lambda m: m.assign(z=[3.0]), "`z` and `p` without the other"),
        ("modules", lambda m: m.assign(significant=["yes"]), "must hold true or false"),
        ("modules", lambda m: m.assign(layer_mass=["[0.6 0.4]"]), "`layer_mass` of modules"),
        # each drawn as it was, without a word: a feature twice or past the SAE's latents,
        # a unit of no layer the atlas read, a probability of 7
        ("features", lambda f: f.iloc[[0, 0]], "must list each feature once"),
        ("features", lambda f: f.assign(feature=f.feature + 30), "must list each feature once"),
        ("units", lambda u: u.assign(layer=["a", "b"]), "names the layer 'b', not one of"),
        ("units", lambda u: u.assign(index=[0, 5]), "layer 'a' [0, 5]"),
        (
            "modules",
            lambda m: m.assign(z=[2.0], p=[7.0]),
            "numbers from 0 to 1, not float64 such as 7.0",
        ),
        ("units", lambda u: u.assign(membership=[1.0, -0.5]), "such as -0.5"),
    ],
)
def test_report_refuses_atlas_tables_that_disagree(
    tmp_path, edited_table_refused, name, change, needle
):
    edited_table_refused(_atlas_of_one_module(tmp_path / "atlas"), name, change, needle)


@pytest.mark.parametrize(
    "name,table,needle",
    [
        ("flows", {"source_module": ["0"], "target_module": [0]}, "`source_module` of flows"),
        ("flows", {"target_module": [0]}, "lacks the columns ['source_module']"),  # KeyError
        ("examples", {"kind": ["module"], "id": [0], "rank": [0]}, "lacks the columns ['row',"),
        ("examples", dict(kind=["module"], id=[0.5], rank=[0], row=[0], activation=[1.0]), "`id`"),
    ],
)
def test_report_refuses_optional_tables_of_other_columns(tmp_path, run_cli, name, table, needle):
    """Each was a traceback half-way through the report (pandas, numpy)."""
    import pandas as pd

    cli, one_line = run_cli
    atlas = _atlas_of_one_module(tmp_path / "atlas")
    pd.DataFrame(table).to_parquet(atlas / f"{name}.parquet", index=False)
    one_line(cli("report", atlas), needle, "saeatlas analyze`")


@pytest.mark.parametrize(
    "edit,needle",
    [
        ({"n_modules": 5}, "says n_modules 5, but modules.parquet has 1"),
        ({"n_significant_modules": 0}, "says n_significant_modules 0, but its tables give 1"),
        ({"verdict": "no_significant_structure", "significant": False}, "but its tables give"),
    ],
)
def test_report_refuses_a_verdict_its_tables_contradict(tmp_path, run_cli, edit, needle):
    """An atlas.json edited to claim no modules headlined a page that showed one."""
    cli, one_line = run_cli
    atlas = _atlas_of_one_module(tmp_path / "atlas")
    summary = json.loads((atlas / "atlas.json").read_text())
    (atlas / "atlas.json").write_text(json.dumps({**summary, **edit}))
    one_line(cli("report", atlas), needle)


def test_an_sae_that_never_fires_on_the_store_is_refused(tmp_path, guarded, run_cli):
    """Its atlas once headlined the units' plain correlations ("the SAE's own modules do
    not reproduce across its ensemble") for an SAE with every latent dead."""
    import torch

    cli, one_line = run_cli
    sae = SparseAutoencoder.load(guarded.sae)
    with torch.no_grad():
        sae.b_enc.fill_(-1e4)
    sae.save(tmp_path / "dead")
    args = ["analyze", "--sae", tmp_path / "dead", "--acts", guarded.store, "--seeds", "1", "-q"]
    one_line(cli(*args, "--out", tmp_path / "a"), "None of the SAE's 24 latents fires on any")
    assert not (tmp_path / "a").exists()


def test_a_label_column_the_store_lacks_is_refused_before_the_analysis(
    tmp_path, guarded, run_cli, forbid
):
    """`label_column: lable` left every module unprofiled without a word."""
    import saeatlas.structure

    forbid(saeatlas.structure, "analyze")
    cli, one_line = run_cli
    (tmp_path / "c.yaml").write_text("label_column: lable\n")
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", tmp_path / "a"]
    needle = "`label_column` 'lable' is not a column of the store's rows, which record no labels"
    one_line(cli(*args, "--config", tmp_path / "c.yaml", "--seeds", "3"), needle)
    assert not (tmp_path / "a").exists()


def test_labels_of_one_class_leave_the_modules_unprofiled(tmp_path, outputs, run_cli, caplog):
    """A store whose labels name one class once failed after the whole analysis with
    ValueError 'Selectivity needs at least 2 classes' (a traceback)."""
    cli, _ = run_cli
    np.save(tmp_path / "y.npy", np.zeros(300, int))
    store = tmp_path / "store"
    r = cli(*["capture", "--model", outputs.model, "--inputs", outputs.inputs], "-q",
            *["--labels", tmp_path / "y.npy", "--layers", "1", "3", "--out", store])  # fmt: skip
    assert r.exit_code == 0, r.output
    args = ["analyze", "--sae", outputs.sae, "--acts", store, "--out", tmp_path / "a", "-q"]
    r = cli(*args, "--seeds", "1", "--n-null", "2", "--no-control")
    assert r.exit_code == 0, r.output
    assert "has 1 class(es) on the analysed rows" in caplog.text
    atlas = json.loads((tmp_path / "a" / "atlas.json").read_text())
    assert "label_classes" not in atlas


@pytest.mark.parametrize("kind,marker", [("store", "manifest.json"), ("sae", "cfg.json"),
                                         ("atlas", "atlas.json"), ("sweep", "sweep.json")])  # fmt: skip
def test_a_run_into_another_stages_output_is_refused(tmp_path, guarded, run_cli, kind, marker):
    """`run --out STORE` once wrote its config.yaml into the store before capture refused
    the folder; `run --out ATLAS` filled the atlas with the run's store, SAE and sweep."""
    cli, one_line = run_cli
    p = tmp_path / "run.yaml"
    p.write_text(f"model: {guarded.model}\ninputs: {guarded.inputs}\nlayers: ['1', '3']\n")
    out = getattr(guarded, kind)
    one_line(cli("run", p, "--out", out, "-q"), f"({marker}), not a run directory")


@pytest.mark.parametrize(
    "width,labels,needle",
    [
        # the hooks set units 0..9 of 12 and the ablation "succeeded"
        (12, np.zeros(30, int), "Layer '1' of the model has 12 units, but the atlas's store"),
        (10, np.array(["a", "b", "c"] * 10), "a label is 'a'. Give class indices"),  # TypeError
        (10, np.full(30, 8), "0 to 7 (the model gives 8 logits); a label is 8."),  # IndexError
        (10, np.full(30, 1.5), "a label is 1.5"),  # was taken as class 1
    ],
)
def test_ablation_refuses_a_model_or_labels_that_do_not_fit(width, labels, needle):
    import torch

    from saeatlas.errors import AtlasError
    from saeatlas.store.manifest import LayerSpec
    from saeatlas.structure.causal.ablation import ablate_modules

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, width), torch.nn.ReLU(), torch.nn.Linear(width, 8), torch.nn.ReLU()
    )
    layers = [LayerSpec("1", 0, 10), LayerSpec("3", 10, 18)]
    x = np.random.default_rng(0).normal(size=(30, 6)).astype(np.float32)
    units = np.array([0] * 4 + [-1] * 14)
    with pytest.raises(AtlasError, match=re.escape(needle)):
        ablate_modules(model, x, layers, units, labels=labels, mode="zero", n_random=2)


def test_ablation_of_inputs_the_model_cannot_take_is_one_line(tmp_path, outputs):
    from saeatlas.capture import load_model
    from saeatlas.errors import ModelError
    from saeatlas.store.manifest import LayerSpec
    from saeatlas.structure.causal.ablation import ablate_modules

    model = load_model(outputs.model).model
    x = np.zeros((20, 7), np.float32)  # the model takes 6 features
    layers = [LayerSpec("1", 0, 10), LayerSpec("3", 10, 18)]
    with pytest.raises(ModelError, match=r"forward pass failed on inputs 0\.\.19: RuntimeError"):
        ablate_modules(model, x, layers, np.zeros(18, int), labels=np.zeros(20, int), mode="zero")


@pytest.mark.parametrize(
    "labels,needle",
    [
        (np.array(["cat", "dog"] * 150), "needs one class index per input; a label is 'cat'"),
        # these three failed only at the ablation, after the whole analysis
        (np.arange(300) % 9, "0 to 7 (the model gives 8 logits); a label is 8."),
        (np.zeros(299, int), "Labels have shape [299] for 300 input samples"),
        (np.zeros(400, int), "Labels have shape [400] for 300 input samples"),
    ],
)
def test_labels_that_do_not_fit_are_refused_before_the_analysis(
    tmp_path, guarded, run_cli, forbid, labels, needle
):
    import saeatlas.structure

    forbid(saeatlas.structure, "analyze")
    cli, one_line = run_cli
    np.save(tmp_path / "y.npy", labels)
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", tmp_path / "a"]
    args += ["--model", guarded.model, "--inputs", guarded.inputs, "--labels", tmp_path / "y.npy"]
    one_line(cli(*args), needle)
    assert not (tmp_path / "a").exists()


def test_an_sae_of_other_activations_is_named_by_its_fvu(tmp_path, outputs, save_acts, caplog):
    """A store whose units come in another order (or from another model) was mapped
    through the SAE without a word: its codes describe nothing in these rows."""
    import pandas as pd

    from saeatlas.structure import AtlasConfig
    from saeatlas.structure.analyze import add_fit
    from saeatlas.structure.atlas import Atlas
    from saeatlas.structure.inputs import prepare

    x = np.load(outputs.npy)
    order = np.concatenate([np.roll(np.arange(10), 1), 10 + np.roll(np.arange(8), 1)])
    fvu = {}
    for name, acts in (("own", outputs.store), ("reordered", save_acts(x[:, order]))):
        atlas = Atlas(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), summary={})
        add_fit(atlas, prepare(outputs.sae, acts, AtlasConfig()))
        fvu[name] = atlas.summary["fvu"]
    assert fvu["own"] < 0.5 < 1 <= fvu["reordered"], fvu
    assert caplog.text.count("no better than each unit's mean") == 1


def test_a_seed_sae_trained_otherwise_is_not_reused(tmp_path, guarded, run_cli):
    """`train --seeds 1 --overwrite` with other settings left the old <sae>-seed1 beside
    it, and analyze took it into the ensemble (and as the null's source) as a seed."""
    cli, one_line = run_cli
    sae = SparseAutoencoder.load(guarded.sae)
    meta = dict(sae.cfg.metadata)
    sae.save(tmp_path / "sae")
    meta["train_config"] = {**meta["train_config"], "tokens": 999, "seed": 1}
    _seed_like(guarded, tmp_path / "sae-seed1", metadata=meta)
    args = ["analyze", "--sae", tmp_path / "sae", "--acts", guarded.store, "-q"]
    one_line(cli(*args, "--out", tmp_path / "a", "--seeds", "2"), "in more than its seed: `tokens`")
    meta["train_config"]["tokens"] = sae.cfg.metadata["train_config"]["tokens"]
    _seed_like(guarded, tmp_path / "sae-seed1", metadata=meta)  # only the seed differs
    from saeatlas.structure.inference.seeds import train_seed_saes

    assert train_seed_saes(tmp_path / "sae", guarded.store, 2) == [tmp_path / "sae-seed1"]


@pytest.mark.parametrize("text", ["garbage", '{"stages": []}', '{"stages": {"capture": 5}}'])
def test_a_damaged_run_record_is_refused(tmp_path, outputs, run_cli, text):
    """A list of stages was an AttributeError traceback; an unreadable run.json was taken
    as no record, and every complete output was kept whatever its settings."""
    cli, one_line = run_cli
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(text)
    p = tmp_path / "run.yaml"
    p.write_text(f"model: {outputs.model}\ninputs: {outputs.inputs}\nlayers: ['1', '3']\n")
    one_line(cli("run", p, "--out", tmp_path / "run", "-q"), "is not a run record", "delete it")
    assert sorted(x.name for x in (tmp_path / "run").iterdir()) == ["run.json"]


def test_an_inputs_file_edited_in_place_is_captured_again(tmp_path, outputs):
    """The run's capture was skipped after labels.npy (or inputs.npy) was rewritten at the
    same path: the atlas kept the old labels, the ablation read the new ones."""
    import os

    from saeatlas.pipeline import load_run_config
    from saeatlas.pipeline.outputs import RunPaths
    from saeatlas.pipeline.record import RunState, fingerprints, stage_settings
    from saeatlas.pipeline.run import _decide
    from saeatlas.pipeline.stamps import source_files

    shutil.copy(outputs.inputs, tmp_path / "x.npy")
    p = tmp_path / "run.yaml"
    p.write_text(f"model: {outputs.model}\ninputs: x.npy\nlayers: ['1', '3']\n")
    cfg, paths = load_run_config(p), RunPaths(tmp_path / "run")
    shutil.copytree(outputs.store, paths.store)
    paths.out.mkdir(exist_ok=True)
    state, prints, settings = RunState(paths.state), fingerprints(cfg), stage_settings(cfg)
    assert set(source_files(cfg)) == {"model", "inputs"}
    state.start("capture", prints["capture"], settings["capture"], source_files(cfg))
    state.finish("capture", 0.0, "", None)
    assert _decide("capture", cfg, paths, state, prints, settings, None)[0].status == "skipped"
    np.save(tmp_path / "x.npy", np.load(tmp_path / "x.npy")[::-1])  # same path, new rows
    os.utime(tmp_path / "x.npy", ns=(1, 1))
    # the run stops before capturing over the store made from the old file
    from saeatlas.errors import ConfigError
    from saeatlas.pipeline.run import _refuse_changed

    with pytest.raises(
        ConfigError, match=r"store \(capture: its model, inputs or labels.*--overwrite"
    ):
        _refuse_changed(cfg, paths, state, prints, settings)
    # with --overwrite it is captured again
    outcome, resume, why = _decide("capture", cfg, paths, state, prints, settings, None)
    assert outcome is None and not resume and "inputs or labels file changed" in why


def test_a_store_of_identical_rows_is_refused(tmp_path, save_acts, guarded, run_cli):
    """It once ended in 'no two features fire together more often than chance ... use an
    SAE with a larger k' for rows that do not vary at all."""
    cli, one_line = run_cli
    acts = save_acts(np.repeat(np.load(guarded.npy)[:1], 100, axis=0))
    args = ["analyze", "--sae", guarded.sae, "--acts", acts, "--out", tmp_path / "a", "-q"]
    one_line(cli(*args, "--seeds", "1"), "Every unit the SAE reads is constant over the 100")
    assert not (tmp_path / "a").exists()


def test_a_cleaned_correlations_null_of_no_spread_gives_an_honest_z(outputs):
    """On the cleaned correlations of independent units no edge survives: every draw of
    the circular-shift null has modularity 0. A floor of 1e-6 on the spread gave z 449,293
    and p 1e-17 here (z 167,179 in the minilm demo's atlas.json)."""
    from saeatlas.structure import AtlasConfig
    from saeatlas.structure.inference.correlation import correlation_view
    from saeatlas.structure.inputs import prepare

    def view(**cfg):
        return correlation_view(prepare(outputs.sae, outputs.store, AtlasConfig(**cfg)), True)

    v = view(n_null=4)  # all rows and resamples: the modularity's own sampling error
    t = v.test
    assert t.q > 0.1 and (t.null_q == 0).all() and 0 < t.q_se < t.q
    assert t.z == pytest.approx(t.q / t.q_se) and t.z < 1000
    assert v.summary()["test"]["modularity_se"] == t.q_se
    assert v.partition_ok and t.p < 0.01


@pytest.mark.parametrize(
    "width,needle",
    [
        (12, "Layer '1' of the model has 12 units, but the atlas's store recorded 10"),
        (None, "No module of Sequential matches layer pattern '3'"),
    ],
)
def test_a_model_unlike_the_stores_is_refused_before_the_analysis(
    tmp_path, guarded, run_cli, forbid, width, needle
):
    """A model of other widths at the store's layers was refused only by the ablation,
    after the whole analysis."""
    import saeatlas.structure

    forbid(saeatlas.structure, "analyze")
    cli, one_line = run_cli
    layers = f"nn.Linear(6, {width}), nn.ReLU(), nn.Linear({width}, 8), nn.ReLU()"
    body = layers if width else "nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8)"
    (tmp_path / "m.py").write_text(
        f"import torch\nfrom torch import nn\n\ndef build():\n    torch.manual_seed(0)\n"
        f"    return nn.Sequential({body})\n"
    )
    np.save(tmp_path / "y.npy", np.zeros(300, int))
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", tmp_path / "a"]
    args += ["--model", f"{tmp_path / 'm.py'}:build", "--inputs", guarded.inputs]
    one_line(cli(*args, "--labels", tmp_path / "y.npy"), needle)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("check", [False, True])
def test_a_run_refuses_labels_the_model_cannot_take_before_capture(
    tmp_path, outputs, run_cli, check
):
    """Labels past the model's 8 logits failed only at the ablation, the last stage."""
    cli, one_line = run_cli
    np.save(tmp_path / "y.npy", np.arange(300) % 10)
    p = tmp_path / "run.yaml"
    p.write_text(
        f"model: {outputs.model}\ninputs: {outputs.inputs}\nlabels: {tmp_path / 'y.npy'}\n"
        "layers: ['1', '3']\nsweep: {enabled: false}\nablation: {enabled: true}\n"
    )
    args = ["run", p, "--out", tmp_path / "run", "-q"] + (["--check"] if check else [])
    one_line(cli(*args), "0 to 7 (the model gives 8 logits); a label is 8.")
    assert not (tmp_path / "run" / "store").exists()
