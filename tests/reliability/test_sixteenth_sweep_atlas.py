"""The sixteenth hostile sweep's cases in analysis, atlas files, the report, interop,
export and evaluate: each failed (a wrong or misleading result, a traceback or no word)
before its fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parents[1] / "fixtures"


def test_evaluate_range_after_skipped_rows_says_which_rows_of_the_file(outputs, save_acts, run_cli):
    """`evaluate --start/--stop --on-nonfinite skip` counts rows without those left out
    (as `--heldout-rows` does), but said nothing of it: `--stop 100` measured rows 0..102
    of the file without a word, and `--stop 300` of a 300-row file was refused as outside
    "the store's 298 rows". Both now say how rows are counted."""
    cli, one_line_error = run_cli
    x = np.load(outputs.npy)
    x[5, 0], x[10, 3] = np.nan, np.inf
    acts = save_acts(x)
    common = ("evaluate", "--sae", outputs.sae, "--acts", acts, "--on-nonfinite", "skip")
    one_line_error(
        cli(*common, "--stop", "300"),
        "outside the store's 298 rows (the 300 rows of the file less the 2 with NaN/Inf",
        "rows are counted without them",
    )
    r = cli(*common, "--start", "0", "--stop", "100")
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())
    assert "they are rows 0..102 of" in said and "2 of them left out" in said, r.output


def test_the_cli_control_line_names_the_sae_modules_it_compares(capsys):
    """Under a table of the units' correlation modules (three, with units), the random-SAE
    control's line said "no unit is in a module of it or of the real atlas": it compares
    the trained SAE's own modules (none here), not the ones the table lists."""
    import pandas as pd

    from saeatlas.cli.tables import print_atlas
    from saeatlas.structure.atlas import Atlas

    modules = pd.DataFrame(
        {
            "module": [0],
            "n_units": [3],
            "n_features": [2],
            "layers": [["a"]],
            "z": [4.0],
            "p": [0.01],
            "significant": [True],
        }
    )
    summary = {
        "n_modules": 1,
        "module_kind": "co-activation",
        "message": "1 reproducible module of correlated units, visible without the SAE.",
        "modules_from": "unit_correlations",
        "control": {"n_significant_modules": 0, "unit_ari": None},
    }
    atlas = Atlas(units=pd.DataFrame(), features=pd.DataFrame(), modules=modules, summary=summary)
    print_atlas(atlas)
    out = " ".join(capsys.readouterr().out.split())
    assert "of the real atlas" not in out, out
    assert "no unit is in a module of it or of the trained SAE's own modules" in out, out
    summary["control"]["unit_ari"] = 0.5
    print_atlas(atlas)
    out = " ".join(capsys.readouterr().out.split())
    assert "unit modules' ARI with the trained SAE's own 0.50." in out, out


def test_a_table_without_a_column_every_reader_needs_is_refused(
    tmp_path, two_modules_atlas, run_cli
):
    """`atlas.features = atlas.features.set_index('feature')` was saved without the
    `feature` column (pandas' index is not written) and loaded back without a word; the
    Neuronpedia export of such an atlas ended in a KeyError traceback."""
    import pandas as pd

    from saeatlas.structure.atlas import Atlas
    from saeatlas.structure.atlas_format import AtlasFileError

    cli, one_line_error = run_cli
    path = two_modules_atlas(tmp_path / "atlas")
    atlas = Atlas.load(path)
    atlas.features = atlas.features.set_index("feature")
    with pytest.raises(AtlasFileError, match=r"lacks the columns \['feature'\] \(`feature` is"):
        atlas.save(tmp_path / "edited")
    assert not (tmp_path / "edited").exists()
    pd.DataFrame({"module": [0, 1, 1, -1]}).to_parquet(path / "features.parquet", index=False)
    one_line_error(
        cli("export-neuronpedia", path, "--out", tmp_path / "np"),
        "features.parquet",
        "lacks the columns ['feature']",
    )


