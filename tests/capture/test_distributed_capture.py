"""Capture in two CPU processes (gloo) writes the store one process writes; a rank
killed mid-way resumes to it; a rank that fails stops both with one clear error."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as dist
from torch import nn

from saeatlas._world import World, rank_device, share
from saeatlas.capture import CaptureConfig, capture_activations
from saeatlas.capture.distributed import count_batches
from saeatlas.errors import ConfigError
from saeatlas.store import ActivationStore
from saeatlas.store.atomic import partial_dir

N_SAMPLES, BATCH = 300, 16  # 19 batches: rank 0 takes 10, rank 1 takes 9
LAYERS = ["act1", "fc2"]
CONFIG = dict(batch_size=BATCH, shard_rows=40, timeout_s=20.0)  # shards cut through batches
WAIT_S = 60  # a worker still running after this is a hang


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.act1, self.fc2 = nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 12)

    def forward(self, x):
        return self.fc2(self.act1(self.fc1(x)))


def _inputs():
    x = torch.randn(N_SAMPLES, 8, generator=torch.Generator().manual_seed(1))
    return x, np.arange(N_SAMPLES) % 7


def _capture(out, model=None, **kw):
    x, labels = _inputs()
    return capture_activations(
        model or MLP(), x, LAYERS, out, CaptureConfig(**CONFIG), labels=labels, progress=False, **kw
    )


def _worker(rank, world, port, out, fail, resume, init, seed, slow):
    """One rank; ``fail`` = (rank, forward call, "raise" or "kill") makes it fail there;
    ``slow`` = (rank, seconds) makes that rank's forward passes take that long.
    With ``init`` the group is initialised here, else capture joins the one the
    environment describes (as under torchrun)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)
    if init:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    model, calls = MLP(), []
    if seed is not None and rank == 1:  # another model on rank 1
        torch.manual_seed(seed)
        model = MLP.__new__(MLP)
        nn.Module.__init__(model)
        model.fc1, model.act1, model.fc2 = nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 12)

    def hook(module, args, output):
        calls.append(1)
        if slow and slow[0] == rank:
            time.sleep(slow[1])
        if fail and fail[0] == rank and len(calls) == fail[1]:
            if fail[2] == "kill":  # once a shard is committed: the resume must skip it
                progress = partial_dir(out) / f"progress-r{rank:03d}-of-{world:03d}.safetensors"
                deadline = time.monotonic() + WAIT_S / 2
                while not progress.exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
                os.kill(os.getpid(), signal.SIGKILL)
            raise ValueError("planted failure")

    model.fc1.register_forward_hook(hook)
    try:
        _capture(out, model, resume=resume)
        result = {"forwards": len(calls)}
    except Exception as e:
        result = {"error": type(e).__name__, "message": str(e), "forwards": len(calls)}
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    with open(f"{out}.r{rank}.json", "w") as f:
        json.dump(result, f)


@pytest.fixture
def run_ranks(spawn_ranks):
    def run(out, fail=None, resume=False, init=False, seed=None, slow=None):
        """Run 2 ranks to their end; each rank's result."""
        spawn_ranks(_worker, (str(out), fail, resume, init, seed, slow), WAIT_S)
        results = []
        for r in range(2):
            path = f"{out}.r{r}.json"
            results.append(json.load(open(path)) if os.path.exists(path) else {"killed": True})
            if os.path.exists(path):
                os.remove(path)
        return results

    return run


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    torch.set_num_threads(1)
    return _capture(tmp_path_factory.mktemp("one") / "store")


def _assert_same_store(two: ActivationStore, one: ActivationStore) -> None:
    assert two.n_rows == one.n_rows == N_SAMPLES
    assert [(l.name, l.start, l.stop) for l in two.layers] == [
        (l.name, l.start, l.stop) for l in one.layers
    ]
    assert np.abs(two.read().numpy() - one.read().numpy()).max() == 0.0
    r2, r1 = pq.read_table(two.path / "rows.parquet"), pq.read_table(one.path / "rows.parquet")
    assert r2.equals(r1), (r2.slice(0, 5).to_pydict(), r1.slice(0, 5).to_pydict())
    assert r2["sample"].to_pylist() == list(range(N_SAMPLES))
    m2, m1 = two.manifest, one.manifest
    np.testing.assert_allclose(m2.mean, m1.mean, rtol=0, atol=1e-6)
    np.testing.assert_allclose(m2.std, m1.std, rtol=0, atol=1e-6)
    two.verify()  # checksums, and the moments recomputed from the shards


