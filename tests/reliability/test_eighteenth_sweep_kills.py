"""The eighteenth hostile sweep: kills, concurrency and resume across every stage.

Readers whose output another command replaces while they read it, and kills at the
write steps of each stage, made deterministic: the other writer's swap is done from a
patched read step, a kill is an exception raised from a patched write step."""

from __future__ import annotations

import os
import shutil

import numpy as np

import saeatlas.sae.io as sae_io


def test_sae_replaced_between_its_cfg_and_its_weights_is_refused(
    outputs, run_cli, tmp_path, monkeypatch
):
    # `train --overwrite` swapped another SAE into the directory after `evaluate` had read
    # its cfg.json: the SAE read was one SAE's settings (k, layers, normalisation) over
    # the other's weights, without a word
    cli, assert_one_line_error = run_cli
    sae, other = tmp_path / "sae", tmp_path / "other"
    shutil.copytree(outputs.sae, sae)
    shutil.copytree(outputs.sae, other)
    real = sae_io.read_cfg

    def racing(path):
        read = real(path)
        os.rename(sae, tmp_path / ".sae.old")  # what swap_in does
        os.rename(other, sae)
        return read

    monkeypatch.setattr(sae_io, "read_cfg", racing)
    r = cli("evaluate", "--sae", sae, "--acts", outputs.store)
    monkeypatch.setattr(sae_io, "read_cfg", real)
    assert_one_line_error(r, f"The SAE at '{sae}' was replaced", "read it again")
    r = cli("evaluate", "--sae", sae, "--acts", outputs.store)  # once it is done, it reads
    assert r.exit_code == 0, r.output


def test_train_seeds_killed_after_its_first_sae_advises_resume(outputs, run_cli, tmp_path):
    # `train --seeds 3` killed (kill -9) once its first SAE was saved: started again as it
    # was typed, it said only "already holds an SAE ... pass --overwrite", which trains
    # the finished SAE again; --resume keeps it and trains the rest, bit for bit
    cli, assert_one_line_error = run_cli
    sae = tmp_path / "sae"
    shutil.copytree(outputs.sae, sae)  # what the kill leaves: the first SAE, no seed 1 or 2
    flags = ["--acts", outputs.store, "--out", sae, "--d-sae", "24", "--k", "4"]
    flags += ["--tokens", "2048", "--batch-size", "64", "-q"]
    before = (sae / "sae_weights.safetensors").read_bytes()
    assert_one_line_error(
        cli("train", *flags), f"'{sae}-seed1' holds no complete one", "Pass --resume"
    )
    assert not (tmp_path / "sae-seed1").exists()
    r = cli("train", *flags, "--resume")
    assert r.exit_code == 0, r.output
    assert (sae / "sae_weights.safetensors").read_bytes() == before
    for s in (1, 2):
        got = (tmp_path / f"sae-seed{s}" / "sae_weights.safetensors").read_bytes()
        assert got == (outputs.root / f"sae-seed{s}" / "sae_weights.safetensors").read_bytes()


def test_a_batch_reader_left_unfinished_closes_without_joining_its_reader_thread(
    tmp_path, make_store
):
    """`iter_batches` reads the next shard on a thread while it serves one. Closing the
    reader (a training loop that stops early, or the garbage collector wherever it
    finalises one) joined that thread, and a finaliser run inside threading's own
    bookkeeping, its lock held, hung every thread started after it (the whole suite,
    once). Closing no longer waits for the read in flight."""
    import threading

    from saeatlas.store import ActivationStore
    from saeatlas.store.readers import ReadPlan

    store = ActivationStore.open(make_store(tmp_path / "store"))
    source, load = store._source, store._source.load
    release, reading = threading.Event(), threading.Event()

    def slow(i, *a, **kw):  # every shard after the first waits to be released
        if i != 0:
            reading.set()
            release.wait(10)
        return load(i, *a, **kw)

    source.load = slow
    starts = np.cumsum([0] + [source.rows(i) for i in range(store.n_shards)])
    plan = ReadPlan(store, slice(0, store.n_units), starts, store.n_rows, 8, 0)
    shards = plan.shards([0, 1, 2], 0)
    next(shards)  # shard 0 served; shard 1's read waits on the reader thread
    assert reading.wait(5)
    closer = threading.Thread(target=shards.close)
    closer.start()
    closer.join(2)
    stuck = closer.is_alive()
    release.set()
    closer.join()
    assert not stuck, "closing the reader waited for the read in flight"
