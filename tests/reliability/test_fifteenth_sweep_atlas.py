"""The fifteenth hostile sweep's cases in analysis, atlas files, the report, interop and
export: each failed (a wrong or contradictory page, a traceback or no word) before its fix."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

FIXTURES = Path(__file__).parents[1] / "fixtures"


def _level(n: int, reproducible: int, reproducibility: list[float], agreement: float) -> dict:
    return {
        "scale": 1.0,
        "chosen": True,
        "n_consensus_modules": n,
        "n_reproducible_modules": reproducible,
        "reproducibility": reproducibility,
        "agreement": agreement,
    }


def test_the_stability_line_describes_the_correlation_modules_the_verdict_reports():
    """Where the verdict reports the units' correlation modules ("visible without the SAE"),
    the Stability line said only how the SAE ensemble's modules held up: on the digits demo
    '0 of 6 reproducible ... the members divide the units in unrelated ways' under a verdict
    of 3 reproducible modules. It now describes the reported modules first."""
    from saeatlas.report.summary import stability_text

    ensemble = {
        "n_saes": 3,
        "n_bootstrap": 1,
        "n_members": 6,
        "scale": 1.0,
        "levels": [_level(6, 0, [0.67, 0.67, 0.83, 0.67, 0.5, 0.17], 0.21)],
    }
    raw = {"n_members": 6, "scale": 1.0, "levels": [_level(3, 3, [1.0, 1.0, 0.83], 0.68)]}
    summary = {
        "modules_from": "unit_correlations",
        "ensemble": ensemble,
        "cross_check": {"raw": raw, "clean": {"n_members": 6, "levels": []}},
    }
    text = stability_text(SimpleNamespace(summary=summary))
    first, _, rest = text.partition(" The SAE's own modules")
    assert first.startswith("Modules of the units' correlations (6 members"), text
    assert "3 of 3 reproducible; members' mean pairwise ARI 0.68." in first, text
    assert "unrelated ways" not in first, text
    assert "which the verdict does not report" in rest and "0 of 6 reproducible" in rest, text
    # the SAE's own modules, when they are what the verdict reports, keep their line
    summary["modules_from"] = "sae"
    text = stability_text(SimpleNamespace(summary=summary))
    assert text.startswith("Ensemble of 3 SAEs x 2 row samples") and "0 of 6" in text, text


def _correlation_first_atlas(n_own: int, own_modularity: float):
    """An atlas whose verdict reports two modules of the units' correlations, beside the
    dictionary's own ``n_own`` modules (``sae_module``: none in any unit)."""
    import pandas as pd

    from saeatlas.structure.atlas import Atlas

    units = pd.DataFrame(
        {
            "unit": range(6),
            "layer": "a",
            "index": range(6),
            "module": [0, 0, 1, 1, -1, -1],
            "sae_module": -1,
        }
    )
    modules = pd.DataFrame({"module": [0, 1], "n_units": [2, 2], "significant": [True, True]})
    summary = {
        "modules_from": "unit_correlations",
        "verdict": "modules_visible_without_sae",
        "significant": True,
        "n_modules": 2,
        "n_significant_modules": 2,
        "modularity": 0.34,
        "nulls": [{"null": "independent units", "modularity": 0.34, "z": 14.0, "p": 1e-7}],
        "sae_modules": {
            "n_modules": n_own,
            "n_significant_modules": 0,
            "nulls": [{"null": "dictionary", "modularity": own_modularity, "z": 16.7, "p": 1e-8}],
        },
        "sae_partition_significant": True,
    }
    features = pd.DataFrame({"feature": [0], "module": [-1]})
    return Atlas(units=units, features=features, modules=modules, summary=summary)


