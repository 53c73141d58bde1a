"""The fourteenth hostile sweep's cases in analysis, atlas files, interop, export and the
Python API: each failed (a wrong result, a traceback or no word) before its fix."""

from __future__ import annotations

import pytest

from saeatlas.sae import SparseAutoencoder


def test_an_in_memory_saes_null_source_is_trained_on_its_own_rows(outputs):
    """From Python, an SAE given loaded (no folder) and analysed on other rows had the
    dictionary null's source trained on the analysed rows; the CLI's path (a folder)
    trains it on the SAE's own rows, and so does this one now."""
    from dataclasses import replace

    from saeatlas.errors import ConfigError
    from saeatlas.store import ActivationStore
    from saeatlas.structure.inference.seeds import null_source_sae
    from saeatlas.train.rows import rows_digest

    sae = SparseAutoencoder.load(outputs.sae)
    mine = sae.cfg.metadata["rows_digest"]
    other = ActivationStore.open(outputs.npy)  # the same rows as a .npy: other rows
    assert rows_digest(other) != mine
    source, _ = null_source_sae(sae, None, other)
    assert source.cfg.metadata["rows_digest"] == mine
    gone = SparseAutoencoder(replace(sae.cfg, metadata={**sae.cfg.metadata, "store": "/nowhere"}))
    gone.load_state_dict(sae.state_dict())
    with pytest.raises(ConfigError, match=r"trained on other rows .*null_source="):
        null_source_sae(gone, None, other)


@pytest.mark.parametrize(
    "case, needle",
    [
        ("array store", "`store` must be an ActivationStore .* got ndarray: save an array"),
        ("tensor store", "`store` must be .* got Tensor"),
        ("array sae", "`sae` must be an SAE .* got ndarray"),
        ("dict config", "`config` must be an AtlasConfig, got dict"),
        ("config class", "`config` must be an AtlasConfig, got the class itself"),
        ("one seed path", "`seed_saes` must be a list of SAEs .* give one SAE as"),
        ("a sweep of text", r"`sweep` must be \(setting, \[\(value, SAE\)"),
        ("a sweep of a number", r"`sweep` must be \(setting, \[\(value, SAE\)"),
    ],
)
def test_the_python_api_refuses_arguments_of_the_wrong_kind_before_the_work(
    outputs, forbid, case, needle
):
    """An array as the store ended in pathlib's 'expected str, bytes or os.PathLike
    object', a dict as the config in an AttributeError, the AtlasConfig class itself only
    after the whole analysis (at `to_json`), and one path as `seed_saes` was read as SAEs
    named by its characters ('/' is not an SAE directory)."""
    import numpy as np
    import torch

    import saeatlas.structure.inputs as inputs
    from saeatlas.errors import ConfigError
    from saeatlas.structure import AtlasConfig, analyze, map_structure

    forbid(inputs, "analysis_ranks")
    x = np.zeros((20, 18), np.float32)
    sae, store, cfg = str(outputs.sae), str(outputs.store), AtlasConfig()
    calls = {
        "array store": lambda: map_structure(sae, x, cfg),
        "tensor store": lambda: analyze(sae, torch.from_numpy(x), cfg),
        "array sae": lambda: map_structure(x, store, cfg),
        "dict config": lambda: map_structure(sae, store, {"n_null": 2}),
        "config class": lambda: map_structure(sae, store, AtlasConfig),
        "one seed path": lambda: analyze(sae, store, cfg, seed_saes=outputs.sae),
        "a sweep of text": lambda: analyze(sae, store, cfg, sweep=("k", "abc")),
        "a sweep of a number": lambda: analyze(sae, store, cfg, sweep=5),
    }
    with pytest.raises(ConfigError, match=needle):
        calls[case]()


