"""The twenty-first hostile sweep's cases in `analyze`, `sweep` and the atlas's own files:
each failed (a traceback, a wrong result or a misleading word) before its fix."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

SMALL_SWEEP = ["--d-sae", "16", "--tokens", "256", "--batch-size", "64", "-q"]


def test_an_ablation_effect_without_its_p_value_is_refused(tmp_path, two_modules_atlas, run_cli):
    """modules.parquet with `ablation_effect` but not `ablation_p` (dropped by hand) ended
    the report half-way, at its module graph, in "'Pandas' object has no attribute
    'ablation_p'"."""
    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    modules = pd.read_parquet(atlas / "modules.parquet")
    effects = {"ablation_effect": [0.2, 0.1], "ablation_z": [3.0, 1.0]}
    modules.assign(**effects, ablation_draws=[20, 20]).to_parquet(atlas / "modules.parquet")
    one_line(
        cli("report", atlas),
        f"modules.parquet in '{atlas}' has one of the columns `ablation_effect` and "
        "`ablation_p` without the other",
    )
    assert not (atlas / "report.html").exists()


@pytest.mark.parametrize("label,shown", [(-5, "names -5,"), (1.5, "names 1.5,")])
def test_a_preferred_label_of_numbers_is_named_as_written(
    tmp_path, two_modules_atlas, run_cli, label, shown
):
    """A `preferred_label` that is no class of the atlas was named as NumPy writes it:
    "names np.int64(-5)"."""
    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    (atlas / "atlas.json").write_text(
        (atlas / "atlas.json")
        .read_text()
        .replace('"n_modules"', '"label_classes": ["0"], "n_modules"')
    )
    modules = pd.read_parquet(atlas / "modules.parquet")
    modules.assign(preferred_label=[label, label]).to_parquet(atlas / "modules.parquet")
    line = one_line(cli("report", atlas), "`preferred_label` of modules.parquet", shown)
    assert "np." not in line


@pytest.mark.parametrize(
    "values,needle",
    [
        # both 0 in float32: three identical SAEs (the extension added 5e-321), the knee
        # "inside" the range
        (["1e-320", "2e-320"], "--values 1e-320 is 0 in float32"),
        # one float32 number: two identical SAEs under two values
        (["1", "1.00000001"], "--values 1.00000001 is the same as 1.0 in float32"),
    ],
)
def test_sweep_values_that_are_one_float32_number_are_refused(
    tmp_path, outputs, run_cli, values, needle
):
    cli, one_line = run_cli
    out = tmp_path / "sweep"
    flags = ["--over", "l1_coefficient", "--architecture", "relu", "--values", *values]
    one_line(cli("sweep", "--acts", outputs.store, "--out", out, *flags, *SMALL_SWEEP), needle)
    assert not out.exists()


def test_a_penalty_that_is_zero_in_float32_is_refused(tmp_path, outputs, run_cli):
    """`train --l1-coefficient 1e-320` trained an SAE without any penalty, without a word."""
    cli, one_line = run_cli
    out = tmp_path / "sae"
    flags = ["--architecture", "relu", "--l1-coefficient", "1e-320", *SMALL_SWEEP]
    one_line(
        cli("train", "--acts", outputs.store, "--out", out, *flags),
        "--l1-coefficient (1e-320) is 0 in float32",
        "give 0 or at least 1.4e-45",
    )
    assert not out.exists()


def test_a_sweep_is_not_extended_to_a_value_float32_cannot_hold(tmp_path, outputs, run_cli):
    """The knee at the low end of 1e-45 and 3e-45 extended the sweep to 5e-46, 0 in float32:
    an SAE without a penalty, recorded as l1 5e-46."""
    import json

    cli, _ = run_cli
    out = tmp_path / "sweep"
    flags = ["--over", "l1_coefficient", "--architecture", "relu", "--values", "1e-45", "3e-45"]
    r = cli("sweep", "--acts", outputs.store, "--out", out, *flags, *SMALL_SWEEP, "--seeds", "1")
    assert r.exit_code == 0, r.output
    result = json.loads((out / "sweep.json").read_text())
    assert result["extended"] == [] and not result["knee_inside"]
    assert "5e-46 is 0 in float32" in result["note"]


