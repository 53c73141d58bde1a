"""The report written from a small real atlas: contents, sampling, figures, errors, CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from saeatlas.cli import app
from saeatlas.errors import ConfigError
from saeatlas.report import write_report
from saeatlas.report.data import map_sample
from saeatlas.report.links import module_links
from saeatlas.structure import Atlas, AtlasFileError

KEY_IDS = (
    "summary",
    "feature-map",
    "unit-map",
    "module-graph",
    "specialisation",
    "modules",
    "search",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def page_data(html: str) -> dict:
    """The JSON the page's script reads."""
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    assert m, "no #report-data block"
    return json.loads(m.group(1))


@pytest.fixture(scope="module")
def full_report(full_atlas, tmp_path_factory):
    out = tmp_path_factory.mktemp("full-report") / "report.html"
    result = write_report(full_atlas.atlas_dir, out)
    return result, out.read_text(encoding="utf-8")


def test_report_is_one_self_contained_page(full_atlas, full_report):
    result, html = full_report
    assert result.path.stat().st_size < 20e6
    # nothing is fetched: no external scripts, styles or images
    assert not re.search(r"<script[^>]+src=", html)
    assert not re.search(r"<link[^>]+href=", html)
    assert not re.search(r"<img[^>]+src=[\"']?https?:", html)
    assert html.count("plotly.js v") == 1  # Plotly's bundle, once
    for key in KEY_IDS:
        assert f'id="{key}"' in html, key
    for m in range(full_atlas.n_modules):
        assert f'id="module-{m}"' in html and f'data-module="{m}"' in html


def test_summary_reports_the_sweep_significance_stability_control_and_ablation(
    full_atlas, full_report
):
    _, html = full_report
    atlas = Atlas.load(full_atlas.atlas_dir)
    s = atlas.summary
    assert "MultiTaskMLP (report tests)" in html
    assert "the sweep&#39;s recommendation" in html and "Kneedle" in html
    assert "The atlas uses this SAE." in html
    assert f"{s['n_significant_modules']} of them significant" in html
    assert s["message"].replace("'", "&#39;") in html
    assert f"under the strictest null ({s['strictest_null']})" in html
    assert "row samples" in html and f"({s['ensemble']['n_members']} members)" in html
    assert 'id="control"' in html and "random SAE" in html
    assert f"against up to {s['ablation']['n_random']} random unit sets" in html
    assert (
        f"(a module&#39;s draws stop once {s['ablation']['stop_after']} sets did at least" in html
    )
    causal = int((atlas.modules["ablation_q"] <= 0.05).sum())
    assert (
        f"{causal} of {len(atlas.modules)} modules damage the loss more than random sets "
        "(p ≤ 0.05 after the Benjamini-Hochberg adjustment over the modules)"
    ) in html
    # the plot's outlines read the adjusted p too (its caption said p <= 0.05)
    assert (
        "outlined bars: the modules that hurt the loss more than random sets, at p ≤ 0.05 "
        "after the Benjamini-Hochberg" in html
    )
    # the control's table counts the SAEs' own modules, not the ones the verdict reports
    from_correlations = s.get("modules_from") == "unit_correlations"
    assert ("Both columns are the SAEs' own modules" in html) == from_correlations
    assert "No model given" not in html
    assert 'id="ablation-plot"' in html and 'id="specialisation-plot"' in html
    assert 'id="pareto-plot"' in html and 'id="training-plot"' in html


def test_the_summary_shows_the_plain_correlations_tests_the_verdict_reads(full_atlas, full_report):
    """The headline can say "the units' raw correlations beat the independent-units null"
    or that modules are visible without the SAE: the page shows each view's groups and
    the figures of its tests."""
    _, html = full_report
    views = Atlas.load(full_atlas.atlas_dir).summary["cross_check"]
    assert "Plain correlations" in html
    named = (
        ("raw", "Raw correlations (squared: units that rise as others fall tied too)"),
        ("clean", "Without the global mode and noise bulk (positive part)"),
    )
    for key, name in named:  # each view says which graph it partitioned
        v = views[key]
        assert f"{name}: " in html
        n = v["n_reproducible_modules"]
        assert f"{n} reproducible group{'s' * (n != 1)}" in html
        tests = v.get("tests") or [v["test"]]
        assert tests and tests[0]["null"] == "independent units (circular shifts)"
        for t in tests:
            shown = f"against {t['null']} {t['null_mean']:.3f} ± {t['null_std']:.3f}: z "
            assert shown in html, shown
        sig = v["n_significant_modules"]
        assert (
            f"{n} reproducible group{'s' * (n != 1)} at resolution {v['scale']:g}, {sig} significant"
            in html
        )


