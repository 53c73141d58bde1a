"""The twenty-fifth hostile sweep's cases in `analyze`, the atlas's own files, `report` and
the exports: each failed (a wrong figure shown without a word, a traceback or a misleading
word) before its fix."""

from __future__ import annotations

import importlib
import json

import pandas as pd
import pytest

from atlas_edits import edit_summary as _edit_summary
from atlas_edits import edit_table as _edit

_NULLS = [
    {"null": "permutation", "modularity": 0.4, "null_mean": 0.1, "null_std": 0.01, "z": 30.0},
    {"null": "rewiring", "modularity": 0.4, "null_mean": 0.2, "null_std": 0.01, "z": 20.0},
]


@pytest.mark.parametrize(
    "edit, needle",
    [
        ({"z": 99.0}, "`z` in '"),
        ({"p": 1e-9}, "`p` in '"),
        ({"null_mean": 0.0}, "`null_mean` in '"),
        ({"strictest_null": "bogus"}, "`strictest_null` in '"),
    ],
)
def test_the_partition_figures_other_than_the_strictest_nulls_are_refused(
    tmp_path, two_modules_atlas, run_cli, edit, needle
):
    """atlas.json's `z`, `p`, `null_mean` and `null_std` (the report's "under the strictest
    null: z 99") are the figures of the null `strictest_null` names in `nulls`; edited, they
    were shown beside "All nulls: ... rewiring z 20" on the same line, and a
    `strictest_null` of no null in the list was named as the strictest."""
    from saeatlas.structure.atlas import Atlas

    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    nulls = [{**n, "p": p} for n, p in zip(_NULLS, (0.001, 0.002))]
    strictest = {k: nulls[1][k] for k in ("z", "p", "null_mean", "null_std")}
    _edit_summary(atlas, nulls=nulls, strictest_null="rewiring", **strictest)
    Atlas.load(atlas)
    _edit_summary(atlas, **edit)
    one_line(cli("report", atlas), needle, "rerun `saeatlas analyze`")
    assert not (atlas / "report.html").exists()


def _sae_modules(atlas, **own) -> None:
    _edit(atlas, "units", sae_module=[0, 0, 1, -1, -1, -1])
    _edit_summary(
        atlas, sae_modules={"n_modules": 2, "n_significant_modules": 1, "n_units": 2, **own}
    )


@pytest.mark.parametrize(
    "own, needle",
    [
        ({"n_modules": 30}, "`sae_modules.n_modules` in '"),
        ({"n_significant_modules": 2, "n_units": 0}, "`sae_modules.n_units` in '"),
        ({"n_units": 5}, "`sae_modules.n_units` in '"),
    ],
)
def test_sae_module_counts_its_units_contradict_are_refused(
    tmp_path, two_modules_atlas, run_cli, own, needle
):
    """`sae_modules` (the SAE's own modules, which the headline names where the modules are
    the units' correlations) edited by hand was the headline's: "the SAE's own 30
    reproducible modules do not beat its null models" above units of 2 such modules, and
    "the SAE's own 2 significant reproducible modules cover fewer units" where it counts
    no unit in them."""
    from saeatlas.structure.atlas import Atlas

    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    _sae_modules(atlas)
    Atlas.load(atlas)
    _sae_modules(atlas, **own)
    one_line(cli("report", atlas), needle, "rerun `saeatlas analyze`")


def test_a_module_p_below_a_nulls_own_p_is_refused(tmp_path, two_modules_atlas, run_cli):
    """A module's `p` (the largest over the nulls after adjusting over the modules, which
    decides `significant` and the headline's count) edited to 0.01 was shown on its card
    beside "vs permutation null ... p 0.06 (unadjusted)", which it cannot be below."""
    from saeatlas.structure.atlas import Atlas

    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    figures = {"z": [3.0, 1.0], "z_permutation": [3.0, 1.0], "p_permutation": [0.06, 0.3]}
    _edit(atlas, "modules", p=[0.12, 0.3], **figures)
    Atlas.load(atlas)
    _edit(atlas, "modules", p=[0.01, 0.3])
    one_line(
        cli("report", atlas),
        "`p` of module 0 in modules.parquet in",
        "is 0.01, below its unadjusted `p_permutation` 0.06",
    )