def test_ranks_given_other_settings_are_told_which(outputs):
    """A `torchrun` analysis started by hand with another --seed or --n-null on rank 1 was
    refused as given 'different settings', naming no setting; a sweep given to one rank
    only was named as 'seed SAEs'."""
    from saeatlas._world import differing
    from saeatlas.errors import ConfigError
    from saeatlas.store import ActivationStore
    from saeatlas.structure import AtlasConfig
    from saeatlas.structure.inputs import _facts

    sae, store = SparseAutoencoder.load(outputs.sae), ActivationStore.open(outputs.store)
    rank0 = _facts(sae, store, AtlasConfig(), {}, None)
    rank1 = _facts(sae, store, AtlasConfig(seed=1, n_null=4), {}, None)
    with pytest.raises(ConfigError, match=r"different `n_null`, `seed` \(ranks \[1\]"):
        differing([rank0, rank1], "this analysis", "Give every rank the same flags.")
    swept = _facts(sae, store, AtlasConfig(), {}, ("k", [(4.0, sae)]))
    with pytest.raises(ConfigError, match=r"different sweep \(ranks \[1\]"):
        differing([rank0, swept], "this analysis", "Give every rank the same flags.")


def test_an_atlas_edited_in_python_out_of_step_is_not_saved_over_a_good_one(
    tmp_path, snapshot, two_modules_atlas
):
    """An atlas whose modules table lost a module still named by its units was saved (with
    `overwrite=True`, over a good atlas), and every reader then refused the folder."""
    import shutil

    from saeatlas.structure.atlas import Atlas
    from saeatlas.structure.atlas_format import AtlasFileError

    path = two_modules_atlas(tmp_path / "atlas")
    before = snapshot(path)
    atlas = Atlas.load(path)
    atlas.modules = atlas.modules[atlas.modules["module"] == 1].reset_index(drop=True)
    with pytest.raises(AtlasFileError, match=r"numbers its 1 modules \[1\].* keep its tables"):
        atlas.save(path, overwrite=True)
    assert snapshot(path) == before
    shutil.rmtree(path)
    with pytest.raises(AtlasFileError, match="keep its tables"):
        atlas.save(path)
    assert not path.exists()


@pytest.mark.parametrize("seeds, seed", [(3, 2), (1, 1)])
def test_an_out_where_analyze_trains_a_seed_sae_is_refused_first(
    tmp_path, outputs, run_cli, forbid, seeds, seed
):
    """`analyze --seeds 3 --out SAE-seed2` (or `--seeds 1 --out SAE-seed1`, where the
    dictionary null's source is trained) trained the seed SAE into --out and only then
    refused --out as a folder holding an SAE's files."""
    import shutil

    import saeatlas.structure.inference.seeds as seeds_module

    cli, one_line = run_cli
    sae = shutil.copytree(outputs.sae, tmp_path / "sae")
    forbid(seeds_module, "train_seed_saes")
    out = tmp_path / f"sae-seed{seed}"
    args = ["--sae", sae, "--acts", outputs.store, "--seeds", seeds, "--out", out]
    one_line(cli("analyze", *args), f"'{out}' is where", "choose another --out")
    assert not out.exists()


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"n_modules": 1}, "names module 1, but `n_modules` is 1"),
        ({"unit_module": [0, 0, 1, 1, -2, -1]}, r"names -2, not a module"),
        ({"unit_module": [0, 0, 1.5, 1, -1, -1]}, "module numbers"),
        ({"unit_mean": [0.0] * 3}, "`unit_mean` has 3 values for the 6 units"),
        ({"n_random": -1}, "`n_random` must be 0"),
    ],
)
def test_ablate_modules_refuses_modules_and_draws_it_cannot_mean(change, needle):
    """From Python, `ablate_modules` dropped a module past `n_modules` without a word (its
    effect never computed), took unit module -2 as none and 1.5 as module 1, and ended a
    `unit_mean` of another length in an IndexError and `n_random=-1` in numpy's
    'negative dimensions'."""
    import numpy as np
    import torch

    from saeatlas.errors import ConfigError
    from saeatlas.store.manifest import LayerSpec
    from saeatlas.structure.causal.ablation import ablate_modules

    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    args = {"unit_module": [0, 0, 1, 1, -1, -1], "unit_mean": [0.0] * 6, "n_random": 2, **change}
    unit_module = np.asarray(args.pop("unit_module"))
    args["unit_mean"] = np.asarray(args["unit_mean"])
    with pytest.raises(ConfigError, match=needle):
        ablate_modules(
            model, torch.zeros(8, 4), [LayerSpec("1", 0, 6)], unit_module, labels=[0] * 8, **args
        )


