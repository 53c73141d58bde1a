"""The fourteenth hostile sweep's cases in the report and the tables an atlas prints:
each failed (a wrong or contradictory page, a traceback or no word) before its fix."""

from __future__ import annotations

import pytest


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (BaseException, like KeyboardInterrupt)."""


def test_a_report_stopped_between_its_figures_and_its_page_leaves_no_mismatched_page(
    tmp_path, analysed, monkeypatch
):
    """The figures were swapped in, then the page rendered and written: a kill between left
    the old page beside another report's figures, and an error in rendering the page left
    it so too. The page is now rendered before the swap, and the old page leaves first."""
    import shutil

    import saeatlas.report.write as write

    def drawn(data, links, pos, folder):  # the PNGs (the slow part) as stand-ins
        (folder / "layer_module.png").write_bytes(b"png")
        return [folder / "layer_module.png"]

    monkeypatch.setattr(write, "_static", drawn)
    atlas = shutil.copytree(analysed, tmp_path / "atlas")
    page = tmp_path / "page.html"  # outside the atlas, which an --overwrite keeps
    write.write_report(atlas, page)
    old = page.read_bytes()
    figures = {p.name: p.stat().st_ino for p in (atlas / "figures").iterdir()}

    def broken(*args, **kwargs):
        raise ValueError("a template error")

    render = write.render_page
    monkeypatch.setattr(write, "render_page", broken)
    with pytest.raises(ValueError, match="a template error"):
        write.write_report(atlas, page)
    assert page.read_bytes() == old  # nothing changed: figures and page are the old ones
    assert {p.name: p.stat().st_ino for p in (atlas / "figures").iterdir()} == figures
    monkeypatch.setattr(write, "render_page", render)

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(write, "atomic_write_bytes", killed)
    with pytest.raises(Killed):
        write.write_report(atlas, page)
    new = {p.name: p.stat().st_ino for p in (atlas / "figures").iterdir()}
    assert new.keys() == figures.keys() and new != figures  # the new report's figures
    assert not page.exists()  # and no page that lists them as the old report's


#: Unicode's right-to-left override: the text after it reads backwards up to the end of
#: its paragraph, unless an isolate around it (FSI ... PDI) ends its reach first.
RLO, PDI = "\u202e", "\u2069"


def _ends_inside(page: str, rlo: str, pdi: str, stops: str) -> bool:
    """Whether every ``rlo`` in ``page`` meets a ``pdi`` before any of ``stops``."""
    at = page.find(rlo)
    while at >= 0:
        rest = page[at:]
        end = min([rest.find(c) for c in stops if c in rest] or [len(rest)])
        if pdi not in rest[:end]:
            return False
        at = page.find(rlo, at + 1)
    return True


def test_a_right_to_left_override_in_a_name_is_kept_inside_it(tmp_path, analysed):
    """A layer named with a right-to-left override (U+202E) reversed the rest of each line
    it was shown in: a module card's 'layers a‮, 3' and the p-values after it read
    backwards. Text from the atlas is now isolated (FSI ... PDI) wherever the page shows
    it: the template, the Plotly labels and the data the page's script shows."""
    from saeatlas.report import write_report
    from saeatlas.structure.atlas import Atlas

    atlas = Atlas.load(analysed)
    name = f"x{PDI}{RLO}evil"  # a stray PDI of its own must not end the isolate early
    renamed = {"1": name}
    atlas.units["layer"] = atlas.units["layer"].map(lambda n: renamed.get(n, n))
    atlas.summary["layers"] = [renamed.get(n, n) for n in atlas.summary["layers"]]
    atlas.modules["layers"] = [[renamed.get(n, n) for n in ls] for ls in atlas.modules["layers"]]
    page = write_report(atlas.save(tmp_path / "atlas")).path.read_text(encoding="utf-8")
    assert RLO in page and "\\u202e" in page  # shown as text and in the page's data
    assert _ends_inside(page, RLO, PDI, "<\n")
    assert _ends_inside(page, "\\u202e", "\\u2069", '"')