def test_atlas_save_takes_numpy_numbers_and_refuses_other_kinds_before_writing(
    tmp_path, two_modules_atlas
):
    """`atlas.summary['n_significant_modules'] = atlas.modules.significant.sum()` (an
    np.int64) ended `Atlas.save` in JSON's TypeError; a summary that is no dict or a table
    that is no DataFrame in an AttributeError, and a column of mixed kinds in pyarrow's
    ArrowTypeError. numpy numbers are written as the numbers they hold; the rest is refused
    by name before anything is written."""
    import pandas as pd

    from saeatlas.structure.atlas import Atlas
    from saeatlas.structure.atlas_format import AtlasFileError

    atlas = Atlas.load(two_modules_atlas(tmp_path / "atlas"))
    atlas.summary["n_modules"] = np.int64(2)
    atlas.summary["note"] = np.float32(0.5)
    atlas.summary["ids"] = np.arange(2)
    back = Atlas.load(atlas.save(tmp_path / "numpy"))
    assert back.summary["note"] == 0.5 and back.summary["ids"] == [0, 1]
    for change, needle in [
        (lambda a: setattr(a, "summary", None), "`summary` must be a dict, got NoneType"),
        (lambda a: a.summary.__setitem__("tags", {"a"}), "Object of type set is not JSON"),
        (lambda a: setattr(a, "units", a.units.to_dict("records")), "`units` must be a pandas"),
        (lambda a: a.units.__setitem__("note", [1, "x"] * 3), "column note"),
        (lambda a: setattr(a, "flows", pd.DataFrame({"n": [1, "x"]})), "column n"),
    ]:
        atlas = Atlas.load(tmp_path / "atlas")
        change(atlas)
        with pytest.raises(AtlasFileError, match=needle):
            atlas.save(tmp_path / "edited")
        assert not (tmp_path / "edited").exists()