def test_an_ensemble_of_one_gives_its_modules_no_reproducibility(tmp_path):
    """With one SAE and no resample (`--seeds 1 --n-bootstrap 0`) every module 'was
    recovered by all members' (itself): modules.parquet and the table said reproducible
    1.00 beside a verdict saying one member cannot test that. It is undefined (NaN).
    (Planted modules: the random MLP of `outputs` has units moved by its six inputs, a
    few dense factors without groups, which the correlation view no longer calls
    modules.)"""
    import numpy as np

    from saeatlas.store import ActivationStore
    from saeatlas.structure import (
        AtlasConfig,
        PlantedConfig,
        make_planted,
        map_structure,
        save_planted,
    )
    from saeatlas.train import TrainConfig, train_sae

    data = make_planted(PlantedConfig.preset("easy", seed=0, n_rows=2000))
    store = ActivationStore.open(save_planted(data, tmp_path / "planted"))
    cfg = TrainConfig(d_sae=64, k=8, batch_size=512, tokens=20_000, seed=0)
    sae = train_sae(store, cfg, progress=False).sae
    cfg = AtlasConfig(n_null=2, nulls=("permutation",), n_bootstrap=0, control=False)
    atlas = map_structure(sae, store, cfg)
    assert atlas.summary["ensemble"]["n_members"] == 1 and len(atlas.modules)
    assert np.isnan(atlas.modules["reproducibility"]).all()
    assert "one member cannot test" in atlas.summary["message"]


def test_reproducibility_and_agreement_match_a_brute_force_count():
    """A consensus module's reproducibility (the fraction of members with a module that
    matches it at Jaccard >= 0.5) and the members' agreement (their mean pairwise ARI
    over the units either assigns, a unit of none a singleton) against a count by hand
    and scikit-learn's adjusted_rand_score, on small random ensembles."""
    import itertools

    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    from saeatlas.structure.inference.consensus import level_consensus

    def singletons(x):
        x = x.copy()
        x[x < 0] = x.max(initial=-1) + 1 + np.arange((x < 0).sum())
        return x

    rng = np.random.default_rng(0)
    for _ in range(40):
        members = rng.integers(
            -1, rng.integers(1, 4), size=(rng.integers(1, 5), rng.integers(3, 12))
        )
        lv = level_consensus(members, 1.0, random_state=0)
        for c in range(lv.n_modules):
            module = set(np.flatnonzero(lv.labels == c))
            found = [
                max(
                    (
                        len(module & set(np.flatnonzero(m == d)))
                        / len(module | set(np.flatnonzero(m == d)))
                        for d in set(m[m >= 0])
                    ),
                    default=0.0,
                )
                >= 0.5
                for m in members
            ]
            assert lv.reproducibility[c] == pytest.approx(np.mean(found))
        aris = [
            adjusted_rand_score(singletons(a[on]), singletons(b[on]))
            for a, b in itertools.combinations(members, 2)
            if (on := (a >= 0) | (b >= 0)).sum() >= 2
        ]
        if aris:
            assert lv.agreement == pytest.approx(np.mean(aris))
        else:
            assert np.isnan(lv.agreement)


def test_ranks_given_other_seeds_flags_are_told_before_they_part():
    """A `torchrun` analysis whose rank 1 was given `--seeds 2` beside rank 0's `--seeds 1`
    met the others at another step (the seed SAEs' meeting against rank 0's comparison of
    settings), and rank 0 ended in "TypeError: 'NoneType' object is not iterable". The
    flags that choose the ranks' steps are compared first (checked by hand with two
    processes: both now stop with this line)."""
    from pathlib import Path

    from saeatlas._world import differing
    from saeatlas.cli.analyze_flags import flag_facts
    from saeatlas.errors import ConfigError

    rank0 = flag_facts(1, [], None, None)
    for rank1, name in [
        (flag_facts(2, [], None, None), "--seeds"),
        (flag_facts(1, [Path("s1")], None, None), "--seed-sae"),
        (flag_facts(1, [], "model.py:build", None), "--model"),
    ]:
        with pytest.raises(ConfigError, match=rf"different {name}.* \(ranks \[1\]"):
            differing([rank0, rank1], "this analysis", "Give every rank the same flags.")
    differing([rank0, flag_facts(1, [], None, None)], "this analysis", "")  # the same: fine
