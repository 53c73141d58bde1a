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
def test_a_module_figure_out_of_its_range_is_refused(tmp_path, two_modules_atlas, run_cli, case):
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
    "null_mean 9": (
        lambda s: s.update(null_mean=9, p=0.5, z=1.0, null_std=0.1),
        "`null_mean`",
        "9",
    ),
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
            sweep_modules={
                "over": "k",
                "values": [2, 4],
                "neighbour_ari": [-4],
                "atlas_ari": [1, 1],
            }
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


@pytest.fixture
def analysed_copy(analysed, tmp_path):
    """A copy of the real atlas of the protected SAE and store, to edit."""
    import shutil

    return shutil.copytree(analysed, tmp_path / "atlas")


def test_an_edited_headline_is_not_shown(analysed_copy):
    """atlas.json's `message` edited by hand ("12 reproducible modules ...") was the
    report's headline above tables that hold another verdict: the headline is now the
    sentence the tables give."""
    from saeatlas.structure.atlas import Atlas

    meta = analysed_copy / "atlas.json"
    summary = json.loads(meta.read_text())
    true = summary["message"]
    forged = "12 reproducible modules that the trained SAE reveals beyond every control."
    meta.write_text(json.dumps({**summary, "message": forged}))
    assert Atlas.load(analysed_copy).summary["message"] == true  # what the page heads with


@pytest.mark.parametrize("flag", ["partition_significant", "sae_partition_significant"])
def test_a_partition_flag_its_p_values_contradict_is_refused(analysed_copy, run_cli, flag):
    """`partition_significant` (which the verdict reads) or `sae_partition_significant`
    edited to the other value was read as it stood: a partition whose p-values do not
    beat the nulls was headed "co-firing structure", or the other way round."""
    cli, one_line = run_cli
    meta = analysed_copy / "atlas.json"
    summary = json.loads(meta.read_text())
    said = not summary[flag]
    meta.write_text(json.dumps({**summary, flag: said}))
    one_line(
        cli("report", analysed_copy),
        f"'{meta}' says {flag} {said}, but its p-values (against `config.alpha` 0.05) give "
        f"{not said};",
    )


def test_a_module_marked_significant_above_alpha_is_refused(tmp_path, two_modules_atlas, run_cli):
    """A module marked `significant` by hand (and counted in atlas.json) whose p is 0.9
    was named a significant module."""
    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    modules = pd.read_parquet(atlas / "modules.parquet")
    modules.assign(significant=[False, True], p=[0.01, 0.9], z=[3.0, 0.1]).to_parquet(
        atlas / "modules.parquet"
    )
    summary = json.loads((atlas / "atlas.json").read_text())
    (atlas / "atlas.json").write_text(json.dumps({**summary, "config": {"alpha": 0.05}}))
    one_line(
        cli("report", atlas),
        f"modules.parquet in '{atlas}' marks module 1 `significant` with a p of 0.9, not "
        "below `config.alpha` 0.05",
    )


def test_a_significance_level_out_of_range_is_refused(tmp_path, two_modules_atlas, run_cli):
    """`config.alpha` edited to 1.5 let every p-value pass the checks of the verdict."""
    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    summary = json.loads((atlas / "atlas.json").read_text())
    (atlas / "atlas.json").write_text(json.dumps({**summary, "config": {"alpha": 1.5}}))
    one_line(cli("report", atlas), "`config.alpha` in", "must be from 0 to 1, got 1.5;")


def test_an_ablation_with_too_few_random_sets_is_called_untested(tmp_path):
    """With 5 random unit sets per module no ablation p can reach 0.05 (the smallest is
    1/6), yet the verdict said "0 of 2 hurt the loss more than random unit sets" (a
    finding), and the report's causal line that "a module's draws stop once 10 sets did
    at least its damage" of 5 sets."""
    from types import SimpleNamespace

    from saeatlas.report.summary import ablation_text
    from saeatlas.structure.atlas import Atlas
    from saeatlas.structure.graph.hypergeom import benjamini_hochberg
    from saeatlas.structure.inference.outcome import decide

    p = np.array([1 / 6, 2 / 6])
    tested = {"z": [4.0, 4.0], "p": [0.001, 0.001], "significant": [True, True]}
    ablated = {"ablation_effect": [0.2, 0.1], "ablation_p": p, "ablation_draws": [5, 5]}
    ablated["ablation_q"] = benjamini_hochberg(p, skip_nan=True)
    sizes = {"module": [0, 1], "n_units": [2, 2], "n_features": [1, 1]}
    units = {"unit": range(4), "layer": "a", "index": range(4), "module": [0, 0, 1, 1]}
    atlas = Atlas(
        units=pd.DataFrame(units),
        features=pd.DataFrame({"feature": range(2), "module": [0, 1]}),
        modules=pd.DataFrame(sizes | tested | ablated),
        summary={
            "layers": ["a"],
            "modules_from": "sae",
            "config": {"alpha": 0.05},
            "ablation": {"mode": "mean", "n_random": 5, "stop_after": 10},
        },
    )
    decide(atlas)
    atlas.save(tmp_path / "atlas")
    untested = "(not tested: the smallest p that 5 random unit sets per module can give is 0.17"
    assert untested in Atlas.load(tmp_path / "atlas").summary["message"]
    line = ablation_text(SimpleNamespace(has_ablation=True, summary=atlas.summary, atlas=atlas))
    assert untested in line  # the report's causal check
    assert "stop once 10 sets" not in line


