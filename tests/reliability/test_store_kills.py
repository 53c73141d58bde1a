"""A capture killed at any commit point resumes to the store an uninterrupted run
writes: the same shards (sha256), rows and per-unit statistics, bit for bit.

Kills are simulated by raising before or after each write the store writer makes
(shard, row part, progress file, rows.parquet, manifest, the directory swap), and
done for real with ``kill -9`` of a subprocess at two points.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import saeatlas.store.commit as commit_module
import saeatlas.store.merge as merge_module
from saeatlas.capture import CaptureConfig, capture_activations
from saeatlas.store import ActivationStore
from saeatlas.store.atomic import partial_dir, swap_in


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (BaseException, like KeyboardInterrupt)."""


#: The writer's writes, in the order one shard's commit and the close make them, with
#: the module that makes each and its calls in a capture of 90 rows in shards of 32.
WRITES = (
    ("commit", "write_shard", 3),  # the shards
    ("commit", "atomic_write", 3),  # their row parts
    ("commit", "atomic_write_bytes", 3),  # the progress file: the commit point
    ("merge", "atomic_write", 1),  # rows.parquet
    ("merge", "atomic_write_json", 1),  # manifest.json
    ("merge", "swap_in", 1),
)
MODULES = {"commit": commit_module, "merge": merge_module}
KILL_POINTS = [
    (module, name, n, when)
    for module, name, calls in WRITES
    for n in range(1, calls + 1)
    for when in ("before", "after")
]


def assert_same_store(a: Path, b: Path) -> None:
    sa, sb = ActivationStore.open(a), ActivationStore.open(b)
    assert [s.sha256 for s in sa.manifest.shards] == [s.sha256 for s in sb.manifest.shards]
    assert pq.read_table(a / "rows.parquet").equals(pq.read_table(b / "rows.parquet"))
    np.testing.assert_array_equal(sa.mean, sb.mean)  # exactly: nothing counted twice
    np.testing.assert_array_equal(sa.std, sb.std)
    sa.verify()
    assert not partial_dir(a).exists()


@pytest.fixture
def reference(reference_store):
    return reference_store


@pytest.mark.parametrize("module,name,n,when", KILL_POINTS)
def test_a_kill_at_any_commit_point_loses_and_doubles_nothing(
    tmp_path, monkeypatch, reference, make_store, module, name, n, when
):
    module = MODULES[module]
    real = getattr(module, name)
    calls = {"n": 0}
    lock = threading.Lock()

    def dying(*args, **kwargs):
        with lock:  # several threads write shards at once: each call gets its own number
            calls["n"] += 1
            call = calls["n"]
        if call == n and when == "before":
            raise Killed(f"{name} #{n}")
        out = real(*args, **kwargs)
        if call == n:
            raise Killed(f"after {name} #{n}")
        return out

    monkeypatch.setattr(module, name, dying)
    with pytest.raises(Killed):
        make_store(tmp_path / "store")
    monkeypatch.setattr(module, name, real)
    store = tmp_path / "store"
    # once its manifest is written, a store is complete: the reader puts it in place
    if not any((d / "manifest.json").exists() for d in (store, partial_dir(store))):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))
        x = torch.randn(90, 4, generator=torch.Generator().manual_seed(0))
        capture_activations(
            model,
            x,
            ["0", "2"],
            store,
            CaptureConfig(batch_size=7, shard_rows=32),
            resume=True,
            progress=False,
        )
    assert_same_store(store, reference)


def test_a_kill_between_the_two_renames_of_a_swap_is_finished_on_next_use(tmp_path, make_store):
    """The one instant a directory is absent: old renamed aside, new not yet in place."""
    from saeatlas.store.atomic import recover_dir

    store = tmp_path / "store"
    make_store(store)
    new = partial_dir(store)
    make_store(tmp_path / "other", rows=60)
    os.replace(tmp_path / "other", new)  # a complete new version, waiting
    os.replace(store, tmp_path / ".store.old")  # the swap's first rename, then the kill
    assert not store.exists()
    recover_dir(store)
    assert ActivationStore.open(store).n_rows == 60
    assert not (tmp_path / ".store.old").exists() and not new.exists()


