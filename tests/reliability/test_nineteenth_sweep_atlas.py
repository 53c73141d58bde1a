"""The nineteenth hostile sweep's cases in the atlas on disk, the report, validate and the
Python API of the structure stage: each failed (a traceback, a wrong page or no word)
before its fix."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def ablation_parts(outputs, analysed):
    """The protected store's model and inputs, and the analysed atlas of its SAE."""
    from saeatlas.capture import load_model

    return load_model(outputs.model).model, np.load(outputs.inputs), analysed


def _copy(analysed, tmp_path, edit=None):
    """The analysed atlas copied (without a report) to ``tmp_path/atlas``, its atlas.json
    changed by ``edit(summary)``."""
    import json
    import shutil

    atlas = tmp_path / "atlas"
    shutil.copytree(analysed, atlas, ignore=shutil.ignore_patterns("report.html", "figures"))
    if edit is not None:
        summary = json.loads((atlas / "atlas.json").read_text())
        edit(summary)
        (atlas / "atlas.json").write_text(json.dumps(summary))
    return atlas


@pytest.mark.parametrize(
    "change, says",
    [
        ({"atlas": "PATH"}, r"`atlas` must be an Atlas, got str: read a saved one with Atlas.load"),
        ({"model": "model.py:build"}, r"`model` must be a torch.nn.Module .* got the text"),
        (
            {"n_random": "2"},
            r"`n_random` must be 0 or a larger whole number, at most 10,000, got '2'",
        ),
        ({"n_random": 2.5}, r"`n_random` must be 0 or a larger whole number"),
        ({"n_random": True}, r"`n_random` must be 0 or .* got True"),
        ({"n_random": 10**9}, r"at most 10,000, got 1000000000"),
        ({"batch_size": 64.0}, r"`batch_size` must be 1 or a larger whole number, got 64.0"),
        ({"random_state": "0"}, r"`random_state` must be 0 or a larger whole number, got '0'"),
        ({"max_length": "5"}, r"`max_length` must be 1 or a larger whole number"),
        ({"loss_fn": None}, r"`loss_fn` must be a function of \(model output, batch\)"),
        ({"progress": "no"}, r"`progress` must be True or False, got 'no'"),
    ],
)
def test_ablate_atlas_refuses_arguments_of_the_wrong_kind(ablation_parts, outputs, change, says):
    """`ablate_atlas` given the atlas's directory for the atlas, or a model's SPEC for the
    model, ended in an AttributeError; `n_random="2"`, `batch_size=64.0`,
    `random_state="0"` and `loss_fn=None` in TypeErrors (`loss_fn` after the inputs were
    read), `n_random=True` was read as 1, 10**9 ran as many forward passes (the CLI allows
    10,000), and `progress="no"` was read by its truth. Each is refused before any work."""
    from saeatlas.errors import ConfigError
    from saeatlas.structure import Atlas
    from saeatlas.structure.causal.ablation import ablate_atlas

    model, x, path = ablation_parts
    args = dict(atlas=Atlas.load(path), model=model, inputs=x, store=outputs.store, n_random=2)
    args.update({k: str(path) if v == "PATH" else v for k, v in change.items()})
    with pytest.raises(ConfigError, match=says):
        ablate_atlas(**args)


@pytest.mark.parametrize("layers", ["null", "absent"])
def test_ablate_atlas_of_an_atlas_without_layers_reads_them_from_its_units(
    ablation_parts, outputs, layers
):
    """An atlas whose atlas.json lists no `layers` (null, or an older atlas without the
    key: `Atlas.load` reads both) ended `ablate_atlas` in a TypeError or a KeyError. Its
    units' layers, in their order, are the same list."""
    from saeatlas.structure import Atlas
    from saeatlas.structure.causal.ablation import ablate_atlas

    model, x, path = ablation_parts
    labels = np.arange(len(x)) % 8
    expected = Atlas.load(path)
    ablate_atlas(expected, model, x, outputs.store, labels=labels, n_random=2)
    atlas = Atlas.load(path)
    if layers == "null":
        atlas.summary["layers"] = None
    else:
        del atlas.summary["layers"]
    ablate_atlas(atlas, model, x, outputs.store, labels=labels, n_random=2)
    pd.testing.assert_frame_equal(atlas.ablation, expected.ablation)


