"""Tenth hostile sweep, training half: resumes that change the number of ranks, a
sweep killed between its members and continued with --resume."""

from __future__ import annotations

import torch

TRAIN_FLAGS = ["--seeds", "1", "--d-sae", "8", "--k", "2", "--batch-size", "32", "-q"]
TRAIN_FLAGS += ["--tokens", "640", "--checkpoint-every", "5"]


def _set_ranks(file, ranks):
    state = torch.load(file, weights_only=True)
    if ranks is None:
        del state["settings"]["world_size"]
    else:
        state["settings"]["world_size"] = ranks
    torch.save(state, file)


def test_a_two_rank_checkpoint_is_not_resumed_by_one_process(tmp_path, outputs, run_cli, interrupt):
    """The checkpoint did not record how many ranks wrote it: a one-process --resume of a
    `torchrun --nproc_per_node 2` training went on with another share of each batch."""
    cli, one_line = run_cli
    file = interrupt(outputs.store, tmp_path / "sae", *TRAIN_FLAGS)
    assert torch.load(file, weights_only=True)["settings"]["world_size"] == 1
    _set_ranks(file, 2)
    before = file.read_bytes()
    r = cli("train", "--acts", outputs.store, "--out", file.parent, *TRAIN_FLAGS, "--resume")
    one_line(r, "on 2 processes", "runs on 1 process", "--nproc_per_node 2", "--overwrite")
    assert file.read_bytes() == before


def test_a_checkpoint_from_before_the_world_size_still_resumes(
    tmp_path, outputs, run_cli, interrupt
):
    cli, _ = run_cli
    file = interrupt(outputs.store, tmp_path / "sae", *TRAIN_FLAGS)
    _set_ranks(file, None)
    r = cli("train", "--acts", outputs.store, "--out", file.parent, *TRAIN_FLAGS, "--resume")
    assert r.exit_code == 0, r.output
    assert not file.exists() and (file.parent / "cfg.json").is_file()
