"""Capture under ``torchrun``: each rank records its share of the input batches.

Rank r of W takes a contiguous block of the input batches (the first
``n_batches % W`` ranks one more), so the ranks' shards, listed rank by rank,
hold the rows in input order, and the store equals the one a single process
writes. The ranks meet only a few times, always in the same order, through a
gloo group with a timeout (whatever the backend of the default group, so that
NCCL runs coordinate on the CPU too):

1. rank 0 opens the store (lock, directory, resume checks); every rank learns
   whether it succeeded;
2. the other ranks open their parts of it (their own progress, on resume);
3. after its share each rank reports its part (:class:`~saeatlas.store.merge.RankPart`),
   or the error that stopped it;
4. rank 0 merges the parts into one manifest and reports whether it succeeded.

Every meeting is an ``all_gather`` of each rank's status, so a rank that fails
makes every rank stop with one error naming it, and a rank that dies or hangs
makes the others stop once the group's timeout runs out, never a hang. So that
the others need not finish their shares first, a rank that fails also leaves
``failed-rNNN.txt`` (its message) in the partial directory, which every rank
looks for about once a second (:meth:`Coordinator.poll`).

A capture by one process goes through the same steps (:func:`open_writer`,
:func:`complete_capture`) in a world of one, which never waits.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from .._world import World, join
from ..errors import AtlasError, ConfigError
from ..store import StoreWriter
from ..store.atomic import atomic_write_bytes
from ..store.merge import RankPart

T = TypeVar("T")


class DistributedError(AtlasError, RuntimeError):
    """Another rank of a ``torchrun`` capture failed, died or took too long."""


class Coordinator:
    """The meetings of the ranks of one capture (a world of one never waits)."""

    #: Seconds between two looks for another rank's failure marker.
    poll_s = 1.0

    def __init__(
        self, world: World, group: Any = None, timeout_s: float = 0.0, owns_default: bool = False
    ) -> None:
        self.world, self.group, self.timeout_s = world, group, timeout_s
        self.owns_default = owns_default
        self.work: Path | None = None
        self._next_poll = 0.0

    def close(self) -> None:
        """Destroy this capture's group, and the default group if it was joined here
        (a process group left to the interpreter's exit can abort it)."""
        if not self.distributed:
            return
        if self.group is not None:
            dist.destroy_process_group(self.group)
            self.group = None
        if self.owns_default and dist.is_initialized():
            dist.destroy_process_group()

    def watch(self, work: Path) -> None:
        """Look for other ranks' failure markers in the partial directory ``work``."""
        if self.distributed:
            self.work = work

    @staticmethod
    def clear_failures(work: Path) -> None:
        """Rank 0, before the others start: remove the markers a failed run left."""
        for f in work.glob("failed-r*.txt"):
            f.unlink(missing_ok=True)

    def report_failure(self, error: BaseException) -> None:
        """Leave this rank's failure marker, so that the others stop at their next poll."""
        if self.work is None or isinstance(error, DistributedError):
            return
        try:
            marker = self.work / f"failed-r{self.world.rank:03d}.txt"
            atomic_write_bytes(marker, _describe(error).encode())
        except OSError:  # the meeting at the end still tells them
            pass

    def poll(self) -> None:
        """Raise :class:`DistributedError` if another rank has failed (at most one look
        per :attr:`poll_s`)."""
        if self.work is None or time.monotonic() < self._next_poll:
            return
        self._next_poll = time.monotonic() + self.poll_s
        for f in sorted(self.work.glob("failed-r*.txt")):
            rank = f.name[len("failed-r") : -len(".txt")]
            try:
                message = f.read_text()
            except OSError:
                message = "(its message could not be read)"
            raise DistributedError(self._stopped(int(rank), message))

    def _stopped(self, rank: int, message: str) -> str:
        return (
            f"Rank {rank} of {self.world.size} failed, so rank {self.world.rank} stopped too: "
            f"{message}"
        )

    @property
    def distributed(self) -> bool:
        return self.world.size > 1

    def exchange(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.world.size
        try:
            dist.all_gather_object(out, value, group=self.group)
        except Exception as e:  # gloo: a peer closed its connection, or the timeout ran out
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DistributedError(
                f"Rank {self.world.rank} of {self.world.size} lost contact with the other ranks "
                f"of the capture ({first}): one of them died, or took more than `timeout_s` "
                f"({self.timeout_s:g} s, --timeout) to reach the same point. See the other ranks' "
                "output for the cause; resume with --resume."
            ) from e
        return out

    def check(
        self, error: BaseException | None, on_failure: Callable[[], None] | None = None
    ) -> None:
        """Meet the other ranks; if any failed, run ``on_failure`` and raise (:meth:`gather`)."""
        self.gather(None, error, on_failure)

    def gather(
        self,
        value: Any,
        error: BaseException | None,
        on_failure: Callable[[], None] | None = None,
    ) -> list[Any]:
        """Meet the other ranks: each sends ``value``, or the ``error`` that stopped it.
        When all succeeded, return every rank's value; otherwise run ``on_failure``
        and raise this rank's own ``error``, or a :class:`DistributedError` naming the
        first rank that failed and its message."""
        try:
            secondary = isinstance(error, DistributedError)
            statuses = self.exchange(
                ("ok", value) if error is None else ("error", _describe(error), secondary)
            )
        except DistributedError:
            if on_failure is not None:
                on_failure()
            raise
        # A rank that only stopped because another failed (secondary) is not the cause.
        failed = sorted(
            ((s[2], r, s[1]) for r, s in enumerate(statuses) if s[0] == "error"),
        )
        if failed:
            if on_failure is not None:
                on_failure()
            if error is not None:
                raise error
            secondary, rank, message = failed[0]
            raise DistributedError(message if secondary else self._stopped(rank, message))
        return [s[1] for s in statuses]

    def agree(self, job: dict[str, Any]) -> None:
        """Every rank must capture the same job (model, inputs, layers, settings)."""
        jobs = self.gather(job, None)
        differ = sorted(
            {
                k
                for other in jobs[1:]
                for k in set(jobs[0]) | set(other)
                if other.get(k) != jobs[0].get(k)
            }
        )
        if differ:
            ranks = [r for r, other in enumerate(jobs) if other != jobs[0]]
            raise ConfigError(
                f"The ranks of this capture were given different {', '.join(differ)} (ranks "
                f"{ranks} differ from rank 0). Every rank must run the same model (same weights: "
                "load them, or seed their initialisation) on the same inputs in the same order, "
                "with the same layers and settings."
            )


def open_writer(coord: Coordinator, make: Callable[[], StoreWriter]) -> StoreWriter:
    """Meetings 1 and 2: rank 0 opens the store (lock, directory, resume checks) with
    ``make`` before the others open their parts of it; a rank that fails stops them all."""
    writer, error = None, None
    if coord.world.is_main:
        try:
            writer = make()
            coord.clear_failures(writer.work)  # those of an earlier run that failed
        except Exception as e:
            error = e
    coord.check(error, on_failure=writer.abort if writer is not None else None)
    if not coord.world.is_main:
        try:
            writer = make()
        except Exception as e:
            error = e
    coord.check(error, on_failure=writer.abort if writer is not None else None)
    assert writer is not None
    return writer


def complete_capture(coord: Coordinator, writer: StoreWriter, part: RankPart) -> None:
    """Meetings 3 and 4: every rank's part to rank 0, which merges them into the store
    (in a world of one, its own part: the same path as under torchrun)."""
    parts = coord.gather(part, None, on_failure=writer.abort)
    error = None
    if coord.world.is_main:
        try:
            writer.complete(parts)
        except BaseException as e:
            writer.abort()
            if not isinstance(e, Exception):  # a kill or Ctrl-C: no meeting, stop now
                raise
            error = e
    coord.check(error)


def _describe(e: BaseException) -> str:
    return str(e).strip() or type(e).__name__


def capture_world(device: str | None, timeout_s: float) -> Coordinator:
    """The ranks of this capture: the initialised process group, or the one
    ``torchrun`` describes in the environment (joined here), or a world of one."""
    joined_here = not (dist.is_available() and dist.is_initialized())
    world = join(device or "cpu")
    if world.size == 1:
        return Coordinator(world)
    group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
    return Coordinator(world, group, timeout_s, owns_default=joined_here)


def rank_device(device: str | None, world: World) -> str | None:
    """``cuda`` under ``torchrun`` means this rank's own GPU (``LOCAL_RANK``)."""
    if device == "cuda" and world.size > 1:
        n_gpus = torch.cuda.device_count()
        local = int(os.environ.get("LOCAL_RANK", world.rank % max(n_gpus, 1)))
        if local >= n_gpus:
            raise ConfigError(
                f"Rank {world.rank} (local rank {local}) would run on cuda:{local}, but this "
                f"machine has {n_gpus} GPU(s). Start at most {n_gpus} processes per machine "
                "(torchrun --nproc_per_node), or name one device for all (--device cuda:0)."
            )
        return f"cuda:{local}"
    return device


def count_batches(inputs: Any, batch_size: int) -> int:
    """Input batches that ``inputs`` make; an iterable of batches must have a length."""
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        return -(-int(inputs.shape[0]) // batch_size)
    if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str):
        return -(-len(inputs) // batch_size)
    try:
        return len(inputs)
    except TypeError:
        raise ConfigError(
            f"Inputs of type {type(inputs).__name__} have no length, so the batches cannot be "
            "shared among the ranks of a torchrun capture. Pass an array, texts or a DataLoader "
            "(anything with len()), or capture in one process."
        ) from None


def share(n_batches: int, world: World) -> tuple[int, int]:
    """The batches ``[lo, hi)`` of rank ``world.rank``: contiguous blocks in rank order."""
    per, extra = divmod(n_batches, world.size)
    lo = world.rank * per + min(world.rank, extra)
    return lo, lo + per + (1 if world.rank < extra else 0)
