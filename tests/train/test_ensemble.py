"""``train_ensemble``: one SAE per seed, beside each other as ``analyze --seeds`` expects."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from saeatlas.errors import ConfigError
from saeatlas.sae import SparseAutoencoder
from saeatlas.structure.inference.seeds import seed_sae_dir as used_by_analyze
from saeatlas.train import TrainConfig, seed_sae_dir, train_ensemble, train_sae

N_ROWS = 96


@pytest.fixture(scope="module")
def acts(tmp_path_factory):
    """96 rows x 12 units, sparse sums of 20 directions."""
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(20, 12))
    coef = rng.exponential(size=(N_ROWS, 20)) * (rng.random((N_ROWS, 20)) < 0.2)
    path = tmp_path_factory.mktemp("ensemble") / "acts.npy"
    np.save(path, (coef @ directions).astype(np.float32))
    return path


# Every batch is the whole store: the members of one pass over shared batches then see
# the same rows in each step as separate runs do (in another order inside the batch).
FULL_BATCH = TrainConfig(
    architecture="topk", d_sae=32, k=4, batch_size=N_ROWS, tokens=N_ROWS * 25, seed=7
)


def recorded_seed(path):
    return json.loads((path / "cfg.json").read_text())["metadata"]["train_config"]["seed"]


def assert_same_weights(a, b, exact=False):
    for name, value in a.state_dict().items():
        if exact:
            assert torch.equal(b.state_dict()[name], value), name
        else:
            torch.testing.assert_close(b.state_dict()[name], value, atol=1e-4, rtol=1e-4)


def test_seed_sae_dir_is_the_layout_analyze_reuses(tmp_path):
    assert seed_sae_dir(tmp_path / "sae", 2) == tmp_path / "sae-seed2"
    assert used_by_analyze is seed_sae_dir


def test_members_equal_separate_runs_with_their_seeds(tmp_path, acts):
    out = tmp_path / "sae"
    ensemble = train_ensemble(acts, FULL_BATCH, out, 3, progress=False)
    dirs = [out, tmp_path / "sae-seed1", tmp_path / "sae-seed2"]
    assert [r.path for r in ensemble.results] == dirs and ensemble.trained == (True,) * 3
    assert [recorded_seed(d) for d in dirs] == [7, 8, 9]
    for shift, d in enumerate(dirs):
        alone = train_sae(acts, replace(FULL_BATCH, seed=7 + shift), progress=False).sae
        assert_same_weights(alone, SparseAutoencoder.load(d))
    # different seeds, different dictionaries
    w = [SparseAutoencoder.load(d).W_dec for d in dirs]
    assert not torch.allclose(w[0], w[1]) and not torch.allclose(w[1], w[2])
    # one seed is train_sae itself
    one = train_ensemble(acts, FULL_BATCH, tmp_path / "one", 1, progress=False)
    assert len(one.results) == 1 and not (tmp_path / "one-seed1").exists()
    assert_same_weights(SparseAutoencoder.load(out), one.results[0].sae, exact=True)


class Interrupted(Exception):
    pass


def test_checkpointed_members_are_trained_one_by_one_and_resumed(tmp_path, acts, monkeypatch):
    import saeatlas.train.trainer as trainer

    cfg = TrainConfig(
        architecture="topk", d_sae=32, k=4, batch_size=32, tokens=32 * 20, seed=3,
        checkpoint_every=5,
    )  # fmt: skip
    out = tmp_path / "sae"
    save = trainer.save_checkpoint

    def interrupt_seed1(path, state):  # a kill after the second member's first checkpoint
        save(path, state)
        if path == seed_sae_dir(out, 1):
            raise Interrupted

    monkeypatch.setattr(trainer, "save_checkpoint", interrupt_seed1)
    with pytest.raises(Interrupted):
        train_ensemble(acts, cfg, out, 3, progress=False)
    monkeypatch.setattr(trainer, "save_checkpoint", save)
    assert (seed_sae_dir(out, 1) / "checkpoint.pt").is_file()
    with pytest.raises(ConfigError, match="already holds an SAE"):  # the first member
        train_ensemble(acts, cfg, out, 3, progress=False)
    first = (out / "sae_weights.safetensors").stat().st_mtime_ns
    ensemble = train_ensemble(acts, cfg, out, 3, resume=True, progress=False)
    assert ensemble.trained == (False, True, True)
    assert (out / "sae_weights.safetensors").stat().st_mtime_ns == first  # kept
    assert ensemble.results[0].summary["train_config"]["seed"] == 3
    assert ensemble.results[0].metrics  # read back from metrics.jsonl
    for shift, result in enumerate(ensemble.results):
        alone = train_sae(acts, replace(cfg, checkpoint_every=0, seed=3 + shift), progress=False)
        assert_same_weights(alone.sae, result.sae, exact=True)
    assert not any((d / "checkpoint.pt").exists() for d in (r.path for r in ensemble.results))
    # a complete member trained with other settings is not silently kept
    with pytest.raises(ConfigError, match="not trained with these settings and seed 3"):
        train_ensemble(acts, replace(cfg, k=2), out, 3, resume=True, progress=False)


def test_a_family_killed_between_members_resumes_to_the_same_saes(tmp_path, acts, monkeypatch):
    """Without checkpoints the members train as one family and are saved one by one; a
    kill after the first was saved left the rest to --resume, which trained them with
    their own seeds' data order: other SAEs than the uninterrupted run's, recording the
    same settings. `analyze --seeds` trained missing ones with yet another order."""
    import saeatlas.train.family as family
    from saeatlas.structure.inference.seeds import train_seed_saes

    cfg = TrainConfig(architecture="topk", d_sae=32, k=4, batch_size=32, tokens=32 * 20, seed=3)
    whole = train_ensemble(acts, cfg, tmp_path / "whole", 3, progress=False).results
    finish = family._finish

    def killed_after_the_first(run, out, seconds):
        result = finish(run, out, seconds)
        if out == tmp_path / "sae":
            raise Interrupted
        return result

    monkeypatch.setattr(family, "_finish", killed_after_the_first)
    with pytest.raises(Interrupted):
        train_ensemble(acts, cfg, tmp_path / "sae", 3, progress=False)
    monkeypatch.undo()
    resumed = train_ensemble(acts, cfg, tmp_path / "sae", 3, resume=True, progress=False)
    assert resumed.trained == (False, True, True)
    for a, b in zip(whole, resumed.results):
        assert_same_weights(a.sae, b.sae, exact=True)
    train_ensemble(acts, cfg, tmp_path / "one", 1, progress=False)
    for a, d in zip(whole[1:], train_seed_saes(tmp_path / "one", acts, 3)):
        assert_same_weights(a.sae, SparseAutoencoder.load(d), exact=True)


def test_analyze_never_reuses_a_seed_sae_trained_otherwise(tmp_path, acts):
    """`analyze --seeds` reused any complete <sae>-seedN: after the SAE alone was trained
    again with other settings, its stale sibling was compared as if trained like it."""
    from saeatlas.structure.inference.seeds import train_seed_saes

    train_ensemble(acts, FULL_BATCH, tmp_path / "sae", 2, progress=False)
    assert train_seed_saes(tmp_path / "sae", acts, 2) == [tmp_path / "sae-seed1"]  # reused
    longer = replace(FULL_BATCH, tokens=FULL_BATCH.tokens * 2)
    train_ensemble(acts, longer, tmp_path / "sae", 1, overwrite=True, progress=False)
    with pytest.raises(
        ConfigError, match="sae-seed1. differs from .* in more than its seed: .tokens."
    ):
        train_seed_saes(tmp_path / "sae", acts, 2)


def test_every_directory_is_checked_before_anything_is_trained(tmp_path, acts):
    with pytest.raises(ConfigError, match=r"--seeds \(`n_seeds`\) must be at least 1, got 0"):
        train_ensemble(acts, FULL_BATCH, tmp_path / "sae", 0, progress=False)
    (tmp_path / "sae-seed2").mkdir()
    (tmp_path / "sae-seed2" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"seed 9 to '.*sae-seed2': .*not an SAE's"):
        train_ensemble(acts, FULL_BATCH, tmp_path / "sae", 3, progress=False)
    assert not (tmp_path / "sae").exists() and not (tmp_path / "sae-seed1").exists()
    train_ensemble(acts, FULL_BATCH, tmp_path / "b", 2, progress=False)
    with pytest.raises(ConfigError, match=r"'.*b-seed1' already holds an SAE.*--overwrite"):
        train_ensemble(acts, FULL_BATCH, tmp_path / "b-seed1", 1, progress=False)
    stamp = (tmp_path / "b" / "cfg.json").stat().st_mtime_ns
    with pytest.raises(ConfigError, match="already holds an SAE"):
        train_ensemble(acts, FULL_BATCH, tmp_path / "b", 3, progress=False)
    assert not (tmp_path / "b-seed2").exists()
    assert (tmp_path / "b" / "cfg.json").stat().st_mtime_ns == stamp
    again = train_ensemble(acts, FULL_BATCH, tmp_path / "b", 3, overwrite=True, progress=False)
    assert [recorded_seed(r.path) for r in again.results] == [7, 8, 9]


def test_analyze_never_reuses_a_seed_sae_of_a_store_captured_again_at_its_path(tmp_path, acts):
    """`_check_sibling` compared the stores by path: a store captured again at the same
    path (other rows) left a stale seed SAE of the old rows taken into the ensemble."""
    from saeatlas.structure.inference.seeds import train_seed_saes

    store = tmp_path / "acts.npy"
    np.save(store, np.load(acts))
    train_ensemble(store, FULL_BATCH, tmp_path / "sae", 2, progress=False)
    np.save(store, np.load(acts)[::-1].copy() * 2)  # captured again: other rows, same path
    train_ensemble(store, FULL_BATCH, tmp_path / "sae", 1, overwrite=True, progress=False)
    with pytest.raises(ConfigError, match=r"sae-seed1. differs .*: the rows it was trained on"):
        train_seed_saes(tmp_path / "sae", store, 2)