def test_two_ranks_write_the_store_one_process_writes(tmp_path, single, run_ranks):
    results = run_ranks(tmp_path / "two", init=True)  # under an initialised group
    assert results == [{"forwards": 10}, {"forwards": 9}]
    two = ActivationStore.open(tmp_path / "two")
    _assert_same_store(two, single)
    files = sorted(s.file for s in two.manifest.shards)
    assert files[0] == "shard-r000-00000.safetensors" and files[-1].startswith("shard-r001-")
    assert two.manifest.provenance["world_size"] == 2
    assert not partial_dir(tmp_path / "two").exists()


def test_rank_killed_mid_way_resumes_to_the_same_store(tmp_path, single, run_ranks):
    out = tmp_path / "two"
    first = run_ranks(out, fail=(1, 7, "kill"))
    assert first[1] == {"killed": True}
    assert first[0]["error"] == "DistributedError" and "lost contact" in first[0]["message"]
    work = partial_dir(out)
    assert (work / "progress-r001-of-002.safetensors").is_file()  # rank 1 committed shards
    assert not out.exists()
    with pytest.raises(ConfigError, match="another number of processes"):
        _capture(out, resume=True)  # one process cannot resume two ranks' capture

    again = run_ranks(out, resume=True)
    assert again[0] == {"forwards": 0}  # rank 0 had committed all of its share
    assert 0 < again[1]["forwards"] < 9  # rank 1 picks up after its last commit
    _assert_same_store(ActivationStore.open(out), single)


def test_a_rank_that_fails_stops_both_with_one_clear_error(tmp_path, run_ranks):
    # Rank 0 would take 10 x 0.5 s for its share: it stops at its next look instead.
    results = run_ranks(tmp_path / "two", fail=(1, 2, "raise"), slow=(0, 0.5))
    assert results[1]["error"] == "ModelError"
    assert "planted failure" in results[1]["message"]
    assert results[0]["error"] == "DistributedError"
    assert results[0]["message"].startswith("Rank 1 of 2 failed, so rank 0 stopped too: ")
    assert "planted failure" in results[0]["message"]
    assert results[0]["forwards"] < 8
    assert not (tmp_path / "two").exists()


def test_ranks_given_different_models_refuse_to_start(tmp_path, run_ranks):
    results = run_ranks(tmp_path / "two", seed=5)
    for r in results:
        assert r["error"] == "ConfigError" and "different model" in r["message"], r
    assert results[0]["message"] == results[1]["message"]
    assert not (tmp_path / "two").exists() and not partial_dir(tmp_path / "two").exists()


def test_torchrun_cli_writes_the_store_one_process_writes(tmp_path, single):
    x, labels = _inputs()
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "labels.npy", labels)
    # PYTHONPATH passes through; --standalone lets torchrun pick a free port itself
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "saeatlas", "capture", "--model", f"{__file__}:MLP",
        "--inputs", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "labels.npy"),
        "--layers", *LAYERS, "--out", str(tmp_path / "two"), "--batch-size", str(BATCH),
        "--shard-rows", "40", "--timeout", "20", "--quiet",
    ]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=WAIT_S)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("300 rows x 28 units") == 1, result.stdout  # rank 0 prints
    _assert_same_store(ActivationStore.open(tmp_path / "two"), single)


