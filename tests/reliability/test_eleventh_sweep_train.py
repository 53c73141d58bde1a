"""Eleventh hostile sweep, training half: what a torchrun run trains, sweeps resumed
after a kill, settings and stores that training must refuse."""

from __future__ import annotations

import numpy as np
import torch

from saeatlas.store import ActivationStore, LayerSpec
from saeatlas.store.writer import StoreWriter


def _written_by_ranks(path, x: torch.Tensor, cuts: list[int], shard_rows: int):
    """A store of the rows ``x`` as ``len(cuts) - 1`` capture ranks write it (rank r the
    rows ``cuts[r]:cuts[r + 1]``, each ending on its own shorter shard)."""
    world = len(cuts) - 1
    writers = [StoreWriter(path, shard_rows=shard_rows, rank=r, world=world) for r in range(world)]
    for r, w in enumerate(writers):
        w.start([LayerSpec("a", 0, x.shape[1], (x.shape[1],))])
        lo, hi = cuts[r], cuts[r + 1]
        w.add(x[lo:hi], {"sample": np.arange(lo, hi)}, n_samples=hi - lo)
    writers[0].complete([w.finish() for w in writers])
    return ActivationStore.open(path)


def test_a_store_two_ranks_captured_is_shuffled_as_the_one_process_capture_is(tmp_path):
    """`torchrun ... saeatlas run` trained another SAE than `saeatlas run`: the ranks of
    its capture each end on a shorter shard, and the shuffle drew its batches shard by
    shard, so the same rows came in another order."""
    x = torch.randn(90, 5, generator=torch.Generator().manual_seed(0))
    one = _written_by_ranks(tmp_path / "one", x, [0, 90], 40)
    two = _written_by_ranks(tmp_path / "two", x, [0, 50, 90], 40)
    assert [s.rows for s in two.manifest.shards] == [40, 10, 40]
    for kw in ({"epoch": 0}, {"epoch": 1, "stop_row": 70}, {"part": (1, 2), "start_batch": 2}):
        a = torch.cat(list(one.iter_batches(16, seed=3, **kw)))
        b = torch.cat(list(two.iter_batches(16, seed=3, **kw)))
        assert torch.equal(a, b), kw
    every = torch.cat(list(two.iter_batches(16, seed=3)))  # each row once
    assert torch.equal(every.sort(dim=0).values, x.sort(dim=0).values)


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def test_a_sweep_resumed_after_a_kill_holds_no_lock_files_of_the_killed_run(
    tmp_path, outputs, run_cli, monkeypatch
):
    """A 2-rank `torchrun ... sweep` killed (kill -9) while it saved its second member,
    then resumed, equalled the uninterrupted sweep, but kept the killed run's lock file
    `k-2/.seed-0.lock` inside the finished sweep."""
    from saeatlas.sae import SparseAutoencoder
    from saeatlas.store.atomic import partial_dir

    cli, _ = run_cli
    flags = ["--over", "k", "--values", "2", "4", "--seeds", "2", "--extend", "0"]
    flags += ["--d-sae", "8", "--batch-size", "32", "--tokens", "320", "-q"]
    real, saves = SparseAutoencoder.save, []

    def dying(self, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 2:
            raise Killed
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(SparseAutoencoder, "save", dying)
    out = tmp_path / "sw"
    try:
        cli("sweep", "--acts", outputs.store, "--out", out, *flags)
    except Killed:
        pass
    monkeypatch.undo()
    new = partial_dir(out)
    assert (new / "k-2" / "seed-0" / "cfg.json").is_file()
    for member in ("k-2/.seed-0.lock", "k-2/.seed-1.lock", "k-4/.seed-0.lock"):
        (new / member).parent.mkdir(exist_ok=True)
        (new / member).write_text("4242\n")  # what a kill -9 leaves
    r = cli("sweep", "--acts", outputs.store, "--out", out, *flags, "--resume")
    assert r.exit_code == 0, r.output
    assert not [str(p.relative_to(out)) for p in out.rglob("*.lock")]


def test_a_resume_on_a_store_captured_again_with_more_rows_names_both_counts(
    tmp_path, make_store, run_cli, interrupt
):
    """`train --resume` after the store was captured again with more rows said only
    'other settings (['n_rows', 'rows_digest'])', not how many rows were and are."""
    cli, one_line = run_cli
    store = make_store(tmp_path / "store", rows=90)
    flags = ["--seeds", "1", "--d-sae", "8", "--k", "2", "--batch-size", "16", "-q"]
    flags += ["--tokens", "320", "--checkpoint-every", "5"]
    file = interrupt(store, tmp_path / "sae", *flags)
    before = file.read_bytes()
    make_store(tmp_path / "more", rows=120)
    r = cli("train", "--acts", tmp_path / "more", "--out", file.parent, *flags, "--resume")
    one_line(r, "the store had 90 rows when the checkpoint was written, it has 120 now")
    assert file.read_bytes() == before