FLOW_EDITS = {
    # drawn as the strongest link of the module graph: "co-activation r +7.00"
    "a correlation of 7": ({"coactivation": [7.0]}, "`coactivation` of flows.parquet", "7.0"),
    "a weight flow of -3": ({"weight_flow": [-3.0]}, "`weight_flow` of flows.parquet", "-3.0"),
    # averaged into the link between the modules, and counted among its layer pairs
    "a layer the atlas lacks": (
        {"target_layer": ["z"]},
        "holds a flow from layer 'a' to 'z', not from a layer of the atlas to the next one",
        "['a', 'b']",
    ),
}


@pytest.mark.parametrize("case", sorted(FLOW_EDITS))
def test_a_flow_out_of_range_or_of_other_layers_is_refused(tmp_path, run_cli, case):
    from saeatlas.structure.atlas import Atlas

    cli, one_line = run_cli
    change, needle, shown = FLOW_EDITS[case]
    flow = {"source_module": [0], "source_layer": ["a"], "target_module": [1]}
    flow |= {"target_layer": ["b"], "coactivation": [0.5], "weight_flow": [1.2]}
    Atlas(
        units=pd.DataFrame(
            {"unit": range(4), "layer": ["a", "a", "b", "b"], "index": [0, 1, 0, 1]}
            | {"module": [0, 1, 0, 1]}
        ),
        features=pd.DataFrame({"feature": range(2), "module": [0, 1]}),
        modules=pd.DataFrame({"module": [0, 1], "n_units": [2, 2], "n_features": [1, 1]}),
        summary={"n_modules": 2, "layers": ["a", "b"]},
        flows=pd.DataFrame(flow),
    ).save(tmp_path / "atlas")
    pd.DataFrame(flow | change).to_parquet(tmp_path / "atlas" / "flows.parquet")
    one_line(cli("report", tmp_path / "atlas"), needle, shown)


def test_an_sae_trained_in_memory_is_not_sent_to_train_flags(outputs, caplog):
    """`validate` (and the dictionary null's source trained in memory) warned "The SAE
    trained in 'memory' ... check the learning rate (--lr 0.08) and the activations' scale
    (--normalize unit ...)": flags `validate` does not take, and no folder 'memory'."""
    import logging

    from saeatlas.train import TrainConfig, train_sae

    cfg = TrainConfig(d_sae=8, k=2, tokens=128, batch_size=64, lr=5.0)  # a wild step
    with caplog.at_level(logging.WARNING, logger="saeatlas"):
        train_sae(outputs.store, cfg, progress=False)
    said = [r.getMessage() for r in caplog.records if "has not learnt them" in r.getMessage()]
    assert said and "trained in memory (not saved)" in said[0], said
    assert "--lr" not in said[0] and "(`lr` 5)" in said[0] and "(`tokens`)" in said[0]


@pytest.mark.parametrize(
    "edit,needle",
    [
        ({"sae": {"architecture": "topk", "d_sae": 4, "k": 99}}, "`sae.k` in"),
        ({"sae": {"architecture": "relu", "d_sae": 4}, "mean_l0": 1e9}, "`mean_l0` in"),
    ],
)
def test_more_active_latents_than_the_sae_has_are_refused(
    tmp_path, two_modules_atlas, run_cli, edit, needle
):
    """A TopK `k` of 99 of 4 latents, or a mean L0 of a billion, was shown as the SAE's
    ("d_sae 4, k 99")."""
    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    summary = json.loads((atlas / "atlas.json").read_text())
    (atlas / "atlas.json").write_text(json.dumps({**summary, **edit}))
    one_line(cli("report", atlas), needle, "more than the SAE's 4 latents (`sae.d_sae`);")


def test_a_relu_atlas_keeps_its_default_k(tmp_path, two_modules_atlas):
    """A relu SAE keeps the default k (32), which may exceed its d_sae: its atlas is read."""
    from saeatlas.structure.atlas import Atlas

    atlas = two_modules_atlas(tmp_path / "atlas")
    summary = json.loads((atlas / "atlas.json").read_text())
    sae = {"architecture": "relu", "d_sae": 4, "k": 32}
    (atlas / "atlas.json").write_text(json.dumps({**summary, "sae": sae}))
    assert Atlas.load(atlas).summary["sae"]["k"] == 32


def test_an_ablation_row_of_a_label_not_ablated_is_refused(tmp_path, two_modules_atlas, run_cli):
    """A row of ablation.parquet for a label the ablation did not split by ('zz') was drawn
    in the report's module x label grid."""
    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    summary = json.loads((atlas / "atlas.json").read_text())
    ablation = {"mode": "mean", "n_random": 100, "classes": ["0", "1"]}
    (atlas / "atlas.json").write_text(json.dumps({**summary, "ablation": ablation}))
    rows = {"module": [0, 0, 1], "label": ["0", "zz", "1"]}
    rows |= {"effect": [0.1] * 3, "random_effect": [0.0] * 3, "specialisation": [0.5] * 3}
    pd.DataFrame(rows).to_parquet(atlas / "ablation.parquet")
    one_line(
        cli("report", atlas),
        f"`label` of ablation.parquet in '{atlas}' names 'zz', not one of atlas.json's "
        "`ablation.classes` ['0', '1'];",
    )