def test_page_data_matches_the_atlas(full_atlas, full_report):
    _, html = full_report
    atlas = Atlas.load(full_atlas.atlas_dir)
    data = page_data(html)
    assert data["features"]["id"] == atlas.features["feature"].tolist()
    assert data["units"]["name"] == [
        f"{l}:{i}" for l, i in zip(atlas.units.layer, atlas.units["index"])
    ]
    assert len(data["modules"]) == atlas.n_modules
    fmap = data["plots"]["feature-map-plot"]
    # one trace per module plus "no module" and the search marker
    assert fmap["modules"] == [-1, *range(atlas.n_modules), None]
    assert set(fmap["points"][0]) == set(atlas.features["feature"])  # small atlas: all drawn
    assert data["sampled"] is False
    detail = data["featureDetail"][str(int(atlas.features.feature.iloc[0]))]
    assert detail["u"] == list(atlas.features.top_units.iloc[0])
    assert data["plots"]["module-graph-plot"]["modules"] == list(range(atlas.n_modules))


def test_static_figures_are_valid_pngs(full_atlas, full_report):
    result, _ = full_report
    names = sorted(p.name for p in result.figures)
    assert names == sorted(
        [
            "feature_map.png",
            "layer_module.png",
            "module_graph.png",
            "pareto.png",
            "specialisation.png",
        ]
    )
    for p in result.figures:
        assert p.parent == full_atlas.atlas_dir / "figures"
        assert p.read_bytes()[:8] == PNG_MAGIC
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.width >= 300 and im.height >= 300


def test_a_large_map_is_sampled_keeping_every_module_member(full_atlas, tmp_path):
    atlas = Atlas.load(full_atlas.atlas_dir)
    members = set(atlas.features.feature[atlas.features.module >= 0])
    cap = len(members) + 10
    result = write_report(full_atlas.atlas_dir, tmp_path / "r.html", max_map_points=cap)
    html = result.path.read_text()
    assert result.sampled
    assert 'data-sampled="true"' in html and "Sampled: showing" in html
    assert f"all {len(members)} module members" in html
    drawn = set(page_data(html)["plots"]["feature-map-plot"]["points"][0])
    assert members <= drawn and len(drawn) == cap
    # search still knows every feature
    assert len(page_data(html)["features"]["id"]) == full_atlas.d_sae


def test_missing_parts_say_so(bare_atlas):
    result = write_report(bare_atlas)
    html = result.path.read_text()
    assert result.path == bare_atlas / "report.html"
    assert "No sparsity sweep found" in html
    assert "No training curves: atlas.json records no SAE directory" in html
    assert "No model given: no causal check." in html
    assert "No random-SAE control in this atlas" in html
    assert "Not measured: rerun `saeatlas analyze` with `--seeds 3`" in html.replace("&#96;", "`")
    for absent in ('id="pareto-plot"', 'id="training-plot"', 'id="ablation-plot"'):
        assert absent not in html
    # the label selectivity still shows, marked as not causal
    assert 'id="selectivity-plot"' in html and "not causal" in html
    assert sorted(p.name for p in result.figures) == [
        "feature_map.png",
        "layer_module.png",
        "module_graph.png",
    ]


def test_text_from_data_is_escaped(atlas_copy):
    atlas = Atlas.load(atlas_copy)
    evil = '<script>alert("x")</script>'
    ex = atlas.examples.copy()
    ex["text"] = evil
    atlas.examples = ex
    # a label class named in HTML (the one module 0 prefers), renamed everywhere the
    # atlas names it
    first = atlas.modules["preferred_label"][0]
    classes = atlas.summary["label_classes"]
    classes[classes.index(first)] = "<b>bold</b>"
    for table in (atlas.features, atlas.modules):
        table["preferred_label"] = table["preferred_label"].replace(first, "<b>bold</b>")
    atlas.summary["model"] = "<img src=x onerror=alert(1)>"
    atlas.save(atlas_copy, overwrite=True)
    html = write_report(atlas_copy).path.read_text()
    assert evil not in html and "<b>bold</b>" not in html and "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    # inside the page's JSON and Plotly's labels, < is written \u003c
    assert "\\u003cscript\\u003e" in html or "&lt;script&gt;" in html
    assert page_data(html)["featureDetail"]  # the JSON block still parses


