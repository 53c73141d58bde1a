"""Outputs refused where they are claimed (:func:`saeatlas.store.lock.check_writable`),
before any work: one inside another saeatlas output, a plain folder that holds one, a
name too long for the folder it is written into first."""

from __future__ import annotations

import os
import shutil

import pytest

from saeatlas.store.lock import OUTPUT_MARKERS


@pytest.mark.parametrize("outer", ["sae", "atlas", "sweep", "store"])
@pytest.mark.parametrize("command", ["capture", "train", "analyze"])
def test_an_output_inside_another_output_is_refused(tmp_path, guarded, run_cli, outer, command):
    """`analyze --out SAE_DIR/atlas` was written, and the SAE's next `train --overwrite`
    then refused (or a sweep's `--overwrite` deleted it)."""
    cli, one_line = run_cli
    parent = shutil.copytree(getattr(guarded, outer), tmp_path / outer)
    if outer == "sweep":  # the fixture's holds only sweep.json; a sweep writes both
        (parent / "pareto.json").write_text("{}")
    args = {
        "capture": [
            "capture",
            "--model",
            guarded.model,
            "--inputs",
            guarded.inputs,
            "--layers",
            "1",
        ],
        "train": ["train", "--acts", guarded.store, "--d-sae", "8", "--k", "2", "--tokens", "64"],
        "analyze": ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--seeds", "1"],
    }[command]
    what = {"sae": "the SAE", "store": "the activation store"}.get(outer, f"the {outer}")
    one_line(cli(*args, "--out", parent / "inner", "-q"), f"inside {what} '{parent}'")


def test_a_sweep_into_a_folder_holding_an_sae_keeps_that_sae(tmp_path, guarded, run_cli):
    """`sweep --out DIR` where DIR/k-8 held an SAE took it for one of its members and
    deleted it when the sweep was swapped in."""
    cli, one_line = run_cli
    shutil.copytree(guarded.sae, tmp_path / "dir" / "k-8")
    before = sorted(p.name for p in (tmp_path / "dir" / "k-8").iterdir())
    args = ["sweep", "--acts", guarded.store, "--over", "k", "--values", "2", "4", "-q"]
    one_line(cli(*args, "--out", tmp_path / "dir"), "holds the SAE", "k-8")
    assert sorted(p.name for p in (tmp_path / "dir" / "k-8").iterdir()) == before


def test_the_output_markers_are_the_writers_file_names():
    from saeatlas.export.neuronpedia import SETTINGS, SKIPPED
    from saeatlas.sae.files import CFG, WEIGHTS
    from saeatlas.store.manifest import MANIFEST, ROWS
    from saeatlas.structure.atlas import ATLAS_JSON
    from saeatlas.sweep.sweep import PARETO_JSON, SWEEP_JSON

    assert [m for m, _ in OUTPUT_MARKERS] == [
        (MANIFEST, ROWS),
        (CFG, WEIGHTS),
        (ATLAS_JSON, "units.parquet"),
        (SWEEP_JSON, PARETO_JSON),
        (SETTINGS, SKIPPED),
    ]


@pytest.mark.parametrize("command", ["capture", "train"])
def test_a_name_too_long_for_its_partial_folder_is_refused_first(
    tmp_path, guarded, run_cli, command
):
    """A 247-byte --out fits the filesystem's 255 but its '.NAME.partial' does not: the
    capture or training ran to its end and then failed, losing the work."""
    cli, one_line = run_cli
    args = {
        "capture": ["capture", "--model", guarded.model, "--inputs", guarded.inputs,
                    "--layers", "1"],
        "train": ["train", "--acts", guarded.store, "--d-sae", "8", "--k", "2", "--tokens",
                  "64", "--seeds", "1"],
    }[command]  # fmt: skip
    one_line(cli(*args, "--out", tmp_path / ("n" * 247), "-q"), "at most 246 bytes")
    assert os.listdir(tmp_path) == []


def test_a_run_directory_may_hold_other_outputs(tmp_path, outputs):
    """A run directory is a folder of outputs: one that holds a store or an atlas of the
    user's is claimed for a run, but not as a store, SAE, atlas or sweep."""
    from saeatlas.store.lock import OutputError, check_writable

    shutil.copytree(outputs.atlas, tmp_path / "run" / "my-atlas")
    check_writable(tmp_path / "run", holds_outputs=True)
    with pytest.raises(OutputError, match="holds the atlas"):
        check_writable(tmp_path / "run")


def test_a_project_folder_with_an_atlas_json_of_its_own_is_no_output(tmp_path, outputs):
    """One marker file is not an output: a repository whose root holds an `atlas.json`
    or `sweep.json` of another tool may hold saeatlas outputs."""
    from saeatlas.store.lock import check_writable

    (tmp_path / "atlas.json").write_text("{}")
    (tmp_path / "sweep.json").write_text("{}")
    check_writable(tmp_path / "runs" / "store")