def test_an_ablation_specialisation_its_effects_contradict_is_refused(
    tmp_path, two_modules_atlas, run_cli
):
    """ablation.parquet's `specialisation` (each label's share of a module's damage beyond
    random unit sets, the module x label grid) edited by hand was drawn as it stood beside
    the `effect` and `random_effect` that give it."""
    from saeatlas.structure.atlas import Atlas

    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    table = pd.DataFrame(
        {
            "module": [0, 0, 1, 1],
            "label": ["a", "b", "a", "b"],
            "effect": [3.0, 1.0, 0.5, float("nan")],
            "random_effect": [1.0, 1.5, 0.1, 0.1],
            "specialisation": [1.0, 0.0, 0.0, 0.0],
        }
    )
    table.to_parquet(atlas / "ablation.parquet", index=False)
    Atlas.load(atlas)  # (module 1's damage is undefined: its shares are 0)
    _edit(atlas, "ablation", specialisation=[0.5, 0.5, 0.0, 0.0])
    one_line(
        cli("report", atlas),
        "`specialisation` of ablation.parquet in",
        "is 0.5 in row 0 (module 0), but its `effect` and `random_effect` give 1.0",
    )


@pytest.mark.parametrize(
    "section, flags, needle",
    [
        (
            "stability:\n  n_seed_saes: 0\n",
            [],
            "its `stability:` section gives `n_seed_saes` 0, but saeatlas analyze takes it "
            "from --seeds (3: 2 seed SAE(s) besides --sae; --seeds 1 gives the section's 0)",
        ),
        (
            "ablation:\n  enabled: true\n  mode: zero\n",
            ["--model", "MODEL"],
            "its `ablation:` section gives `mode` 'zero', but saeatlas analyze takes it from "
            "--ablation-mode ('mean')",
        ),
        (
            "ablation:\n  n_random: 5\n",
            ["--model", "MODEL"],
            "gives `n_random` 5, but saeatlas analyze takes it from --ablation-draws (not given",
        ),
        (
            "ablation:\n  seed: 3\n",
            ["--model", "MODEL"],
            "gives `seed` 3, but saeatlas analyze takes it from --seed (0, the analysis's seed",
        ),
    ],
)
def test_a_run_configs_stability_or_ablation_section_analyze_does_not_read_is_refused(
    tmp_path, guarded, run_cli, forbid, section, flags, needle
):
    """`analyze --config run.yaml` reads the run config's `analyze:` section alone: beside
    `stability: {n_seed_saes: 0}` it trained 2 seed SAEs (its --seeds 3), and with --model
    it ablated with `mean` and 100 random sets beside `ablation: {mode: zero, n_random: 5}`
    (and drew by the analysis's seed beside the section's), without a word."""
    import numpy as np

    from saeatlas.structure import inputs

    cli, one_line = run_cli
    np.save(tmp_path / "labels.npy", np.arange(300) % 8)
    run = tmp_path / "run.yaml"
    run.write_text(
        f"model: {guarded.model}\ninputs: {guarded.inputs}\nlayers: ['1', '3']\n{section}"
    )
    given = [guarded.model if f == "MODEL" else f for f in flags]
    if given:
        given += ["--inputs", guarded.inputs, "--labels", tmp_path / "labels.npy"]
    forbid(inputs, "analysis_ranks")  # nothing of the analysis starts
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", tmp_path / "a"]
    one_line(cli(*args, "--config", run, *given), needle)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    "view, needle",
    [
        ({"n_significant_modules": 2}, "`cross_check.raw.n_significant_modules` in '"),
        (
            {"partition_significant": False},
            "is 1, but its `module_p` below `config.alpha` 0.05 give 0 (its partition did not",
        ),
        ({"module_p": [0.01]}, "has 1 p-value(s), but the view has 2 reproducible groups"),
    ],
)
def test_a_correlation_views_count_its_p_values_contradict_is_refused(
    tmp_path, two_modules_atlas, run_cli, view, needle
):
    """The report's Plain correlations line ("2 reproducible groups ..., 2 significant
    against every null (each group's p ...: 0.01, 0.2)") took a view's count of
    significant groups as edited, beside the p-values it lists."""
    from saeatlas.structure.atlas import Atlas

    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    raw = {"module_p": [0.01, 0.2], "n_reproducible_modules": 2}
    raw |= {"n_significant_modules": 1, "partition_significant": True}
    _edit_summary(atlas, config={"alpha": 0.05}, cross_check={"raw": raw})
    Atlas.load(atlas)
    _edit_summary(atlas, config={"alpha": 0.05}, cross_check={"raw": {**raw, **view}})
    one_line(cli("report", atlas), needle)


