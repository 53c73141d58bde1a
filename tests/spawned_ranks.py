"""What a process that the ``spawn_ranks`` fixture started runs first (a module of its
own: ``conftest`` names several files, so a test module cannot import from it)."""

import os

import torch
import torch.distributed as dist


def join_gloo(rank: int, world: int, port: int) -> None:
    """Join the gloo group of ``world`` ranks as ``rank`` (one thread, as the suite runs)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