def test_ablate_atlas_refuses_fewer_labels_than_the_captured_inputs(tmp_path):
    """Labels of one input fewer than the captured inputs, given with those inputs to
    `ablate_atlas` of a store that recorded its labels, ended in an IndexError (they were
    compared with the store's by sample before their count was checked)."""
    import torch

    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.errors import InputsError
    from saeatlas.structure import Atlas
    from saeatlas.structure.causal.ablation import ablate_atlas

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
    y = np.arange(40) % 3
    store = tmp_path / "store"
    capture_activations(model, x, ["1"], store, CaptureConfig(batch_size=8), labels=y)
    units = pd.DataFrame({"unit": range(6), "layer": "1", "index": range(6), "module": -1})
    atlas = Atlas(units, pd.DataFrame({"feature": [0], "module": [-1]}), pd.DataFrame(), {})
    atlas.summary["layers"] = ["1"]
    with pytest.raises(InputsError, match=r"Labels have shape \[39\] for 40 inputs"):
        ablate_atlas(atlas, model, x, store, labels=y[:-1], n_random=2)


@pytest.mark.parametrize("index", ["reversed", "shifted", "named"])
def test_a_table_saved_with_its_pandas_index_is_read_by_its_columns(
    tmp_path, two_modules_atlas, run_cli, index
):
    """units.parquet saved by pandas with its index (`to_parquet()` without
    `index=False`, after rows were edited) was read back with that index, which the
    report took for unit numbers: the module cards listed other units (a:5, a:4 for a:0,
    a:1: on the digits demo, act3's units under act1) or, shifted, ended in an IndexError.
    An index with a name is one of the table's columns again."""
    from saeatlas.structure import Atlas

    cli, _ = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    units = pd.read_parquet(atlas / "units.parquet")
    if index == "named":  # the `unit` column kept only as the index
        units = units.set_index("unit")
    else:
        units.index = units.index[::-1] if index == "reversed" else units.index + 5
    units.to_parquet(atlas / "units.parquet")
    loaded = Atlas.load(atlas).units
    assert loaded.index.tolist() == list(range(6)) and loaded["unit"].tolist() == list(range(6))
    r = cli("report", atlas)
    assert r.exit_code == 0, r.output
    page = (atlas / "report.html").read_text(encoding="utf-8")
    card = page.split('id="module-0"')[1].split("</article>")[0]
    assert 'data-unit="0">a:0</a>, <a href="#" data-unit="1">a:1</a>' in card, card


def test_a_table_column_named_twice_is_named(tmp_path, two_modules_atlas, run_cli):
    """A units.parquet holding the column `module` twice (joined by hand) was refused with
    pyarrow's "Multiple matches for FieldRef.Name(module) in unit: int64 ..." and the whole
    schema on one line; the line now names the column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    t = pq.read_table(atlas / "units.parquet")
    pq.write_table(
        pa.Table.from_arrays(t.columns + [t["module"]], names=t.column_names + ["module"]),
        atlas / "units.parquet",
    )
    line = one_line(cli("report", atlas), "units.parquet has the columns ['module'] more than once")
    assert "FieldRef" not in line


@pytest.mark.parametrize(
    "key, value", [("sweep", 5), ("sweep", ["sweep"]), ("model", {"a": 1}), ("label_column", [1])]
)
def test_text_entries_of_atlas_json_of_another_kind_are_refused(
    tmp_path, analysed, run_cli, key, value
):
    """atlas.json's `sweep` (the run's sweep directory) edited to a number or a list ended
    the report in pathlib's TypeError; `model` and `label_column`, which the page shows,
    were shown as a dict's or a list's repr. Each is refused by name, as the other
    entries are."""
    cli, one_line = run_cli
    atlas = _copy(analysed, tmp_path, lambda s: s.update({key: value}))
    one_line(cli("report", atlas), f"`{key}` in '", "must be text or null, got")
    assert not (atlas / "report.html").exists()


@pytest.mark.parametrize("value", ["NaN", "1e400", "true", '"8"'])
def test_a_sweep_member_value_that_is_no_finite_number_is_refused_before_the_analysis(
    tmp_path, guarded, run_cli, value
):
    """`analyze --sweep DIR` whose sweep.json gives a member the value NaN (or 1e400, an
    Inf) ran the whole analysis and then could not save its atlas, refused as an
    atlas.json to "write again" with `analyze --overwrite` (which failed the same way);
    `true` was read as 1 and "8" as 8. Each is refused before the work."""
    cli, one_line = run_cli
    outputs = guarded
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    points = f'[{{"value": {value}, "path": "k-2/seed-0"}}]'
    (sweep / "sweep.json").write_text(f'{{"over": "k", "points": {points}}}')
    args = ("--sae", outputs.sae, "--acts", outputs.store, "--out", tmp_path / "atlas")
    one_line(cli("analyze", *args, "--sweep", sweep), "a point's value is", "not a finite number")
    assert not (tmp_path / "atlas").exists()


def test_analyze_takes_numpy_sweep_values_and_refuses_nan_true_and_no_setting(outputs):
    """`analyze(..., sweep=(setting, [(value, SAE), ...]))` refused NumPy values
    (np.int64(4)) as not numbers, and took NaN and Inf (the atlas then could not be saved,
    after the whole analysis), True (as 1) and an empty setting name."""
    from saeatlas.errors import ConfigError
    from saeatlas.structure import AtlasConfig
    from saeatlas.structure.arguments import check_arguments

    def check(sweep):
        check_arguments(outputs.sae, outputs.store, AtlasConfig(), sweep=sweep)

    check(("k", [(np.int64(4), outputs.sae), (np.float32(8), outputs.sae)]))
    for bad in (("k", [(float("nan"), outputs.sae)]), ("k", [(True, outputs.sae)])):
        with pytest.raises(ConfigError, match="each value a finite number"):
            check(bad)
    with pytest.raises(ConfigError, match="`sweep` must be"):
        check(("", [(4, outputs.sae)]))


def test_a_default_page_that_is_a_folder_is_not_blamed_on_out(tmp_path, two_modules_atlas, run_cli):
    """`saeatlas report ATLAS` where ATLAS/report.html is a folder said "--out
    '.../report.html' is a directory; give the HTML file to write", of a flag the command
    was not given. It now says the page's default place is a folder, and keeps it."""
    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    (atlas / "report.html").mkdir()
    (atlas / "report.html" / "notes.txt").write_text("kept")
    line = one_line(cli("report", atlas), "where the report's page goes by default, is a directory")
    assert "--out '" not in line
    assert (atlas / "report.html" / "notes.txt").read_text() == "kept"