def test_the_control_table_sets_the_trained_saes_own_modules_beside_the_random_ones(monkeypatch):
    """Where the atlas reports the units' correlation modules, the control table set those
    (digits demo: 3 significant modules, modularity 0.337) under 'trained SAE' beside the
    random SAE's own dictionary modules (0, modularity 0.485): the page read as if the
    trained SAE found 3 modules the random one does not, against a verdict that it adds
    nothing, and as if the random dictionary were more modular (the trained one's own is
    0.569). Both columns are now the dictionaries' own, and neither verdict is the
    correlations' 'visible without the SAE' beside 0 modules."""
    import saeatlas.structure.inference.control as control
    from saeatlas.structure import AtlasConfig

    random_one = _correlation_first_atlas(n_own=0, own_modularity=0.485)
    monkeypatch.setattr(control, "random_sae", lambda sae, **kw: sae)
    monkeypatch.setattr(control, "prepare", lambda *a, **kw: None)
    monkeypatch.setattr(control, "core_atlas", lambda inp: random_one)
    inp = SimpleNamespace(sae=None, store=None, seed_saes=[], cfg=AtlasConfig())
    inp.mode = inp.progress = inp.coord = None
    real = _correlation_first_atlas(n_own=1, own_modularity=0.569)
    out, _ = control.control_atlas(inp, real=real, scale_units=False)
    assert out["real"]["n_modules"] == 1 and out["real"]["n_significant_modules"] == 0, out
    assert out["real"]["modularity"] == 0.569 and out["real"]["z"] == {"dictionary": 16.7}
    for figures in (out, out["real"]):
        assert figures["verdict"] == "structure_without_reproducible_modules", figures
    # the trained SAE's own units (in no module) against the random one's: nothing to
    # compare (the correlation modules against none read ARI 0.00)
    assert out["unit_ari"] != out["unit_ari"], out["unit_ari"]


@pytest.mark.parametrize("dtype", ["bfloat", "int8", "float"])
def test_a_saelens_dtype_saelens_cannot_read_is_refused(tmp_path, run_cli, dtype):
    """A SAELens `cfg.json` whose `dtype` names no dtype SAELens knows (a typo 'bfloat', an
    integer type) was imported as a float32 SAE without a word; SAELens itself refuses it
    (it looks the name up in its DTYPE_MAP)."""
    cli, one_line = run_cli
    src = tmp_path / "src"
    shutil.copytree(FIXTURES / "saelens" / "topk", src)
    cfg = json.loads((src / "cfg.json").read_text())
    (src / "cfg.json").write_text(json.dumps({**cfg, "dtype": dtype}))
    one_line(cli("import-saelens", src, "--out", tmp_path / "out"), "`dtype`", repr(dtype))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"config": {"n_examples": 2}}, "got dict"),
        ({"config": "NeuronpediaConfig"}, "got the class itself"),  # the class, below
        ({"sae": 5}, "`sae` must be an SAE"),
        ({"store": [[0.0] * 18] * 20}, "`store` must be an ActivationStore"),
    ],
)
def test_export_neuronpedia_refuses_arguments_of_the_wrong_kind_before_the_work(
    tmp_path, forbid, kwargs, says
):
    """A dict as the config ended in an AttributeError and the class NeuronpediaConfig
    itself in a TypeError after the whole export (only writing run_settings.json failed);
    an SAE or store of the wrong kind in pathlib's TypeError."""
    import saeatlas.export.neuronpedia as neuronpedia
    from saeatlas.errors import ConfigError

    if kwargs.get("config") == "NeuronpediaConfig":
        kwargs = {"config": neuronpedia.NeuronpediaConfig}
    forbid(neuronpedia, "_export")
    with pytest.raises(ConfigError, match=says):
        neuronpedia.export_neuronpedia(tmp_path / "atlas", tmp_path / "np", **kwargs)
    assert not (tmp_path / "np").exists()


@pytest.mark.parametrize("value", ["5", 2.5, float("nan"), True, None])
def test_neuronpedia_settings_of_the_wrong_kind_are_refused(value):
    """`NeuronpediaConfig(n_examples="5")` (or None) ended in a TypeError and 2.5, NaN and
    True were taken (a float count of top rows failed in the middle of the export)."""
    from saeatlas.errors import ConfigError
    from saeatlas.export import NeuronpediaConfig

    for name in ("n_examples", "features_per_batch", "context"):
        with pytest.raises(ConfigError, match=f"`{name}` must be int"):
            NeuronpediaConfig(**{name: value})