@pytest.mark.parametrize(
    "scaling,needle",
    [
        ("ones3", "`scaling_factor` is (3,), expected (32,)"),
        ("int", "`scaling_factor` has dtype int64"),
    ],
)
def test_a_saelens_scaling_factor_of_another_shape_or_kind_is_refused(
    tmp_path, run_cli, scaling, needle
):
    """SAELens's `scaling_factor` (before 6.0) was checked only for being all ones: one of
    3 values beside 32 latents (which SAELens's own loader refuses), or of integers, was
    imported as if it were the SAE's."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    cli, one_line_error = run_cli
    src = tmp_path / "sl"
    shutil.copytree(FIXTURES / "saelens" / "standard", src)
    weights = load_file(str(src / "sae_weights.safetensors"))
    weights["scaling_factor"] = (
        torch.ones(3) if scaling == "ones3" else torch.ones(32, dtype=torch.int64)
    )
    save_file(weights, str(src / "sae_weights.safetensors"))
    one_line_error(cli("import-saelens", src, "--out", tmp_path / "sae"), needle)
    assert not (tmp_path / "sae").exists()


def test_a_label_that_is_no_class_index_is_named_as_given_and_cut_short(tmp_path, outputs, run_cli):
    """A text file's label '-1' was named as -1.0, and a label hundreds of characters
    long (a JSON list written on one line of a text file) was quoted whole in the
    one-line error."""
    cli, one_line_error = run_cli
    common = ("analyze", "--sae", outputs.sae, "--acts", outputs.store, "--model")
    common += (outputs.model, "--inputs", outputs.inputs, "--out", tmp_path / "atlas")
    labels = tmp_path / "labels.txt"
    labels.write_text("-1\n" + "1\n" * 299)
    one_line_error(cli(*common, "--labels", labels), "a label is '-1'. Give class indices")
    labels.write_text(str([1] * 300))
    line = one_line_error(cli(*common, "--labels", labels), "a label is '[1, 1, 1,")
    assert len(line) < 300, line
    assert not (tmp_path / "atlas").exists()


@pytest.mark.parametrize("factor", [2.5, "3", True])
def test_a_sparsify_expansion_factor_that_is_no_whole_number_is_checked(tmp_path, run_cli, factor):
    """With `num_latents` 0 sparsify sizes its coder as `expansion_factor` x `d_in`; the
    check that this gives the weights' latents ran only for an int, so 2.5, "3" or true
    beside 30 latents of 10 inputs (a config sparsify cannot load) was imported."""
    import json
    import shutil

    cli, one_line_error = run_cli
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "sparsify" / "run", run)
    cfg = json.loads((run / "layers.1" / "cfg.json").read_text())
    cfg.update(num_latents=0, expansion_factor=factor)
    (run / "layers.1" / "cfg.json").write_text(json.dumps(cfg))
    one_line_error(
        cli("import-sparsify", run, "--out", tmp_path / "out"),
        f"`expansion_factor` {factor!r}",
        "the config does not describe these weights",
    )
    assert not (tmp_path / "out").exists()


def test_python_calls_of_other_argument_types_are_refused_by_name(tmp_path, outputs):
    """From Python: `evaluate_sae(start="0")`, 1.5 or `batch_size="64"` ended in a
    TypeError and `start=True` was read as row 1; `export_saelens` given a path for the
    SAE in an AttributeError; a number or None as the path of `SparseAutoencoder.load`,
    `.save`, `load_saelens`, `export_saelens` or `export_neuronpedia`'s `out` in pathlib's
    TypeError; and `sae.save(path, overwrite="no")` was read by its truth."""
    from saeatlas.errors import ConfigError
    from saeatlas.evaluate import evaluate_sae
    from saeatlas.export import export_neuronpedia
    from saeatlas.sae import SparseAutoencoder
    from saeatlas.sae.saelens import export_saelens, load_saelens

    sae = SparseAutoencoder.load(outputs.sae)
    for kwargs, needle in [
        ({"start": "0"}, r"--start \(`start`\) must be a whole number of rows, got '0'"),
        ({"start": True}, "got True"),
        ({"stop": 100.0}, r"--stop \(`stop`\) must be a whole number"),
        ({"batch_size": "64"}, r"--batch-size \(`batch_size`\) must be a whole number"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            evaluate_sae(sae, outputs.store, **kwargs)
    for call, needle in [
        (lambda: export_saelens(str(outputs.sae), tmp_path / "x"), "`sae` must be a Sparse"),
        (lambda: export_saelens(sae, 5), "`path` must be a path"),
        (lambda: load_saelens(None), "`path` must be a path"),
        (lambda: SparseAutoencoder.load(5), "`path` must be a path"),
        (lambda: sae.save(5), "`path` must be a path"),
        (lambda: sae.save(outputs.sae, overwrite="no"), "`overwrite` must be True or False"),
        (lambda: export_neuronpedia(outputs.atlas, None), "`out` must be a path"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            call()
    assert not (tmp_path / "x").exists()


def test_a_correlation_view_of_atlas_json_that_is_null_is_refused(tmp_path, outputs, run_cli):
    """`cross_check.clean` edited to null passed the check of atlas.json, whose nested
    checks skip null entries, and ended the report of a verdict of structure without
    modules in an AttributeError."""
    import json
    import shutil

    cli, one_line_error = run_cli
    atlas = shutil.copytree(outputs.atlas, tmp_path / "atlas")
    summary = json.loads((atlas / "atlas.json").read_text())
    summary["cross_check"] = {"clean": None}
    (atlas / "atlas.json").write_text(json.dumps(summary))
    one_line_error(cli("report", atlas), "`cross_check.clean` in", "must be an object")
    assert not (atlas / "report.html").exists()


def test_a_modules_table_of_no_rows_without_its_module_column_is_read(tmp_path, outputs):
    """A modules.parquet of no modules whose `module` column was dropped (its other
    columns kept) ended `Atlas.load`, and so the Neuronpedia export, in a KeyError in the
    check of the modules' layers; it is an atlas of no modules."""
    import shutil

    import pandas as pd

    from saeatlas.structure.atlas import Atlas

    atlas = shutil.copytree(outputs.atlas, tmp_path / "atlas")
    pd.DataFrame({"n_units": [], "layers": []}).to_parquet(atlas / "modules.parquet")
    assert Atlas.load(atlas).n_modules == 0


def test_a_module_column_of_none_is_refused(tmp_path, outputs, run_cli):
    """features.parquet's `module` edited to None in every row passed the check (only
    values that are not null were named), and the Neuronpedia export ended in torch's
    TypeError on the column."""
    import shutil

    import pandas as pd

    cli, one_line_error = run_cli
    atlas = shutil.copytree(outputs.atlas, tmp_path / "atlas")
    features = pd.read_parquet(atlas / "features.parquet")
    features.assign(module=[None] * len(features)).to_parquet(atlas / "features.parquet")
    one_line_error(
        cli("export-neuronpedia", atlas, "--out", tmp_path / "np"),
        "features.parquet",
        "names the module None",
    )
    assert not (tmp_path / "np").exists()