def _swap_layer_names(units: pd.DataFrame) -> pd.DataFrame:
    """The protected atlas's layers `1` (10 units) and `3` (8 units) named the other's."""
    return units.assign(layer=units["layer"].map({"1": "3", "3": "1"}))


def test_ablate_atlas_refuses_units_whose_layers_are_not_its_stores(ablation_parts, outputs):
    """`ablate_atlas` of an atlas whose layers' names were swapped (10 units named `3`, 8
    named `1`, in atlas.json's order) mapped its units to the store's columns by those
    names: the first 8 units to layer 3's columns and the next 10 to layer 1's, so every
    module set other units than its own, without a word."""
    from saeatlas.errors import ShapeError
    from saeatlas.structure import Atlas
    from saeatlas.structure.causal.ablation import ablate_atlas

    model, x, path = ablation_parts
    atlas = Atlas.load(path)
    atlas.units = _swap_layer_names(atlas.units)
    atlas.summary["layers"] = ["3", "1"]
    with pytest.raises(ShapeError, match="names 10 units of the layer '3'.* has 8 in it"):
        ablate_atlas(atlas, model, x, outputs.store, labels=np.arange(len(x)) % 8, n_random=2)


def test_a_long_layer_name_is_cut_on_the_plots_axes_and_wrapped_on_the_page(
    tmp_path, two_modules_atlas, run_cli
):
    """A layer or label of thousands of characters without a space (a module path, a
    class name) was drawn whole under the unit map, beside the layer x module plot and
    under the label plots, and shown unbroken in the tables and cards: the digits demo's
    page with a 5,000-character label was 54,441 pixels wide (1,300 without), and the
    layer x module PNG's axes collapsed. The axes now show the first 40 characters (the
    hover shows the whole name; two names that begin alike stay two categories) and the
    page wraps any text it cannot break."""
    import json
    import warnings

    from saeatlas.structure import Atlas

    cli, _ = run_cli
    name = "Q" * 3000
    path = two_modules_atlas(tmp_path / "atlas")
    atlas = Atlas.load(path)
    atlas.units["layer"] = name
    atlas.modules["layers"] = [[name]] * len(atlas.modules)
    atlas.summary["layers"] = [name]
    atlas.save(path, overwrite=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = cli("report", path)
    assert r.exit_code == 0, r.output
    # the PNG figure's axes were squeezed to nothing by the whole name
    assert not [w for w in caught if "collapsed" in str(w.message)], caught
    page = (path / "report.html").read_text(encoding="utf-8")
    ticks = [json.loads(t) for t in re.findall(r'"ticktext":(\[[^\]]*\])', page)]
    assert len(ticks) >= 2 and all(t == ["Q" * 39 + "…"] for t in ticks), ticks
    assert "main, aside#details { overflow-wrap: anywhere; }" in page
    from saeatlas.report.text import axis_ticks

    both = axis_ticks(["L" * 99 + "a", "L" * 99 + "b"])
    assert both["tickvals"] == ["L" * 99 + "a", "L" * 99 + "b"]
    assert both["ticktext"] == ["L" * 39 + "…"] * 2


def test_validate_names_only_its_own_flags_for_an_sae_that_cannot_fit(run_cli, forbid):
    """`validate --d-sae 2000000000` was refused by the training with "Lower `d_sae`
    (--d-sae, or --expansion-factor) or `batch_size` (--batch-size)", two flags validate
    does not have, after the first case's planted rows were drawn. It is now refused
    before any case, naming --d-sae."""
    from saeatlas.structure.synthetic import validate

    forbid(validate, "validate_case")
    cli, one_line = run_cli
    r = cli("validate", "--cases", "easy", "--rows", "1024", "--d-sae", "2000000000")
    line = one_line(r, "of 2,000,000,000 latents on 144 units", "Lower --d-sae.")
    assert "--batch-size" not in line and "--expansion-factor" not in line


def _sweep_json(folder, **edit) -> None:
    """A sweep.json of two points (no members on disk: the report needs none), edited."""
    import json

    point = {"path": "k-2/seed-0", "fvu": 0.3, "l0": 2.0, "dead_fraction": 0.1}
    points = [
        {**point, "value": 2.0, "stability": 0.7, "on_front": True},
        {
            **point,
            "value": 4.0,
            "path": "k-4/seed-0",
            "l0": 4.0,
            "fvu": 0.2,
            "stability": None,
            "on_front": True,
        },
    ]
    raw = {"over": "k", "rule": "knee", "heldout_rows": 30, "recommended": 1, "points": points}
    for key, value in edit.items():
        if key in raw:
            raw[key] = value
        else:
            points[0][key] = value
    folder.mkdir()
    (folder / "sweep.json").write_text(json.dumps(raw).replace('"NaN"', "NaN"))


@pytest.mark.parametrize(
    "edit, says",
    [
        ({"value": "NaN"}, "`value` nan, not a finite number"),
        ({"l0": -1}, "`l0` -1, not a finite number of 0 or more"),
        ({"fvu": -0.1}, "`fvu` -0.1, not a finite number of 0 or more"),
        ({"dead_fraction": 7}, "`dead_fraction` 7, not a finite number from 0 to 1"),
        ({"stability": 3}, "`stability` 3, not a finite number from -1 to 1"),
        ({"recommended": True}, "`recommended` True"),
        ({"recommended": 1.5}, "`recommended` 1.5"),
        ({"heldout_rows": -3}, "`heldout_rows` -3"),
        ({"over": 5}, "`over` 5"),
    ],
)
def test_a_sweep_json_number_out_of_its_range_is_refused_by_the_report(
    tmp_path, two_modules_atlas, run_cli, edit, says
):
    """A sweep.json edited by hand was drawn as it stood by `report --sweep`: a NaN value
    (the point labelled "k=nan"), an L0 below 0 (on a log axis), a dead fraction of 7,
    `recommended: true` (point 1), 1.5 (cut to 1) and -3 held-out rows. Its types were
    checked, not its ranges."""
    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    _sweep_json(tmp_path / "sweep", **edit)
    one_line(cli("report", atlas, "--sweep", tmp_path / "sweep"), "is unreadable (", says)
    assert not (atlas / "report.html").exists()


def test_the_sweep_setting_name_is_escaped_on_the_pareto_plot(tmp_path, two_modules_atlas, run_cli):
    """The Pareto plot labelled its points `<over>=<value>` from sweep.json as Plotly text,
    which reads a little HTML: an `over` of '<b>k</b>' was drawn in bold as 'k=2'."""
    cli, _ = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    _sweep_json(tmp_path / "sweep", over="<b>k</b>")
    r = cli("report", atlas, "--sweep", tmp_path / "sweep")
    assert r.exit_code == 0, r.output
    page = (atlas / "report.html").read_text(encoding="utf-8")
    assert '"text":["&lt;b&gt;k&lt;\\u002fb&gt;=2"' in page


@pytest.mark.parametrize("key", ["z", "null_mean", "null_std"])
def test_a_tested_p_without_its_z_or_null_figures_is_refused(tmp_path, analysed, run_cli, key):
    """atlas.json with its `p` but without `z` (or `null_mean`, `null_std`: a key deleted
    by hand; each may be null) ended the report in a KeyError traceback in its Modularity
    line, which reads them without a default beside a tested p."""
    cli, one_line = run_cli

    def drop(summary):
        assert summary["p"] is not None
        del summary[key]

    atlas = _copy(analysed, tmp_path, drop)
    one_line(cli("report", atlas), f"has a `p` without `{key}`")
    assert not (atlas / "report.html").exists()


@pytest.mark.parametrize("command", ["report", "analyze"])
def test_a_folder_named_as_a_figure_is_not_deleted_with_the_figures(
    tmp_path, two_modules_atlas, guarded, run_cli, command
):
    """The report replaces ATLAS/figures whole and refuses a figures folder holding other
    files, but took anything named as a figure for one: a folder figures/feature_map.png/
    holding a file of the user's was deleted by the next `report` (and by an `analyze
    --overwrite` of the atlas). Both now refuse it, and the file is kept."""
    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    kept = atlas / "figures" / "feature_map.png" / "notes.txt"
    kept.parent.mkdir(parents=True)
    kept.write_text("mine")
    if command == "report":
        r = cli("report", atlas)
        one_line(r, "holds files that are not a report's figures (['feature_map.png'])")
    else:
        outputs = guarded
        args = ("--sae", outputs.sae, "--acts", outputs.store, "--out", atlas, "--overwrite")
        one_line(cli("analyze", *args), "holds files that are not an atlas's (['figures'])")
    assert kept.read_text() == "mine"


@pytest.mark.parametrize("name", ["atlas.json", "units.parquet", "examples.parquet"])
def test_an_atlas_file_through_a_loop_of_symbolic_links_is_named_so(
    tmp_path, analysed, run_cli, name
):
    """An atlas file replaced by a link that leads to itself was reported missing ("not a
    complete atlas (no atlas.json)", "is missing units.parquet": rerun the analysis), and
    examples.parquet, an optional table, was dropped without a word (the page showed no
    top examples). Each is named as a loop of symbolic links, as every input is."""
    import os

    cli, one_line = run_cli
    atlas = _copy(analysed, tmp_path)
    (atlas / name).unlink(missing_ok=True)
    os.symlink(atlas / name, atlas / name)
    one_line(cli("report", atlas), f"{name}' leads through a loop of symbolic links")


@pytest.mark.parametrize(
    "where, beside", [("atlas/.figures.partial", "figures"), (".atlas.partial", "atlas")]
)
def test_a_page_is_not_written_into_a_folder_saeatlas_keeps_while_it_writes(
    tmp_path, two_modules_atlas, run_cli, where, beside
):
    """`report --out ATLAS/.figures.partial/x.html` wrote the page into the folder the
    report draws its figures in, and the next report, taking it for one a killed report
    left, deleted it; `--out .ATLAS.partial/x.html` (the report's own atlas, whose lock it
    holds, was taken for the output written there) was deleted by the next `analyze
    --overwrite`. Both are refused, as outputs there are."""
    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    page = tmp_path / where / "x.html"
    r = cli("report", atlas, "--out", page)
    one_line(r, "the folder saeatlas keeps beside an output", f"'{beside}' while it writes it")
    assert not page.exists()


@pytest.mark.parametrize(
    "table, frame, says",
    [
        (
            "ablation",
            pd.DataFrame(
                {
                    "module": [0, 0],
                    "label": ["1", "1"],
                    "effect": [0.5, 9.5],
                    "random_effect": [0.1, 0.1],
                    "specialisation": [1.0, 1.0],
                }
            ),
            "holds the row of module 0, label '1' more than once",
        ),
        (
            "examples",
            pd.DataFrame(
                {"kind": "feature", "id": [0, 0], "rank": [1, 1], "row": [3, 4], "activation": 1.0}
            ),
            "holds the row of kind 'feature', id 0, rank 1 more than once",
        ),
    ],
)
def test_an_optional_table_row_given_twice_is_refused(
    tmp_path, two_modules_atlas, run_cli, table, frame, says
):
    """ablation.parquet holding one module's effect on one label twice (rows joined by
    hand, with 0.5 and 9.5) was drawn as their mean, 5.0, by the report's module x label
    grid; examples.parquet holding a feature's first example twice listed it twice. A
    row named twice (flows.parquet too) is refused."""
    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    frame.to_parquet(atlas / f"{table}.parquet", index=False)
    one_line(cli("report", atlas), f"{table}.parquet in '", says)


def test_a_refused_null_source_or_loaded_seed_sae_is_named_as_given(outputs):
    """`analyze(..., null_source=DIR)` with an SAE that is no twin of the analysed one was
    refused as "The seed SAE 'DIR' ...", an argument the caller did not give; loaded SAEs
    given as `seed_saes` were named by their repr, "The seed SAEs 'SparseAutoencoder()'
    and 'SparseAutoencoder()' have the same weights". Each is named as it was given."""
    from saeatlas.errors import ConfigError
    from saeatlas.sae import SparseAutoencoder
    from saeatlas.structure import AtlasConfig, analyze

    cfg = AtlasConfig(n_null=2, nulls=("permutation",), control=False)
    with pytest.raises(ConfigError, match=r"^The dictionary null's source '.*' has the analysed"):
        analyze(outputs.sae, outputs.store, cfg, null_source=outputs.sae)
    loaded = SparseAutoencoder.load(outputs.sae)
    with pytest.raises(ConfigError, match=r"^The seed SAE `seed_saes\[0\]` has the analysed"):
        analyze(outputs.sae, outputs.store, cfg, seed_saes=[loaded])


def test_an_integer_bound_is_named_exactly(run_cli):
    """`demo --seed 5000000000` (and `seed: 4294967296` in an analysis config) was refused
    as outside "[0, 4.29497e+09]", a rounded bound that reads as holding 4294967296; an
    integer bound is now written out whole."""
    cli, one_line = run_cli
    line = one_line(cli("demo", "--quick", "--seed", "5000000000"), "[0, 4294967295]")
    assert "e+09" not in line


@pytest.mark.parametrize("command", ["report", "export-neuronpedia"])
def test_an_atlas_directory_through_a_loop_of_symbolic_links_is_named_so(
    tmp_path, run_cli, command
):
    """An atlas directory given as a link that leads to itself was "not a directory" to
    `report`, a disk error ("Check free space and permissions") to `export-neuronpedia`,
    and an OSError traceback to `Atlas.load`. Each names the loop."""
    import os

    from saeatlas.errors import ConfigError
    from saeatlas.structure import Atlas

    cli, one_line = run_cli
    loop = tmp_path / "atlas"
    os.symlink(loop, loop)
    args = ("--out", tmp_path / "np") if command == "export-neuronpedia" else ()
    one_line(cli(command, loop, *args), "leads through a loop of symbolic links")
    with pytest.raises(ConfigError, match="leads through a loop of symbolic links"):
        Atlas.load(loop)


@pytest.mark.parametrize("recorded", ["store", "sae"])
def test_an_export_names_a_recorded_path_through_a_loop_of_links(
    tmp_path, analysed, run_cli, recorded
):
    """`export-neuronpedia` of an atlas whose recorded store or SAE path leads through a
    loop of symbolic links said "The atlas's store ... is not there; give the store ...
    with --acts", as if it had been moved or deleted. It now names the loop."""
    import os

    cli, one_line = run_cli
    loop = tmp_path / "loop"
    os.symlink(loop, loop)

    def point(summary):
        if recorded == "store":
            summary["store"] = str(loop)
        else:
            summary["sae"]["path"] = str(loop)

    atlas = _copy(analysed, tmp_path, point)
    r = cli("export-neuronpedia", atlas, "--out", tmp_path / "np")
    line = one_line(r, "loop' leads through a loop of symbolic links")
    assert "is not there" not in line


def test_a_report_names_a_recorded_sae_path_through_a_loop_of_links(tmp_path, analysed, run_cli):
    """The report said of an atlas whose recorded SAE path leads through a loop of
    symbolic links that the SAE "is not there (moved or deleted)"."""
    import os

    cli, _ = run_cli
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    atlas = _copy(analysed, tmp_path, lambda s: s["sae"].update(path=str(loop)))
    r = cli("report", atlas)
    assert r.exit_code == 0, r.output
    page = (atlas / "report.html").read_text(encoding="utf-8")
    assert "loop&#39; leads through a loop of symbolic links" in page
    assert "is not there (moved or deleted)" not in page