def test_a_layer_name_with_dollars_is_drawn_as_text(atlas_copy, tmp_path, monkeypatch):
    """A layer named 'a$x^{$' (a module's name may hold any text) ended the report in
    matplotlib's ParseSyntaxException after the page's figures were drawn; 'cost$1$'
    was drawn as a formula."""
    from matplotlib.text import Text

    from saeatlas.report import figures, write
    from saeatlas.report.data import load_report_data
    from saeatlas.report.graph import module_graph_positions

    name = "a$x^{$"
    atlas = Atlas.load(atlas_copy)
    atlas.units["layer"] = atlas.units["layer"].replace("act1", name)
    atlas.modules["layers"] = [
        [name if n == "act1" else n for n in ls] for ls in atlas.modules["layers"]
    ]
    for col in ("source_layer", "target_layer"):
        atlas.flows[col] = atlas.flows[col].replace("act1", name)
    atlas.summary["layers"] = [name if n == "act1" else n for n in atlas.summary["layers"]]
    atlas.save(atlas_copy, overwrite=True)
    seen, draw = [], Text.draw

    def spy(self, renderer):
        if name in self.get_text():
            seen.append(self.get_parse_math())
        return draw(self, renderer)

    monkeypatch.setattr(Text, "draw", spy)
    data = load_report_data(atlas_copy)
    links = module_links(data.atlas)
    pos = module_graph_positions(data.n_modules, links)
    for other in ("feature_map_png", "module_graph_png", "pareto_png", "specialisation_png"):
        monkeypatch.setattr(figures, other, lambda *a: figures._figure(1, 1))  # only the layers'
    write._static(data, links, pos, tmp_path)  # as write_report draws them
    assert seen and not any(seen)  # drawn, and as plain text


def test_a_sweep_whose_knee_lies_at_an_end_says_so(full_atlas, tmp_path):
    import json
    import shutil

    sweep_dir = tmp_path / "sweep"
    shutil.copytree(full_atlas.sweep_dir, sweep_dir)
    raw = json.loads((sweep_dir / "sweep.json").read_text())
    raw.update(knee_inside=False, extended=[32.0], note="The knee lies at the high end of it.")
    (sweep_dir / "sweep.json").write_text(json.dumps(raw))
    html = write_report(full_atlas.atlas_dir, tmp_path / "r.html", sweep_dir=sweep_dir)
    text = html.path.read_text()
    assert "the sweep added 32" in text and "The knee lies at the high end of it." in text


def test_bad_inputs_raise_clear_errors(atlas_copy, tmp_path):
    with pytest.raises(AtlasFileError, match="does not exist; give the atlas directory"):
        write_report(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AtlasFileError, match="no atlas.json.*analyze"):
        write_report(tmp_path / "empty")
    with pytest.raises(ConfigError, match="--sweep .* holds no sweep.json"):
        write_report(atlas_copy, sweep_dir=tmp_path)
    with pytest.raises(
        ConfigError, match=r"--max-map-points \(`max_map_points`\) must be at least 1, got 0"
    ):
        write_report(atlas_copy, max_map_points=0)
    (atlas_copy / "features.parquet").write_bytes(b"not parquet")
    with pytest.raises(AtlasFileError, match="unreadable"):
        write_report(atlas_copy)