def test_a_neuronpedia_setting_out_of_range_is_named_by_its_flag_before_the_model(
    tmp_path, outputs, run_cli
):
    """`export-neuronpedia --n-examples 0` was told "`n_examples` must be positive", naming
    no flag, and only after `--model` was loaded (a missing model file was named first)."""
    cli, one_line_error = run_cli
    one_line_error(
        cli(
            "export-neuronpedia", outputs.atlas, "--out", tmp_path / "np", "--n-examples", "0",
            "--model", tmp_path / "missing.py:build",
        ),
        "`n_examples` (--n-examples) must be positive, got 0.",
    )  # fmt: skip


def test_the_report_says_how_many_rows_the_store_left_out(tmp_path, analysed):
    """An atlas of a .npy read with `--on-nonfinite skip` records the rows it left out
    (`store_skipped_rows`), but its page said "Rows analysed 297" of a 300-row file
    without a word of the 3."""
    import json
    import shutil

    from saeatlas.report.data import load_report_data
    from saeatlas.report.summary import header_facts

    atlas = shutil.copytree(analysed, tmp_path / "atlas")
    summary = json.loads((atlas / "atlas.json").read_text())
    summary["store_skipped_rows"] = 3
    (atlas / "atlas.json").write_text(json.dumps(summary))
    facts = {f.label: f.value for f in header_facts(load_report_data(atlas))}
    assert facts["Rows analysed"] == (
        "300 (3 rows of the store with NaN/Inf left out: --on-nonfinite skip)"
    ), facts


def test_feature_map_coordinates_of_another_kind_are_refused(tmp_path, analysed, run_cli):
    """features.parquet's `x` (the feature map's coordinate) edited to lists ended the
    report half-way in plotly's "setting an array element with a sequence"."""
    import shutil

    import pandas as pd

    cli, one_line_error = run_cli
    atlas = shutil.copytree(analysed, tmp_path / "atlas")
    features = pd.read_parquet(atlas / "features.parquet")
    features.assign(x=[[1.0, 2.0]] * len(features)).to_parquet(atlas / "features.parquet")
    one_line_error(cli("report", atlas), "`x` of features.parquet", "must hold numbers")
    assert not (atlas / "report.html").exists()


def test_an_sae_of_a_module_input_keeps_its_hook_through_saelens(tmp_path):
    """`export-saelens` of an SAE trained on `1:input` wrote `hook_name` '1' (the module's
    output), and the SAELens SAE read back read layer '1' of a store that holds both,
    another layer's activations, without a word."""
    import json

    import torch

    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.sae import SAEConfig, SparseAutoencoder
    from saeatlas.sae.model import sae_layers
    from saeatlas.sae.saelens import export_saelens
    from saeatlas.store import LayerSpec

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))
    store = capture_activations(
        net,
        torch.randn(40, 4),
        ["1:input", "1"],
        tmp_path / "store",
        CaptureConfig(),
        progress=False,
    )
    layer = next(l for l in store.layers if l.name == "1:input")
    cfg = SAEConfig("topk", d_in=6, d_sae=8, k=2, layers=(LayerSpec("1:input", 0, 6, layer.shape),))
    export_saelens(SparseAutoencoder(cfg, torch.Generator()), tmp_path / "sl")
    assert (
        json.loads((tmp_path / "sl" / "cfg.json").read_text())["metadata"]["hook_name"] == "1:input"
    )
    back = SparseAutoencoder.load(tmp_path / "sl")
    assert [l.name for l in sae_layers(back, store)] == ["1:input"]


@pytest.mark.parametrize("column", ["module", "label", "effect"])
def test_an_ablation_table_without_a_column_the_report_reads_is_refused(
    tmp_path, analysed, run_cli, column
):
    """ablation.parquet without `module`, `label` or `effect` ended the report half-way in
    a pandas KeyError (the required columns were checked for examples and flows only)."""
    import shutil

    import pandas as pd

    cli, one_line_error = run_cli
    atlas = shutil.copytree(analysed, tmp_path / "atlas")
    table = pd.DataFrame(
        {"module": [-1], "label": ["a"], "effect": [0.1], "random_effect": [0.0]}
        | {"specialisation": [1.0]}
    )
    table.drop(columns=[column]).to_parquet(atlas / "ablation.parquet")
    one_line_error(cli("report", atlas), f"ablation.parquet in '{atlas}' lacks the columns")
    assert not (atlas / "report.html").exists()
