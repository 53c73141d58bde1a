"""Outputs of one command that are one directory (a link to another): each output must
be its own, or one is written over the other (fifth hostile sweep)."""

from __future__ import annotations


def test_train_seeds_into_a_link_to_the_first_member_is_refused(guarded, run_cli, tmp_path):
    """`OUT-seed1` a link to `OUT`: the locks, re-entrant, let both members write into
    it; `OUT` ended with the seed-1 SAE, the seed-0 one was lost, and both were
    reported saved (an ensemble of one SAE twice agrees with itself perfectly)."""
    cli, one_line = run_cli
    (tmp_path / "sae").mkdir()
    (tmp_path / "sae-seed1").symlink_to(tmp_path / "sae")
    args = ["--d-sae", "24", "--k", "4", "--tokens", "512", "--batch-size", "64", "-q"]
    result = cli("train", "--acts", guarded.store, "--out", tmp_path / "sae", "--seeds", 2, *args)
    one_line(result, "sae-seed1' are one directory", "remove the link")
    assert list((tmp_path / "sae").iterdir()) == []
