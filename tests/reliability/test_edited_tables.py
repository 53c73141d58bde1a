"""Atlas tables edited by hand that agree on their ids but not on their lists and
references (seventh sweep): each is refused by `report` in one line naming the file and
the column, before anything is written."""

from __future__ import annotations

import pandas as pd
import pytest


def _atlas_of_two_layers(path):
    """A small atlas whose files agree: two layers of two units, one module of units 0
    and 2 and feature 0, with the lists, flows and examples analyze writes."""
    from saeatlas.structure.atlas import Atlas
    from saeatlas.structure.inference.outcome import decide

    atlas = Atlas(
        units=pd.DataFrame(
            dict(unit=[0, 1, 2, 3], layer=["a", "a", "b", "b"], index=[0, 1, 0, 1])
        ).assign(
            module=[0, -1, 0, -1],
            membership=[0.9, 0.0, 0.8, 0.0],
            coupling=[0.5, 0.0, 0.4, 0.0],
            shared=[True, False, False, False],
            submodule=[0, -1, 1, -1],
        ),
        features=pd.DataFrame(
            dict(
                feature=[0, 1],
                module=[0, -1],
                top_units=[[0, 2], [1, 3]],
                top_unit_weights=[[0.5, -0.2], [0.3, 0.1]],
                layer_mass=[[0.6, 0.4], [0.5, 0.5]],
            )
        ),
        modules=pd.DataFrame(
            dict(
                module=[0],
                n_units=[2],
                n_features=[1],
                n_shared_units=[1],
                preferred_label=["x"],
                significant=[True],
                layer_profile=[[0.5, 0.5]],
                layer_mass=[[0.6, 0.4]],
                layers=[["a", "b"]],
            )
        ),
        summary={
            "layers": ["a", "b"],
            "label_classes": ["x", "y"],
            # the next finer scale's reproducible modules are the units' submodules
            "ensemble": {"levels": [{"chosen": True}, {"n_reproducible_modules": 2}]},
        },
        examples=pd.DataFrame(
            dict(kind=["feature", "module"], id=[0, 0], rank=[1, 1], row=[3, 3])
        ).assign(activation=[2.0, 2.0]),
        flows=pd.DataFrame(
            dict(source_module=[0], source_layer=["a"], target_module=[0], target_layer=["b"])
        ).assign(coactivation=[0.9], weight_flow=[1.0]),
    )
    decide(atlas)
    atlas.save(path)
    Atlas.load(path)  # as written, it agrees with itself
    return path


def _row(column, i, value):
    def change(frame):
        values = list(frame[column])
        values[i] = value
        return frame.assign(**{column: values})

    return change


@pytest.mark.parametrize(
    "name,change,needle",
    [
        # each was a traceback half-way through the report (numpy stacks the lists)
        ("modules", _row("layer_profile", 0, [1.0]), "`layer_profile` of modules.parquet"),
        ("modules", _row("layer_mass", 0, [0.2, 0.3, 0.5]), "the atlas has 2 layers"),
        ("flows", lambda f: f.assign(source_module=[9]), "names the module 9"),
        # each drawn without a word: a feature's weights against other units, and
        # examples of a module that is not there
        ("features", _row("top_unit_weights", 1, [0.3]), "`top_units` lists 2"),
        ("features", _row("layer_mass", 1, [1.0]), "`layer_mass` of features.parquet"),
        ("examples", lambda e: e.assign(id=[0, 4]), "names the module 4"),
        ("examples", lambda e: e.assign(id=[7, 0]), "names the feature 7"),
        # shares and probabilities beyond 1, shown on the page as they were
        ("features", lambda f: f.assign(firing_density=[0.2, 2.0]), "`firing_density`"),
        ("modules", lambda m: m.assign(correlation_jaccard=[1.5]), "`correlation_jaccard`"),
        ("modules", lambda m: m.assign(selectivity_p=[-0.1]), "`selectivity_p`"),
        # eighth sweep: each was read as it was, against the rest of the atlas
        ("modules", lambda m: m.assign(n_shared_units=[2]), "`n_shared_units`"),
        ("units", _row("shared", 2, True), "`n_shared_units`"),
        ("units", _row("coupling", 0, 1.5), "`coupling`"),
        ("units", _row("coupling", 1, -1.2), "`coupling` of units.parquet"),
        ("units", _row("submodule", 1, 2), "`submodule` of units.parquet"),
        ("units", _row("submodule", 1, -2), "names -2"),
        ("modules", lambda m: m.assign(preferred_label=["z"]), "`preferred_label`"),
        # tenth sweep: a module drawn and described as spanning layers its units are not in
        ("modules", lambda m: m.assign(layers=[["b", "a"]]), "`layers` of module 0"),
        ("modules", lambda m: m.assign(layers=[["a", "c"]]), "`layers` of module 0"),
        (
            "units",
            lambda u: u.assign(
                module=[0, 0, -1, -1],
                membership=[0.9, 0.8, 0.0, 0.0],
                coupling=[0.5, 0.4, 0.0, 0.0],
                submodule=[0, 1, -1, -1],
            ),
            "`layers` of module 0",
        ),
    ],
)
def test_report_refuses_lists_and_references_that_disagree(tmp_path, run_cli, name, change, needle):
    cli, one_line = run_cli
    atlas = _atlas_of_two_layers(tmp_path / "atlas")
    table = atlas / f"{name}.parquet"
    change(pd.read_parquet(table)).to_parquet(table, index=False)
    one_line(cli("report", atlas), needle, f"{name}.parquet", "rerun `saeatlas analyze`")
    assert not (atlas / "report.html").exists()


def test_a_key_given_twice_in_atlas_json_is_refused(tmp_path, run_cli):
    # JSON parsers disagree on a key given twice (Python keeps the last): the report
    # showed the second `verdict` while another tool read the first
    import json

    cli, one_line = run_cli
    atlas = _atlas_of_two_layers(tmp_path / "atlas")
    text = (atlas / "atlas.json").read_text()
    verdict = json.loads(text)["verdict"]
    edited = text.replace('"verdict":', '"verdict": "modules", "verdict":', 1)
    assert edited != text and json.loads(edited)["verdict"] == verdict
    (atlas / "atlas.json").write_text(edited)
    one_line(cli("report", atlas), "the key 'verdict' is given twice", "atlas.json")
    assert not (atlas / "report.html").exists()


@pytest.mark.parametrize("name", ["flows.parquet", "atlas.json", "units.parquet"])
def test_a_folder_in_place_of_an_atlas_file_is_refused(tmp_path, run_cli, name):
    # pyarrow reads a folder as an empty dataset: a report dropped the flows without a
    # word, and named units.parquet as lacking its columns
    import shutil

    cli, one_line = run_cli
    atlas = _atlas_of_two_layers(tmp_path / "atlas")
    (atlas / name).unlink()
    (atlas / name).mkdir()
    shutil.copy(atlas / "modules.parquet", atlas / name / "part-0.parquet")
    one_line(cli("report", atlas), "has folders where its files go", name)
    assert not (atlas / "report.html").exists()