def test_shares_are_contiguous_blocks_in_rank_order():
    for n_batches, size in [(19, 2), (3, 4), (10, 3), (0, 2)]:
        shares = [share(n_batches, World(r, size)) for r in range(size)]
        assert shares[0][0] == 0 and shares[-1][1] == n_batches
        assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))
        assert max(hi - lo for lo, hi in shares) - min(hi - lo for lo, hi in shares) <= 1
    assert count_batches(np.zeros((33, 2)), 16) == 3
    assert count_batches(["a"] * 32, 16) == 2
    with pytest.raises(ConfigError, match="no length"):
        count_batches(iter([torch.zeros(2, 8)]), 16)


@pytest.mark.skipif(torch.cuda.device_count() > 1, reason="checks a machine with too few GPUs")
def test_cuda_means_each_ranks_own_gpu_which_must_exist(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert (
        rank_device("cpu", World(1, 2)) == "cpu" and rank_device("cuda:0", World(1, 2)) == "cuda:0"
    )
    with pytest.raises(ConfigError, match="--nproc_per_node"):
        rank_device("cuda", World(1, 2))


RANK = """
import sys, time
from saeatlas import _launcher
from saeatlas.store.lock import acquire
_launcher.LAUNCHER_POLL_S = 0.05
acquire(sys.argv[1])
_launcher.stop_with_launcher()
print("ready", flush=True)
time.sleep(WAIT)
"""
LAUNCHER = """
import os, subprocess, sys, time
rank = subprocess.Popen(  # as torchrun starts its ranks: in a session of their own
    [sys.executable, "-c", sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE, text=True,
    env={**os.environ, "TORCHELASTIC_RUN_ID": "test"}, start_new_session=True,
)
print(rank.pid, rank.stdout.readline().strip(), flush=True)
time.sleep(WAIT)
"""


def test_a_rank_whose_launcher_was_killed_stops_and_frees_its_lock(tmp_path):
    """kill -9 of torchrun left its ranks running, orphaned, holding their outputs'
    locks: the rerun was refused ('being written by process N') by the killed job."""
    from saeatlas.store.lock import output_lock

    out = tmp_path / "store"
    code = [c.replace("WAIT", str(WAIT_S)) for c in (RANK, LAUNCHER)]
    launcher = subprocess.Popen(
        [sys.executable, "-c", code[1], code[0], str(out)], stdout=subprocess.PIPE, text=True
    )
    pid, ready = launcher.stdout.readline().split()
    assert ready == "ready"
    launcher.kill()
    launcher.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with output_lock(out):
                break
        except Exception:
            time.sleep(0.05)
    else:
        os.kill(int(pid), signal.SIGKILL)
        pytest.fail("the orphaned rank still holds the lock")


STARTING = """
import os, socket, subprocess, sys, time
with socket.socket() as s:  # a port nobody listens on: the launcher's store, gone
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
env = {**os.environ, "TORCHELASTIC_RUN_ID": "test", "WORLD_SIZE": "2", "RANK": "1",
       "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
rank = subprocess.Popen(sys.argv[1:], env=env, start_new_session=True)
print(rank.pid, flush=True)
time.sleep(WAIT)
"""


def test_a_rank_whose_launcher_was_killed_while_it_started_stops(tmp_path):
    """kill -9 of torchrun in the seconds its ranks spend importing: they started
    watching their launcher only when they joined the process group, took the orphaned
    state for the normal one and waited at the group's first meeting for 30 minutes."""
    np.save(tmp_path / "x.npy", np.zeros((4, 6), np.float32))
    (tmp_path / "m.py").write_text("import torch\ndef f():\n    return torch.nn.Linear(6, 2)\n")
    rank = [sys.executable, "-m", "saeatlas", "capture", "--model", f"{tmp_path}/m.py:f"]
    rank += ["--inputs", str(tmp_path / "x.npy"), "--layers", "", "--out", str(tmp_path / "s")]
    code = STARTING.replace("WAIT", str(WAIT_S))
    launcher = subprocess.Popen([sys.executable, "-c", code, *rank], stdout=subprocess.PIPE)
    pid = int(launcher.stdout.readline())
    time.sleep(0.5)  # the rank's Python has started; its imports take seconds more
    launcher.kill()
    launcher.wait()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the rank went on after its launcher was killed")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