@pytest.mark.parametrize(
    "edit, needle",
    [
        (
            {"verdict": "modules"},
            "`control` in '",
        ),
        ({"significant": True}, "has the verdict 'no_significant_structure' and `significant`"),
        (
            {"real": {"n_modules": 9, "n_significant_modules": 0, "z": {}, "p": {}}},
            "(the trained SAE's column of the random-SAE control) gives {'n_modules': 9}, but "
            "the atlas's own figures are {'n_modules': 2}",
        ),
    ],
)
def test_a_control_table_its_counts_contradict_is_refused(
    tmp_path, two_modules_atlas, run_cli, edit, needle
):
    """The random-SAE control's table showed, as edited, a verdict of 'modules' beside 0
    significant modules, and 9 modules in the trained SAE's column beside the atlas's 2."""
    from saeatlas.structure.atlas import Atlas

    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    figures = {"n_modules": 0, "n_significant_modules": 0, "significant": False, "z": {}}
    control = {**figures, "p": {}, "verdict": "no_significant_structure"}
    control["real"] = {"n_modules": 2, "n_significant_modules": 0, "z": {}, "p": {}}
    _edit_summary(atlas, control=control)
    Atlas.load(atlas)
    _edit_summary(atlas, control={**control, **edit})
    one_line(cli("report", atlas), needle, "rerun `saeatlas analyze`")


def test_analyze_sweep_records_the_sweep_and_the_report_never_says_chosen_by_hand(
    tmp_path, guarded, two_modules_atlas, run_cli, monkeypatch
):
    """`analyze --sweep SWEEP` did not record the sweep in atlas.json (a run does), so its
    report said "No sparsity sweep found ...: the sparsity was chosen by hand. Run
    `saeatlas sweep`" above "Modules across the sweep: 4 to 8: 0.15" (and so did the
    report of an atlas analysed from Python with `sweep=` members)."""
    from saeatlas import structure
    from saeatlas.report.data import load_report_data
    from saeatlas.structure.atlas import Atlas

    sweeps = importlib.import_module("saeatlas.sweep.sweep")  # (the package names a function so)

    cli, _ = run_cli
    made = Atlas.load(two_modules_atlas(tmp_path / "made"))
    monkeypatch.setattr(structure, "analyze", lambda *a, **k: made)
    monkeypatch.setattr(sweeps, "sweep_members", lambda path: ("k", []))
    monkeypatch.setattr(importlib.import_module("saeatlas.cli.atlas"), "print_atlas", print)
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--seeds", "1", "-q"]
    r = cli(*args, "--out", tmp_path / "a", "--sweep", tmp_path / "sw")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "a" / "atlas.json").read_text())["sweep"] == str(tmp_path / "sw")
    atlas = two_modules_atlas(tmp_path / "py")
    across = {"over": "k", "values": [4, 8], "neighbour_ari": [0.2], "atlas_ari": [0.3, 0.4]}
    _edit_summary(atlas, sweep_modules=across)
    note = load_report_data(atlas).sweep_note
    assert "chosen by hand" not in note and "records no sweep directory" in note


def test_dense_flags_their_firing_densities_contradict_are_refused(
    tmp_path, two_modules_atlas, run_cli
):
    """features.parquet's `dense` flags (kept out of the modules; counted in atlas.json's
    `n_dense_features`) swapped by hand between a feature firing on 40% of the rows and one
    on 10% passed the count, and the dense one was shown as a module's member."""
    from saeatlas.structure.atlas import Atlas

    cli, one_line = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    _edit_summary(atlas, config={"max_density": 0.3}, n_dense_features=1)
    _edit(atlas, "features", dense=[False, False, False, True], firing_density=[0.1, 0.2, 0.1, 0.4])
    Atlas.load(atlas)
    _edit(atlas, "features", dense=[True, False, False, False])
    one_line(
        cli("report", atlas),
        "marks feature 0 `dense` True with a `firing_density` of 0.1, but features are dense "
        "exactly above atlas.json's `config.max_density` 0.3",
    )