def test_the_report_calls_one_members_modules_untested_as_the_verdict_does():
    """With one ensemble member (--seeds 1 --n-bootstrap 0) the verdict says one member
    cannot test reproducibility, and the modules table leaves it undefined; the report's
    Stability line said '3 of 3 consensus modules recovered ... 3 of 3 reproducible' and
    its Modules line '3 reproducible modules'."""
    from saeatlas.report.summary import modules_text, stability_text

    ensemble = {
        "n_saes": 1,
        "n_bootstrap": 0,
        "n_members": 1,
        "scale": 0.5,
        "levels": [_level(3, 3, [1.0, 1.0, 1.0], None)],
    }
    summary = {"modules_from": "sae", "ensemble": ensemble, "n_significant_modules": 0}
    data = SimpleNamespace(summary=summary, n_modules=3)
    text = stability_text(data)
    assert "reproducible" not in text and "one member cannot test" in text, text
    line = modules_text(data)
    assert "reproducible modules" not in line and "untested" in line, line


_LEVEL = {"scale": 1.0, "chosen": True, "n_consensus_modules": 1, "n_reproducible_modules": 1}


@pytest.mark.parametrize(
    "edit, needle",
    [
        # the report's Stability line read these: TypeError tracebacks half-way through it
        (
            {"ensemble": {"levels": [{**_LEVEL, "reproducibility": ["x"]}]}},
            "`ensemble.levels[0].reproducibility[0]` in",
        ),
        (
            {"ensemble": {"levels": [{**_LEVEL, "agreement": "x"}]}},
            "`ensemble.levels[0].agreement` in",
        ),
        ({"cross_check": {"raw": {"n_members": "x"}}}, "`cross_check.raw.n_members` in"),
        ({"cross_check": {"raw": {"levels": "x"}}}, "`cross_check.raw.levels` in"),
        (
            {"cross_check": {"clean": {"levels": [{**_LEVEL, "scale": "x"}]}}},
            "`cross_check.clean.levels[0].scale` in",
        ),
    ],
)
def test_an_edited_stability_entry_of_atlas_json_is_refused_by_report(
    tmp_path, outputs, run_cli, edit, needle
):
    cli, one_line = run_cli
    atlas = shutil.copytree(outputs.atlas, tmp_path / "atlas")
    summary = json.loads((atlas / "atlas.json").read_text())
    (atlas / "atlas.json").write_text(json.dumps({**summary, **edit}))
    one_line(cli("report", atlas), needle, "rerun `saeatlas analyze` with --overwrite")
    assert not (atlas / "report.html").exists()


@pytest.mark.parametrize(
    "name, change, needle",
    [
        # a KeyError traceback from the check of the modules' layers
        ("modules", lambda m: m.drop(columns=["module"]), "without their `module` column"),
        # `saeatlas run` printed its table of a complete atlas with these: a TypeError
        ("modules", lambda m: m.assign(selectivity=[None, None]), "`selectivity` of modules"),
        ("modules", lambda m: m.assign(selectivity=["high", "low"]), "`selectivity` of modules"),
        ("features", lambda f: f.assign(selectivity=[0.5, 2.0, 0.1, 0.1]), "`selectivity` of fea"),
        ("modules", lambda m: m.assign(counted=["yes", "no"]), "`counted` of modules"),
        ("modules", lambda m: m.assign(n_shared_units=[0.5, 0.0]), "`n_shared_units` of modules"),
    ],
)
def test_an_edited_module_or_feature_column_is_refused(
    tmp_path, edited_table_refused, two_modules_atlas, name, change, needle
):
    edited_table_refused(two_modules_atlas(tmp_path / "atlas"), name, change, needle)


@pytest.mark.parametrize("key", ["transcode", "signed", "skip_connection"])
def test_a_sparsify_flag_written_as_text_is_named_so(tmp_path, run_cli, key):
    """`"transcode": "false"` (text, as a hand-edited cfg.json may hold) was refused as a
    transcoder, a signed coder or a skip connection: a reason the SAE does not have."""
    cli, one_line = run_cli
    src = tmp_path / "run" / "layers.1"
    shutil.copytree(FIXTURES / "sparsify" / "run" / "layers.1", src)
    cfg = json.loads((src / "cfg.json").read_text())
    (src / "cfg.json").write_text(json.dumps({**cfg, key: "false"}))
    one_line(
        cli("import-sparsify", src, "--out", tmp_path / "out"),
        f"`{key}` must be true or false, got 'false'",
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"max_map_points": "5"}, "`max_map_points`) must be at least 1, got '5'"),
        ({"max_map_points": 1.5}, "got 1.5"),
        ({"max_map_points": True}, "got True"),
        ({"sweep_dir": 5}, "--sweep (`sweep_dir`) must be the path"),
        ({"out": 5}, "`out` must be a path (str or pathlib.Path), got 5"),
    ],
)
def test_write_report_refuses_settings_of_the_wrong_kind(tmp_path, two_modules_atlas, kwargs, says):
    """`write_report(atlas, max_map_points="5")` ended in a TypeError and 1.5 was taken;
    a sweep_dir of the wrong kind ended in pathlib's TypeError."""
    from saeatlas.errors import ConfigError
    from saeatlas.report import write_report

    atlas = two_modules_atlas(tmp_path / "atlas")
    with pytest.raises(ConfigError, match=re.escape(says)):
        write_report(atlas, **kwargs)
    assert not (atlas / "report.html").exists()


