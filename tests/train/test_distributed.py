"""Two CPU processes (gloo) train the same SAE as one process with the same global batch."""

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from saeatlas.sae import SparseAutoencoder
from saeatlas.train import TrainConfig, train_family, train_sae

CFG = dict(
    architecture="topk",
    d_sae=96,
    k=6,
    batch_size=256,
    tokens=256 * 12,
    lr_warmup_steps=3,
    dead_window=1500,
    seed=4,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, store: str, out: str, cfg: dict) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    try:
        if isinstance(cfg, list):  # a family: one output per member
            train_family(
                store,
                [TrainConfig(**c) for c in cfg],
                [f"{out}-{i}" for i in range(len(cfg))],
                progress=False,
            )
        else:
            train_sae(store, TrainConfig(**cfg), out, progress=False)
        # rank 0 writes the SAE after the last step while the other ranks are done:
        # leave together, so that no rank tears down gloo while a peer still uses it
        # (a rank that left early aborted once in a clean-clone run with "terminate
        # called without an active exception")
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("arch", ["topk", "relu", "batchtopk"])
def test_two_gloo_ranks_equal_one_process(tmp_path, digits_store, arch):
    cfg = {**CFG, "architecture": arch}
    mp.spawn(
        _worker,
        args=(2, _free_port(), str(digits_store.path), str(tmp_path / "ddp"), cfg),
        nprocs=2,
        join=True,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_sae(digits_store, TrainConfig(**cfg), progress=False)
    finally:
        torch.set_num_threads(threads)
    ddp = SparseAutoencoder.load(tmp_path / "ddp")
    for name, value in result.sae.state_dict().items():
        torch.testing.assert_close(ddp.state_dict()[name], value, atol=1e-5, rtol=1e-5, msg=name)
    # the logged figures are the whole batch's, not rank 0's share
    logged = [
        json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(logged) == len(result.metrics)
    for mine, one in zip(logged, result.metrics):
        for key in ("loss", "mse", "fvu", "l0", "dead_fraction"):
            assert mine[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), (key, mine, one)


def test_a_family_on_two_gloo_ranks_equals_the_family_in_one_process(tmp_path, digits_store):
    # what `sweep` and `train --seeds` train: members that share every batch
    family = [{**CFG, "k": 4}, {**CFG, "k": 8, "seed": 5}]
    out = tmp_path / "ddp"
    mp.spawn(
        _worker,
        args=(2, _free_port(), str(digits_store.path), str(out), family),
        nprocs=2,
        join=True,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train_family(digits_store, [TrainConfig(**c) for c in family], progress=False)
    finally:
        torch.set_num_threads(threads)
    for i, one in enumerate(single):
        ddp = SparseAutoencoder.load(f"{out}-{i}")
        for name, value in one.sae.state_dict().items():
            torch.testing.assert_close(
                ddp.state_dict()[name], value, atol=1e-5, rtol=1e-5, msg=name
            )


@pytest.mark.parametrize("step", ["average_gradients", "all_sum", "all_min", "topk"])
def test_a_rank_that_died_is_one_error_not_a_gloo_traceback(monkeypatch, step):
    """A rank killed while training left the others with gloo's RuntimeError ('Connection
    reset by peer') and a traceback, where capture and analysis say which rank lost
    contact and what to do."""
    from saeatlas._world import World
    from saeatlas.errors import DistributedError
    from saeatlas.train import distributed as d

    def reset(*args, **kwargs):
        raise RuntimeError("[pair.cc:537] Read error [127.0.0.1]:7075: Connection reset by peer")

    monkeypatch.setattr(dist, "all_reduce", reset)
    monkeypatch.setattr(dist, "all_gather", reset)
    world = World(1, 2)
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    calls = {
        "average_gradients": lambda: d.average_gradients([p], world),
        "all_sum": lambda: d.all_sum(torch.ones(2), world),
        "all_min": lambda: d.all_min(torch.ones(2), world),
        "topk": lambda: d.global_topk_threshold(torch.ones(4), 2, world),
    }
    with pytest.raises(DistributedError, match=r"^Rank 1 of 2 lost contact .* training .*--resume"):
        calls[step]()


def test_rank_0_dying_before_its_decision_is_one_error(monkeypatch):
    """The other ranks wait for what rank 0 decides (may the output be written?); a rank 0
    killed then left them with gloo's RuntimeError and a traceback."""
    from saeatlas._world import World, from_main
    from saeatlas.errors import DistributedError

    def reset(*args, **kwargs):
        raise RuntimeError("[pair.cc:537] Read error [127.0.0.1]:7075: Connection reset by peer")

    monkeypatch.setattr(dist, "get_backend", lambda *a: "gloo")
    monkeypatch.setattr(dist, "broadcast_object_list", reset)
    with pytest.raises(DistributedError, match=r"^Rank 1 of 2 lost contact .* rank 0 died"):
        from_main(lambda: True, World(1, 2))


@pytest.mark.parametrize(
    "other,acts,resume,needle",
    [({"k": 8}, "a", False, "`k`"), ({"seed": 5}, "a", False, "`seed`"),
     ({}, "b", False, "store rows"), ({}, "a", True, "--resume")],
    ids=["k", "seed", "store", "resume"],
)  # fmt: skip
def test_ranks_given_other_settings_stop_before_training(
    monkeypatch, tmp_path, other, acts, resume, needle
):
    """Training compared nothing across ranks: a rank given another --k (or seed, store,
    --resume) was averaged into rank 0's SAE without a word (L0 6.0 from k 4 and 8)."""
    from dataclasses import replace

    import numpy as np

    from saeatlas._world import World
    from saeatlas.errors import ConfigError
    from saeatlas.store import ActivationStore
    from saeatlas.train import run as run_module

    for name, seed in (("a", 0), ("b", 1)):
        x = np.random.default_rng(seed).normal(size=(64, 4)).astype(np.float32)
        np.save(tmp_path / f"{name}.npy", x)
    cfg = TrainConfig(architecture="topk", d_sae=8, k=4, batch_size=16, tokens=64, seed=4)
    real_agree, jobs = run_module.agree, []
    # what rank 1 sends: the job of its own run (a world of one, its facts recorded)
    monkeypatch.setattr(run_module, "agree", lambda world, job, *a: jobs.append(job))
    store1 = ActivationStore.open(tmp_path / f"{acts}.npy")
    run_module._Run(store1, replace(cfg, **other), {"--resume": resume})
    monkeypatch.setattr(run_module, "agree", real_agree)
    monkeypatch.setattr(run_module, "join", lambda device: World(0, 2))
    monkeypatch.setattr(dist, "get_backend", lambda *a: "gloo")
    monkeypatch.setattr(dist, "all_gather_object", lambda out, job: out.__setitem__(
        slice(None), [job, jobs[0]]))  # fmt: skip
    store0 = ActivationStore.open(tmp_path / "a.npy")
    with pytest.raises(ConfigError, match=rf"ranks of this training were given different {needle}"):
        run_module._Run(store0, cfg, {"--resume": False})