def test_a_store_killed_before_its_swap_is_put_in_place_not_captured_again(
    tmp_path, monkeypatch, reference, make_store
):
    """Once its progress files were removed (the manifest written), a kill before the
    swap left a complete store in the partial directory: --resume deleted it and
    captured every row again, and readers said there was no store. Then --resume put
    it in place but exited 1 ('nothing is left to resume'): it now ends with the store."""

    def killed(*args):
        raise Killed

    monkeypatch.setattr(merge_module, "swap_in", killed)
    with pytest.raises(Killed):
        make_store(tmp_path / "store")
    monkeypatch.undo()
    work = partial_dir(tmp_path / "store")
    assert (work / "manifest.json").exists() and not list(work.glob("progress*"))
    monkeypatch.setattr(commit_module, "write_shard", killed)  # no shard is written again
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))
    x = torch.randn(90, 4, generator=torch.Generator().manual_seed(0))
    cfg = CaptureConfig(batch_size=7, shard_rows=32)
    resumed = capture_activations(model, x, ["0", "2"], tmp_path / "store", cfg, resume=True)
    assert resumed.n_rows == 90
    assert_same_store(tmp_path / "store", reference)


def test_resume_after_a_swap_a_reader_finished_ends_with_the_store(
    tmp_path, monkeypatch, make_store
):
    """A kill between the two renames of an --overwrite, the swap finished by a reader
    (`info`): --resume then exited 1 ('no interrupted capture of it is left to
    resume'). It now ends with the complete store when it is this job's, and refuses,
    naming the difference, when it is another's."""
    from saeatlas.errors import ConfigError

    store = make_store(tmp_path / "store", rows=60)
    make_store(tmp_path / "new", rows=90)
    os.replace(tmp_path / "new", partial_dir(store))  # the --overwrite's complete store
    os.replace(store, tmp_path / ".store.old")  # the swap's first rename, then the kill
    assert ActivationStore.open(store).n_rows == 90  # a reader finishes the swap
    monkeypatch.setattr(commit_module, "write_shard", None)  # no shard is written again
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))
    x = torch.randn(90, 4, generator=torch.Generator().manual_seed(0))
    cfg = CaptureConfig(batch_size=7, shard_rows=32)
    before = (store / "manifest.json").read_bytes()
    assert capture_activations(model, x, ["0", "2"], store, cfg, resume=True).n_rows == 90
    with pytest.raises(ConfigError, match=r"inputs differ from those of the capture that wrote"):
        capture_activations(model, x[:89], ["0", "2"], store, cfg, resume=True)
    with pytest.raises(ConfigError, match=r"`batch_size` was 7, now 8"):
        capture_activations(
            model, x, ["0", "2"], store, CaptureConfig(batch_size=8, shard_rows=32), resume=True
        )
    assert (store / "manifest.json").read_bytes() == before
    assert not partial_dir(store).exists() and not (tmp_path / ".store.lock").exists()


def test_a_reader_finishes_a_swap_a_kill_interrupted(tmp_path, make_store):
    """After a kill between the two renames of an --overwrite, every stage that read the
    store said 'No activation store at ...': the complete new one waited beside it."""
    store = make_store(tmp_path / "store")
    make_store(tmp_path / "other", rows=60)
    os.replace(tmp_path / "other", partial_dir(store))
    os.replace(store, tmp_path / ".store.old")
    assert ActivationStore.open(store).n_rows == 60
    assert not (tmp_path / ".store.old").exists() and not partial_dir(store).exists()


@pytest.mark.parametrize("killed", ["between the renames", "before the swap"])
def test_readers_wait_for_another_rank_finishing_a_swap(tmp_path, make_store, killed):
    """The ranks of `torchrun ... train --acts STORE` open the store at once after a
    kill in its capture's last step: the first takes the lock to put the store in place
    and the other stopped with 'is being written by process N', its sibling."""
    from saeatlas.store.lock import output_lock
    from saeatlas.store.merge import recover_store

    store = make_store(tmp_path / "store", rows=60)
    os.replace(store, partial_dir(store))  # a complete store, waiting beside its place
    if killed == "between the renames":
        os.replace(make_store(tmp_path / "old", rows=30), tmp_path / ".store.old")
    held = threading.Event()

    def sibling() -> None:
        with output_lock(store):
            held.set()
            time.sleep(0.3)
            recover_store(store)

    thread = threading.Thread(target=sibling)
    thread.start()
    held.wait()
    try:
        assert ActivationStore.open(store).n_rows == 60
    finally:
        thread.join()