def test_cli_report(full_atlas, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli.html"
    args = [
        "report",
        str(full_atlas.atlas_dir),
        "--out",
        str(out),
        "--sweep",
        str(full_atlas.sweep_dir),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert str(out) in result.output.replace("\n", "") and out.stat().st_size > 1e6
    result = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert "does not exist" in result.output and "Traceback" not in result.output


def test_map_sample_keeps_members_and_is_seeded():
    f = pd.DataFrame(
        {"feature": np.arange(1000), "module": np.r_[np.arange(100) % 5, -np.ones(900, int)]}
    )
    a, b = map_sample(f, 300), map_sample(f, 300)
    assert a.sampled and a.n_members == 100 and a.n_others_drawn == 200
    assert np.array_equal(a.rows, b.rows) and len(a.rows) == 300
    assert set(range(100)) <= set(a.rows.tolist())
    tight = map_sample(f, 50)  # fewer points than members: the members alone
    assert len(tight.rows) == 100 and tight.n_others_drawn == 0
    assert not map_sample(f, 5000).sampled


def test_module_links_use_flows_then_examples(full_atlas):
    atlas = Atlas.load(full_atlas.atlas_dir)
    links = module_links(atlas, min_weight=0.0)
    assert links.kind == "flows" and "coactivation" in links.measure
    e = links.edges
    assert (e.source < e.target).all() and len(e) > 0
    flows = atlas.flows
    a, b = int(e.source.iloc[0]), int(e.target.iloc[0])
    pair = flows[
        ((flows.source_module == a) & (flows.target_module == b))
        | ((flows.source_module == b) & (flows.target_module == a))
    ]
    assert e.weight.iloc[0] == pytest.approx(pair.coactivation.mean())
    atlas.flows = pd.DataFrame()
    links = module_links(atlas, min_weight=0.0)
    assert links.kind == "examples" and "Jaccard" in links.measure
    assert ((links.edges.weight >= 0) & (links.edges.weight <= 1)).all()


def test_an_atlas_without_modules_still_reports(atlas_copy):
    atlas = Atlas.load(atlas_copy)
    atlas.units["module"] = -1
    atlas.features["module"] = -1
    atlas.modules = atlas.modules.iloc[0:0]
    atlas.flows = pd.DataFrame()
    atlas.ablation = pd.DataFrame()
    atlas.examples = atlas.examples[atlas.examples.kind == "feature"]
    s = atlas.summary
    # the partitions' p-values beat no null (the flags of significance are checked by them)
    for test in [*s["nulls"], *s.get("sae_modules", {}).get("nulls", [])]:
        test["p"] = 1.0
    s["p"] = 1.0  # the strictest null's
    for view in s.get("cross_check", {}).values():
        view["partition_significant"] = False
        view["n_significant_modules"] = 0  # (none without the partition)
        for test in [view.get("test"), *view.get("tests", [])]:
            if test:
                test["p"] = 1.0
    s.update(n_modules=0, n_significant_modules=0, significant=False)
    s.update(verdict="no_significant_structure", partition_significant=False)
    s.update(n_sae_only_modules=0, sae_partition_significant=False)
    for key in ("stability", "control"):
        atlas.summary.pop(key, None)
    atlas.save(atlas_copy, overwrite=True)
    html = write_report(atlas_copy).path.read_text()
    # the ablation ran and found nothing to ablate: not "No model given"
    assert "The model was given, but the atlas has no modules to ablate." in html
    assert "No model given" not in html
    msg = Atlas.load(atlas_copy).summary["message"]  # the headline the tables give
    assert msg.startswith("No significant structure") and msg in html
    assert "The atlas found no modules" in html
    assert "nothing to ablate" in html
    assert page_data(html)["plots"]["feature-map-plot"]["modules"] == [-1, None]


def test_modularity_shown_beside_the_null_is_the_one_tested(capsys):
    # The nulls test the finder's partition before its communities are cut to their
    # cores; the cores' lower modularity beside the null's mean read as a failed test
    # with a positive z (0.469 "against" 0.568, z 7.2).
    from types import SimpleNamespace

    from saeatlas.cli.tables import print_atlas
    from saeatlas.report.summary import modularity_text

    null = {"null": "dictionary", "modularity": 0.666, "null_mean": 0.568, "null_std": 0.014}
    s = {
        **{k: null[k] for k in ("null_mean", "null_std")},
        "modularity": 0.469,
        "z": 7.2,
        "p": 4e-13,
        "strictest_null": "dictionary",
        "nulls": [{**null, "z": 7.2, "p": 4e-13}],
        "n_modules": 0,
        "module_kind": "co-activation",
        "message": "",
    }
    assert modularity_text(s).startswith("0.666 (the tested partition")
    # an SAE that records no training settings: the weaker, self-sourced null says so
    s["dictionary_null_source"] = "self (the SAE records no training settings)"
    assert "weaker null" in modularity_text(s) and "--seed-sae" in modularity_text(s)
    print_atlas(SimpleNamespace(summary=s, modules=pd.DataFrame()))
    assert "modularity 0.666; strictest null" in capsys.readouterr().out


def test_the_stability_line_names_the_sub_modules_under_the_reported_modules():
    from types import SimpleNamespace

    from saeatlas.report.summary import stability_text

    def level(scale, n, chosen=False, submodules=False):
        return {
            "scale": scale,
            "n_consensus_modules": n,
            "n_reproducible_modules": n,
            "reproducibility": [1.0] * n,
            "agreement": 0.9,
            "chosen": chosen,
            "submodules": submodules,
        }

    levels = [level(0.25, 2, chosen=True), level(0.5, 2), level(1.0, 4, submodules=True)]
    ens = {"n_saes": 3, "n_bootstrap": 1, "n_members": 6, "scale": 0.25, "levels": levels}
    text = stability_text(SimpleNamespace(summary={"modules_from": "sae", "ensemble": ens}))
    assert "2 of 2 reproducible" in text
    assert text.endswith(
        "Sub-modules: the 4 reproducible modules of the finer resolution 1 "
        "(`submodule` in units.parquet)."
    ), text
    levels[2]["submodules"] = False  # none marked (the finest scale reported): no line
    text = stability_text(SimpleNamespace(summary={"modules_from": "sae", "ensemble": ens}))
    assert "Sub-modules" not in text


def test_the_cli_table_says_how_the_sub_modules_lie_under_the_modules(capsys):
    from types import SimpleNamespace

    from saeatlas.cli.tables import _print_submodules

    units = pd.DataFrame({"module": [0, 0, 0, 0, 1, 1, -1], "submodule": [0, 0, 1, 1, 2, 2, 3]})
    _print_submodules(units)
    out = " ".join(capsys.readouterr().out.split())
    assert "4 (module 0: 2, module 1: 1, in no module: 1)" in out, out
    _print_submodules(units.assign(submodule=-1))  # none: no line
    _print_submodules(SimpleNamespace(units=None).units)
    assert capsys.readouterr().out == ""


def test_the_module_graphs_hover_shows_no_empty_stability_verdict(full_atlas):
    """An ensemble's atlas has a `stability` (its reproducibility) and no verdict column:
    the hover read 'stability 1.00 ()'."""
    from saeatlas.report.data import load_report_data
    from saeatlas.report.graph import module_graph, module_graph_positions

    data = load_report_data(full_atlas.atlas_dir)
    assert "stability" in data.atlas.modules
    links = module_links(data.atlas)
    plot = module_graph(data, links, module_graph_positions(data.n_modules, links))
    hover = " ".join(
        str(t) for tr in plot.figure.data for t in (*(tr.text or ()), *(tr.hovertext or ()))
    )
    assert "stability" in hover and "()" not in hover, hover


def test_module_graph_nodes_are_kept_apart():
    """A spring layout drew three linked modules within 0.7 of each other on a plot 12
    wide (those positions below): their markers overlapped and hovering module 0's
    centre highlighted another module."""
    from saeatlas.report.graph import NODE_GAP, kept_apart

    def nearest(p):
        d = np.linalg.norm(p[:, None] - p[None], axis=2)
        np.fill_diagonal(d, np.inf)
        return d.min() / np.ptp(p, axis=0).max()

    drawn = np.array(
        [
            [3.97, 3.09],
            [4.17, 3.71],
            [3.45, 3.64],
            [-5.83, 1.03],
            [-0.49, -6.15],
            [-5.37, 0.75],
            [0.09, -6.07],
        ]
    )
    assert nearest(drawn) < 0.06
    apart = kept_apart(drawn)
    assert nearest(apart) >= NODE_GAP - 1e-9
    assert np.abs(apart - drawn).max() < 1.0  # the layout's shape stays
    spread = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(kept_apart(spread), spread)  # far enough: untouched
    same = kept_apart(np.zeros((3, 2)) + [[0, 0], [0, 0], [4, 4]])  # one spot: parted
    assert nearest(same) >= NODE_GAP - 1e-9
    np.testing.assert_array_equal(same, kept_apart(np.zeros((3, 2)) + [[0, 0], [0, 0], [4, 4]]))
