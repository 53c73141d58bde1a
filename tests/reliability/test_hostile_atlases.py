"""atlas.json files that saeatlas never writes (edited by hand, or written by another
tool or an older version), read by `report` and `export-neuronpedia` (sixth sweep)."""

from __future__ import annotations

import json
import shutil

import pytest


@pytest.mark.parametrize("command", ["report", "export-neuronpedia"])
def test_a_lone_surrogate_in_atlas_json_is_one_line(tmp_path, outputs, run_cli, command):
    # "\ud800" is valid JSON text but no Unicode: the report ended in a UnicodeEncodeError
    # traceback when it wrote the page
    cli, one_line = run_cli
    atlas = shutil.copytree(outputs.atlas, tmp_path / "atlas")
    summary = json.loads((atlas / "atlas.json").read_text())
    (atlas / "atlas.json").write_text(json.dumps({**summary, "message": "M\ud800"}))
    args = ["--out", tmp_path / "np"] if command == "export-neuronpedia" else []
    one_line(cli(command, atlas, *args), "is unreadable", "surrogates not allowed")
    assert not (atlas / "report.html").exists() and not (tmp_path / "np").exists()


def test_non_finite_numbers_in_atlas_json_read_as_undefined(tmp_path, outputs):
    # saeatlas writes an undefined number as null; atlases of older versions hold NaN, and
    # an edited `"p": -Infinity` or `"z": 1e400` was shown on the page as a figure
    from saeatlas.structure.atlas import Atlas

    atlas = shutil.copytree(outputs.atlas, tmp_path / "atlas")
    text = (atlas / "atlas.json").read_text().rstrip().removesuffix("}")
    extra = '"control": {"significant": false, "unit_ari": NaN}, "p": -Infinity, "z": 1e400}'
    (atlas / "atlas.json").write_text(f"{text}, {extra}")
    summary = Atlas.load(atlas).summary
    assert summary["control"]["unit_ari"] is None
    assert summary["p"] is None and summary["z"] is None


def test_a_report_never_deletes_what_is_not_its_figures(tmp_path, analysed, run_cli):
    # each report replaces ATLAS/figures whole: a file put there, or a page written there
    # with --out, was deleted by the next report without a word
    cli, one_line = run_cli
    atlas = shutil.copytree(analysed, tmp_path / "atlas")
    assert cli("report", atlas).exit_code == 0
    one_line(cli("report", atlas, "--out", atlas / "figures" / "x.html"), "figures folder")
    assert not (atlas / "figures" / "x.html").exists()
    (atlas / "figures" / "notes.txt").write_text("mine")
    one_line(cli("report", atlas), "not a report's figures", "notes.txt")
    assert (atlas / "figures" / "notes.txt").read_text() == "mine"


def test_what_a_killed_report_left_does_not_block_an_overwrite(tmp_path, outputs):
    # a report killed while it drew its figures leaves `.figures.partial` and its lock
    # in the atlas directory: `analyze --overwrite` refused them as foreign files (and
    # replaced a figures folder holding the user's own files with the atlas)
    from saeatlas.errors import ConfigError
    from saeatlas.structure.atlas import Atlas

    atlas = shutil.copytree(outputs.atlas, tmp_path / "atlas")
    (atlas / ".figures.partial").mkdir()
    (atlas / ".figures.partial" / "feature_map.png").write_bytes(b"half")
    (atlas / ".figures.lock").write_text("")
    Atlas.load(atlas).save(atlas, overwrite=True)
    assert sorted(p.name for p in atlas.iterdir() if p.name.startswith(".")) == []
    (atlas / "figures").mkdir()
    (atlas / "figures" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an atlas's"):
        Atlas.load(atlas).save(atlas, overwrite=True)
    assert (atlas / "figures" / "notes.txt").read_text() == "mine"
