"""Bad inputs to the analysis side (analyze, report, run configs): one line, exit 1,
nothing written, and never a silently wrong atlas."""

from __future__ import annotations

from dataclasses import replace

import pytest

from saeatlas.sae import SparseAutoencoder
from saeatlas.store.manifest import LayerSpec


def _seed_like(outputs, path, **change):
    """An SAE saved at ``path``: the protected one with ``change`` made to its config."""
    sae = SparseAutoencoder.load(outputs.sae)
    cfg = replace(sae.cfg, **change)
    SparseAutoencoder(cfg).save(path)
    return path


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"d_sae": 32}, "has d_sae 32, the analysed SAE 24"),
        ({"k": 2}, "has k 2, the analysed SAE 4"),
        (
            {"d_in": 8, "layers": (LayerSpec("3", 0, 8),)},
            "reads the layers [('3', 8)] (name, units), the analysed SAE [('1', 10), ('3', 8)]",
        ),
    ],
)
def test_a_seed_sae_unlike_the_analysed_one_is_refused(tmp_path, guarded, run_cli, change, needle):
    cli, one_line = run_cli
    seed = _seed_like(guarded, tmp_path / "seed", **change)
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", tmp_path / "a"]
    one_line(cli(*args, "--seeds", "2", "--seed-sae", seed), "The seed SAE", needle)
    assert not (tmp_path / "a").exists()


def test_the_analysed_sae_or_a_repeated_one_is_no_seed_sae(tmp_path, guarded, run_cli):
    """A member counted twice would make every module look reproducible."""
    cli, one_line = run_cli
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", tmp_path / "a"]
    one_line(cli(*args, "--seeds", "2", "--seed-sae", guarded.sae), "is the analysed SAE")
    seed = guarded.root / "sae-seed1"
    one_line(cli(*args, "--seeds", "3", "--seed-sae", seed, seed), "another seed SAE again")


def test_a_stale_seed_directory_is_not_reused_as_the_null_source(tmp_path, guarded, run_cli):
    cli, one_line = run_cli
    sae = _seed_like(guarded, tmp_path / "sae", d_sae=32)  # retrained wider; seed1 is old
    _seed_like(guarded, tmp_path / "sae-seed1")
    args = ["analyze", "--sae", sae, "--acts", guarded.store, "--out", tmp_path / "a"]
    one_line(cli(*args, "--seeds", "1", "--n-null", "2", "-q"), "'", "sae-seed1' has d_sae 24")


@pytest.mark.parametrize(
    "text,needle",
    [
        # once allocated 19 GiB for the draws' seeds before any work
        ("n_null: 100000000000\n", "`n_null` must be in [0, 10000]"),
        ("n_bootstrap: 100000\n", "`n_bootstrap` must be in [0, 100]"),
        ("resolutions: [1.0, 1]\n", "`resolutions` has repeated values: [1.0, 1.0]"),
        ("nulls: [dictionary, dictionary]\n", "`nulls` has repeated values"),
    ],
)
def test_bad_analysis_settings(tmp_path, guarded, run_cli, text, needle):
    cli, one_line = run_cli
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", tmp_path / "a"]
    one_line(cli(*args, "--config", cfg), needle)
