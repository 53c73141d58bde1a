"""The twenty-second hostile sweep's cases in `analyze`, `report` and the atlas's own files:
each failed (a traceback, a wrong result or a misleading word) before its fix."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

#: modules.parquet columns edited out of the range their figure can have: each was read
#: and reported without a word ("-5 random sets", a modularity term of 7).
MODULE_EDITS = {
    "ablation_draws -5": ("ablation_draws", [-5, 20], "whole numbers 0 or more", "-5"),
    "modularity 7": ("modularity", [7.0, 0.1], "numbers from -1 to 1", "7.0"),
    "modularity -3": ("modularity", [0.1, -3.0], "numbers from -1 to 1", "-3.0"),
    "n_shared_units -1": ("n_shared_units", [-1, 0], "whole numbers 0 or more", "-1"),
    "layer_profile of -5 and 6": (
        "layer_profile",
        [[-5.0], [1.0]],
        "lists of shares, each from 0 to 1",
        "[-5.0]",
    ),
    "layer_mass of NaN": ("layer_mass", [[np.nan], [1.0]], "lists of shares", "[nan]"),
}


@pytest.mark.parametrize("case", sorted(MODULE_EDITS))
def test_a_module_figure_out_of_its_range_is_refused(
    tmp_path, two_modules_atlas, run_cli, case
):
    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    column, values, kind, shown = MODULE_EDITS[case]
    modules = pd.read_parquet(atlas / "modules.parquet")
    modules.assign(**{column: values}).to_parquet(atlas / "modules.parquet")
    one_line(
        cli("report", atlas),
        f"`{column}` of modules.parquet in '{atlas}' must hold {kind},",
        f"such as {shown};",
        "rerun `saeatlas analyze` with --overwrite",
    )
    assert not (atlas / "report.html").exists()


@pytest.mark.parametrize(
    "table,column,value",
    [("examples", "row", -3), ("features", "layer_mass", [2.0]), ("units", "index", -1)],
)
def test_other_tables_figures_out_of_range_are_refused(
    tmp_path, two_modules_atlas, run_cli, table, column, value
):
    """An example of row -3 (Python reads it as the third row from the end), a feature's
    layer share of 2 and a unit of index -1 were read without a word."""
    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    if table == "examples":
        frame = pd.DataFrame(
            {"kind": ["module"], "id": [0], "rank": [1], "row": [value], "activation": [1.0]}
        )
    else:
        frame = pd.read_parquet(atlas / f"{table}.parquet")
        frame[column] = [value] * len(frame) if table == "features" else frame[column] - 1
    frame.to_parquet(atlas / f"{table}.parquet")
    one_line(cli("report", atlas), f"`{column}` of {table}.parquet in '{atlas}' must hold")


SUMMARY_EDITS = {
    "modularity 7": (lambda s: s.update(modularity=7), "`modularity`", "7"),
    "null_mean 9": (lambda s: s.update(null_mean=9, p=0.5, z=1.0, null_std=0.1), "`null_mean`", "9"),
    "modularity_of_modules -3": (
        lambda s: s.update(modularity_of_modules=-3),
        "`modularity_of_modules`",
        "-3",
    ),
    # an agreement of 5 passed the members' agreement that modules need to count
    "ensemble agreement 5": (
        lambda s: s.update(ensemble={"n_saes": 2, "agreement": 5}),
        "`ensemble.agreement`",
        "5",
    ),
    "a sweep's ARI of -4": (
        lambda s: s.update(
            sweep_modules={"over": "k", "values": [2, 4], "neighbour_ari": [-4], "atlas_ari": [1, 1]}
        ),
        "`sweep_modules.neighbour_ari[0]`",
        "-4",
    ),
}


@pytest.mark.parametrize("case", sorted(SUMMARY_EDITS))
def test_a_modularity_or_agreement_out_of_its_range_is_refused(
    tmp_path, two_modules_atlas, run_cli, case
):
    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    summary = json.loads((atlas / "atlas.json").read_text())
    edit, name, shown = SUMMARY_EDITS[case]
    edit(summary)
    (atlas / "atlas.json").write_text(json.dumps(summary))
    meta = atlas / "atlas.json"
    one_line(cli("report", atlas), f"{name} in '{meta}' must be from -1 to 1, got {shown};")


def test_a_seed_sae_trained_with_other_settings_is_refused(tmp_path, guarded, run_cli):
    """A --seed-sae trained with another normalisation and length of training (or another
    sparsity penalty) joined the ensemble without a word: only the architecture, d_sae and
    k were compared, and `<sae>-seedN` found by analyze itself by every setting."""
    from dataclasses import replace

    from saeatlas.sae import SparseAutoencoder

    cli, one_line = run_cli
    sae = SparseAutoencoder.load(guarded.sae)
    settings = {**sae.cfg.metadata["train_config"], "normalize": "none", "seed": 5}
    meta = {**sae.cfg.metadata, "train_config": settings}
    SparseAutoencoder(replace(sae.cfg, metadata=meta)).save(tmp_path / "seed")
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", tmp_path / "a"]
    line = one_line(
        cli(*args, "--seeds", "2", "--seed-sae", tmp_path / "seed"),
        "was trained with other settings than the analysed SAE: `normalize` 'none' (the "
        "analysed SAE's 'unit');",
    )
    assert "`seed`" not in line
    assert not (tmp_path / "a").exists()