def test_validate_out_of_memory_names_its_rows(run_cli, monkeypatch):
    """`validate --rows 1000000000000` ran out of memory drawing the planted rows and
    advised only --d-sae; the rows are what grew. (Rows that cannot fit in this machine's
    memory are now refused before any work; the analysis running out of memory anyway
    is simulated on rows that fit.)"""
    import saeatlas.structure.synthetic.validate as validate

    def too_large(*args, **kwargs):
        raise MemoryError("Unable to allocate 29.1 TiB for an array")

    monkeypatch.setattr(validate, "validate_case", too_large)
    cli, one_line = run_cli
    one_line(cli("validate", "--cases", "easy", "--rows", 20_000), "Out of memory", "--rows")


def test_no_output_is_written_into_a_neuronpedia_export(tmp_path, outputs, run_cli):
    """A report's page (and an atlas) written into a Neuronpedia export was accepted; the
    next export, which replaces its folder whole, then refused to run until it was moved."""
    cli, one_line = run_cli
    export = tmp_path / "neuronpedia"
    export.mkdir()
    for name in ("run_settings.json", "skipped_indexes.json", "batch-0.json"):
        (export / name).write_text("{}")
    atlas = shutil.copytree(outputs.atlas, tmp_path / "atlas")
    one_line(cli("report", atlas, "--out", export / "page.html"), "the Neuronpedia export")
    args = ["analyze", "--sae", outputs.sae, "--acts", outputs.store, "--out", export / "a"]
    one_line(cli(*args), "inside the Neuronpedia export")
    assert sorted(p.name for p in export.iterdir()) == [
        "batch-0.json",
        "run_settings.json",
        "skipped_indexes.json",
    ]


def test_one_members_own_modules_are_not_said_to_fail_to_reproduce():
    """With the units' correlation modules reported and one SAE ensemble member
    (--seeds 1 --n-bootstrap 0), the verdict and the report's Modules line said the SAE's
    own modules 'do not reproduce across its ensemble': one member tests nothing."""
    import pandas as pd

    from saeatlas.report.summary import modules_text
    from saeatlas.structure.atlas import Atlas
    from saeatlas.structure.inference.outcome import decide

    summary = {
        "modules_from": "unit_correlations",
        "sae_modules": {"n_modules": 0, "n_significant_modules": 0},
        "ensemble": {"n_members": 1},
    }
    modules = pd.DataFrame({"module": [0], "n_units": [3], "significant": [True]})
    atlas = Atlas(units=pd.DataFrame(), features=pd.DataFrame(), modules=modules, summary=summary)
    decide(atlas)
    line = modules_text(SimpleNamespace(summary=atlas.summary, n_modules=1))
    for text in (atlas.summary["message"], line):
        assert "do not reproduce" not in text and "not tested for reproducibility" in text, text


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"overwrite": "no"}, "`overwrite` must be True or False, got 'no'"),
        ({"overwrite": 1}, "`overwrite` must be True or False, got 1"),
        ({"path": 5}, "`path` must be a path (str or pathlib.Path), got 5"),
    ],
)
def test_atlas_save_refuses_arguments_of_the_wrong_kind(tmp_path, two_modules_atlas, kwargs, says):
    """`Atlas.save(path, overwrite="no")` was read by its truth and replaced the atlas at
    `path`; a number as the path ended in pathlib's TypeError."""
    from saeatlas.errors import ConfigError
    from saeatlas.structure import Atlas

    path = two_modules_atlas(tmp_path / "atlas")
    before = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    atlas = Atlas.load(path)
    with pytest.raises(ConfigError, match=re.escape(says)):
        atlas.save(**{"path": path, **kwargs})
    assert {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()} == before