def test_a_store_replaced_while_it_is_read_is_not_mixed_in(tmp_path, make_store):
    """Shards are hashed on their first read only: an --overwrite between two epochs
    served the new store's rows under the old manifest, without a word."""
    from saeatlas.errors import StoreError

    store = ActivationStore.open(make_store(tmp_path / "store", rows=64))
    first = store.read()
    assert len(store.rows()) == 64
    make_store(tmp_path / "other", rows=64, seed=1)  # the same shape, other rows
    shutil.rmtree(partial_dir(tmp_path / "store"), ignore_errors=True)
    os.replace(tmp_path / "other", partial_dir(tmp_path / "store"))
    swap_in(partial_dir(tmp_path / "store"), tmp_path / "store")
    for read in (store.read, store.rows, lambda: list(store.iter_batches(16))):
        with pytest.raises(StoreError, match="was replaced while this run read it"):
            read()
    assert not torch.equal(ActivationStore.open(tmp_path / "store").read(), first)  # other rows


SLOW_MODEL = textwrap.dedent(
    """
    import os
    import time
    import torch
    from torch import nn

    class Slow(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc, self.act = nn.Linear(4, 6), nn.ReLU()

        def forward(self, x):
            if os.environ.get("SAEATLAS_TEST_SLOW"):  # only in the process to be killed
                time.sleep(0.02)
            return self.act(self.fc(x))

    def inputs():
        return torch.randn(400, 4, generator=torch.Generator().manual_seed(5))

    if __name__ == "__main__":
        import sys
        from saeatlas.capture import CaptureConfig, capture_activations

        capture_activations(
            Slow(), inputs(), ["fc", "act"], sys.argv[1],
            CaptureConfig(batch_size=5, shard_rows=40), progress=False,
        )
    """
)


def _load(path: Path):
    spec = importlib.util.spec_from_file_location("slow_model", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("commits", [1, 5])
def test_kill_9_of_a_capture_then_resume_equals_an_uninterrupted_capture(tmp_path, commits):
    script = tmp_path / "slow.py"
    script.write_text(SLOW_MODEL)
    mod = _load(script)
    cfg = CaptureConfig(batch_size=5, shard_rows=40)
    full = capture_activations(
        mod.Slow(), mod.inputs(), ["fc", "act"], tmp_path / "full", cfg, progress=False
    )
    store = tmp_path / "store"
    progress = partial_dir(store) / "progress.safetensors"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(store)],
        env={**os.environ, "SAEATLAS_TEST_SLOW": "1", "OMP_NUM_THREADS": "1"},
    )
    try:
        seen, last = 0, None
        deadline = time.monotonic() + 60
        while seen < commits and time.monotonic() < deadline and proc.poll() is None:
            try:
                stamp = progress.stat().st_mtime_ns, progress.stat().st_ino
            except FileNotFoundError:
                stamp = None
            if stamp is not None and stamp != last:
                seen, last = seen + 1, stamp
            time.sleep(0.005)
        assert proc.poll() is None, "the capture finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not store.exists() and progress.exists()
    resumed = capture_activations(
        mod.Slow(), mod.inputs(), ["fc", "act"], store, cfg, resume=True, progress=False
    )
    assert resumed.n_rows == full.n_rows == 400
    assert_same_store(store, tmp_path / "full")


def test_a_killed_overwrite_keeps_the_old_store_and_resumes(tmp_path, monkeypatch, make_store):
    store = make_store(tmp_path / "store", rows=60)
    make_store(tmp_path / "ref", rows=90)
    real = commit_module.write_shard
    calls = {"n": 0}

    def dying(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Killed
        return real(*args)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))
    x = torch.randn(90, 4, generator=torch.Generator().manual_seed(0))
    cfg = CaptureConfig(batch_size=7, shard_rows=32)
    monkeypatch.setattr(commit_module, "write_shard", dying)
    with pytest.raises(Killed):
        capture_activations(model, x, ["0", "2"], store, cfg, overwrite=True, progress=False)
    monkeypatch.setattr(commit_module, "write_shard", real)
    assert ActivationStore.open(store).n_rows == 60  # the old store, whole
    with pytest.raises(Exception, match="or --resume, to continue the interrupted one"):
        capture_activations(model, x, ["0", "2"], store, cfg, progress=False)
    capture_activations(model, x, ["0", "2"], store, cfg, resume=True, progress=False)
    assert_same_store(store, tmp_path / "ref")
