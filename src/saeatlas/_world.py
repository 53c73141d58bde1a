"""The process group ``torchrun`` describes, shared by every stage that runs on
several processes (capture, training): which rank this is, how many there are.

The stages' own collective steps live with them (``capture/distributed.py``,
``train/distributed.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def join(device: str) -> World:
    """The process group ``torchrun`` describes in the environment (joined on first
    use: NCCL on CUDA, gloo on the CPU), or a world of one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return World()
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def is_main_process() -> bool:
    """Rank 0 of a ``torchrun`` world, or a process on its own: the one that writes."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0