@pytest.mark.parametrize(
    "sae_modules, says",
    [
        ({"n_modules": 1, "n_significant_modules": 0}, "own 1 reproducible module does not beat"),
        ({"n_modules": 2, "n_significant_modules": 1}, "own 1 significant reproducible module"),
        ({"n_modules": 0, "n_significant_modules": 0}, "own modules do not reproduce"),
    ],
)
def test_the_reports_modules_line_says_what_the_verdict_says_of_the_saes_modules(sae_modules, says):
    """Where the top level is the units' correlations, the report's 'Modules' line said
    '(the SAE's own modules do not reproduce)' also when the verdict above it said the
    SAE's own reproducible module does not beat its null models, or covers fewer units."""
    from types import SimpleNamespace

    import pandas as pd

    from saeatlas.report.summary import modules_text
    from saeatlas.structure.atlas import Atlas
    from saeatlas.structure.inference.outcome import decide

    summary = {
        "modules_from": "unit_correlations",
        "sae_modules": sae_modules,
        "partition_significant": True,
        "ensemble": {"n_members": 6},
        "module_kind": "co-activation",
    }
    modules = pd.DataFrame({"module": [0], "n_units": [3], "significant": [True]})
    atlas = Atlas(units=pd.DataFrame(), features=pd.DataFrame(), modules=modules, summary=summary)
    decide(atlas)
    assert says in atlas.summary["message"]
    line = modules_text(SimpleNamespace(summary=atlas.summary, n_modules=1))
    assert says in line, line


def test_the_cli_table_prints_an_untested_module_as_undefined(capsys):
    """A module of no test (--n-null 0) printed p 'nan' beside z '-', and one of no
    preferred label 'None (nan)'; undefined figures print '-', as atlas.json holds null."""
    import pandas as pd

    from saeatlas.cli.tables import print_atlas
    from saeatlas.structure.atlas import Atlas

    modules = pd.DataFrame(
        {
            "module": [0],
            "n_units": [3],
            "n_features": [2],
            "layers": [["a"]],
            "z": [float("nan")],
            "p": [float("nan")],
            "significant": [False],
            "reproducibility": [float("nan")],
            "preferred_label": [None],
            "selectivity": [float("nan")],
            "ablation_effect": [float("nan")],
            "ablation_p": [float("nan")],
        }
    )
    summary = {"n_modules": 1, "module_kind": "co-activation", "message": "None counts."}
    print_atlas(
        Atlas(units=pd.DataFrame(), features=pd.DataFrame(), modules=modules, summary=summary)
    )
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("│ 0"))
    assert "nan" not in row.lower() and "None" not in row, row


def test_an_atlas_object_or_its_json_given_for_its_directory_is_named(tmp_path, outputs):
    """`write_report(atlas)` and `export_neuronpedia(atlas, ...)` with the Atlas object
    (they read its directory) ended in pathlib's 'expected str, bytes or os.PathLike
    object', and `Atlas.load('ATLAS/atlas.json')` said the atlas had no atlas.json."""
    from saeatlas.export import export_neuronpedia
    from saeatlas.report import write_report
    from saeatlas.structure.atlas import Atlas
    from saeatlas.structure.atlas_format import AtlasFileError

    atlas = Atlas.load(outputs.atlas)
    with pytest.raises(AtlasFileError, match=r"an Atlas object .* \(atlas.save\(DIR\)\)"):
        write_report(atlas)
    with pytest.raises(AtlasFileError, match=r"an Atlas object .* \(atlas.save\(DIR\)\)"):
        export_neuronpedia(atlas, tmp_path / "np")
    assert not (tmp_path / "np").exists()
    with pytest.raises(AtlasFileError, match="atlas.json' is not a directory"):
        Atlas.load(outputs.atlas / "atlas.json")


def test_the_reports_stability_line_counts_what_it_says_it_counts():
    """At a scale whose members disagree (mean pairwise ARI below 0.5) no module counts as
    reproducible, even one every member recovers: the report said '0 of 2 consensus
    modules recovered by at least 75% of the members' of two modules recovered by all."""
    from types import SimpleNamespace

    from saeatlas.report.summary import stability_text

    level = {
        "scale": 1.0,
        "chosen": True,
        "n_consensus_modules": 2,
        "n_reproducible_modules": 0,
        "reproducibility": [1.0, 1.0],
        "agreement": 0.3,
    }
    ensemble = {"n_saes": 3, "n_bootstrap": 1, "n_members": 6, "scale": 1.0, "levels": [level]}
    text = stability_text(SimpleNamespace(summary={"ensemble": ensemble}))
    assert "2 of 2 consensus modules recovered by at least 75%" in text, text
    assert "0 of 2 reproducible" in text and "in unrelated ways" in text, text