def test_a_relu_seed_sae_is_not_described_by_a_k(tmp_path, outputs, run_cli):
    """A relu seed SAE beside a topk SAE was refused as having "k 24" (its d_sae: k is
    read by the TopK family alone)."""
    cli, one_line = run_cli
    relu = tmp_path / "relu"
    flags = ["--architecture", "relu", "--d-sae", "24", "--tokens", "128", "--seeds", "1", "-q"]
    assert cli("train", "--acts", outputs.store, "--out", relu, *flags).exit_code == 0
    out = tmp_path / "atlas"
    r = cli(
        "analyze", "--sae", outputs.sae, "--acts", outputs.store, "--out", out, "--seed-sae", relu
    )
    line = one_line(r, "has architecture 'relu', the analysed SAE 'topk';")
    assert "k " not in line.split(";")[0]
    assert not out.exists()


def test_atlas_config_lists_are_read_as_tuples(tmp_path, outputs):
    """`AtlasConfig(resolutions=[0.5, 1.0])` (and `nulls=[...]`) ran the analysis half-way
    and ended in "unhashable type: 'list'"."""
    from saeatlas.structure import AtlasConfig, map_structure
    from saeatlas.train import TrainConfig

    cfg = AtlasConfig(resolutions=[0.5, np.float64(1.0)], nulls=["permutation"], n_null=2)
    assert cfg == AtlasConfig(resolutions=(0.5, 1.0), nulls=("permutation",), n_null=2)
    assert type(cfg.resolutions[1]) is float
    assert TrainConfig(layers=["1"]).layers == ("1",)  # one check makes both
    cfg = AtlasConfig(resolutions=[1.0], nulls=[], n_null=0, n_examples=0, max_rows=64)
    atlas = map_structure(outputs.sae, outputs.store, cfg, progress=False)
    atlas.save(tmp_path / "atlas")
    shutil.rmtree(tmp_path / "atlas")


MANIFEST_EDITS = {
    # "is not a valid saeatlas manifest: KeyError('format_version')"
    "no format_version": (lambda m: m.pop("format_version"), "`format_version` is missing;"),
    # "... TypeError(\"`n_rows` must be int, got '300'\")"
    "n_rows as text": (lambda m: m.update(n_rows="300"), "`n_rows` must be int, got '300';"),
    "a shard without its digest": (lambda m: m["shards"][0].pop("sha256"), "`sha256` is missing;"),
    # "Bad layer entry 'x': ... ('str' object has no attribute 'get')"
    "a layer that is text": (
        lambda m: m["layers"].__setitem__(0, "x"),
        "a known `layout` (expected an object, got str)",
    ),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_EDITS))
def test_a_damaged_manifest_is_described_in_plain_words(tmp_path, outputs, run_cli, case):
    import json

    cli, one_line = run_cli
    store = shutil.copytree(outputs.store, tmp_path / "store")
    manifest = json.loads((store / "manifest.json").read_text())
    edit, needle = MANIFEST_EDITS[case]
    edit(manifest)
    (store / "manifest.json").write_text(json.dumps(manifest))
    line = one_line(cli("info", store), needle)
    assert "Error(" not in line and "attribute" not in line
    if "layer" not in case:
        assert line.endswith("; recapture the store (or restore the file).")


def test_a_deleted_rows_file_is_called_missing(tmp_path, outputs, run_cli):
    """`info --verify` of a store whose rows.parquet was deleted said "'.../rows.parquet'
    is unreadable (.../rows.parquet)", the path again in pyarrow's words."""
    from saeatlas.errors import StoreError
    from saeatlas.store import ActivationStore

    cli, one_line = run_cli
    store = shutil.copytree(outputs.store, tmp_path / "store")
    (store / "rows.parquet").unlink()
    needle = f"'{store / 'rows.parquet'}' is missing; recapture the store (or restore the file)."
    one_line(cli("info", store, "--verify"), needle)
    with pytest.raises(StoreError, match="is missing"):
        ActivationStore.open(store).row_columns()
