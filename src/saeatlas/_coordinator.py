"""The meetings of the ranks of a ``torchrun`` job, shared by capture and analysis.

The ranks meet through a gloo group with a timeout (whatever the backend of the
default group, so that NCCL runs coordinate on the CPU too). Every meeting is
one ``all_gather_object`` of each rank's status (and a small value), so a rank
that fails makes every rank stop with one error naming it, and a rank that dies
or hangs makes the others stop once the group's timeout runs out, never a hang.
Data that is too large to pickle (sums of moments, sparse codes) moves by plain
collectives, always right after a meeting at which every rank said it was well.

Because every meeting is the same collective, a rank that fails between two
meetings can tell the others at whatever meeting they have reached:
:meth:`Coordinator.run` does that for a whole job, and holds a last meeting at
its end, so no rank leaves while another still needs it.

A process on its own is a world of one, which never waits: every stage has one
code path, with or without ``torchrun``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from ._validation import shown
from ._world import World, collective, differing, join, share
from .errors import ConfigError, DistributedError
from .store.atomic import atomic_write_bytes

T = TypeVar("T")


class Coordinator:
    """The meetings of the ranks of one job (a world of one never waits).

    ``job`` names the job in messages ("capture", "analysis"); ``hint`` says what to
    do once a rank lost contact (after the cause is fixed)."""

    #: Seconds between two looks for another rank's failure marker.
    poll_s = 1.0

    def __init__(
        self,
        world: World,
        group: Any = None,
        timeout_s: float = 0.0,
        owns_default: bool = False,
        job: str = "capture",
        hint: str = "",
    ) -> None:
        self.world, self.group, self.timeout_s = world, group, timeout_s
        self.owns_default, self.job, self.hint = owns_default, job, hint
        self.work: Path | None = None
        self._next_poll = 0.0
        self._told = False  # this rank's failure was sent to the others at a meeting

    def close(self) -> None:
        """Destroy this job's group, and the default group if it was joined here
        (a process group left to the interpreter's exit can abort it)."""
        if not self.distributed:
            return
        if self.group is not None:
            dist.destroy_process_group(self.group)
            self.group = None
        if self.owns_default and dist.is_initialized():
            dist.destroy_process_group()

    @property
    def distributed(self) -> bool:
        return self.world.size > 1

    # ------------------------------------------------------------ failure markers

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

    # ------------------------------------------------------------ meetings

    @contextmanager
    def _collective(self) -> Iterator[None]:
        """Turn a collective that fails (a peer gone, the timeout run out) into one error."""
        why = (
            f"one of them died, or took more than `timeout_s` ({self.timeout_s:g} s, --timeout) "
            "to reach the same point. See the other ranks' output for the cause"
            f"{'; ' + self.hint if self.hint else ''}."
        )
        with collective(self.world, self.job, why):
            yield

    def exchange(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.world.size
        with self._collective():
            dist.all_gather_object(out, value, group=self.group)
        return out

    def check(
        self, error: BaseException | None, on_failure: Callable[[], None] | None = None
    ) -> None:
        """Meet the other ranks; if any failed, run ``on_failure`` and raise (:meth:`gather`)."""
        self.gather(None, error, on_failure)

    def agree(self, job: dict[str, Any], what: str, fix: str) -> None:
        """Every rank must run the same ``job`` (a mapping of facts that can be
        compared): where one differs from rank 0's, every rank stops with one error
        naming the facts and the ranks (``what``: the job, as in "this capture";
        ``fix``: what to do)."""
        differing(self.gather(job, None), what, fix)

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
            self._told = self._told or error is not None
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

    def from_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` on rank 0, its value on every rank (a meeting; its failure stops
        every rank, as at :meth:`gather`)."""
        value, error = None, None
        if self.world.is_main:
            try:
                value = fn()
            except Exception as e:
                error = e
        return self.gather(value, error)[0]

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on every rank, then a last meeting, so that no rank leaves while
        another still needs it. A rank whose ``fn`` raises without having told the
        others at a meeting tells them at the next meeting they reach (every meeting
        is the same collective), so every rank stops with one error."""
        try:
            value = fn()
        except Exception as e:
            if not self._told and not isinstance(e, DistributedError):
                try:
                    self.check(e)  # raises e, once the others know
                except DistributedError:
                    # the others could not be told (they wait elsewhere, or are gone):
                    # this rank's own cause is the error to show, not the lost contact
                    raise e from None
            raise
        self.check(None)
        return value

    # ------------------------------------------------------------ shared work

    def share(self, n: int) -> tuple[int, int]:
        """This rank's items ``[lo, hi)`` of ``n``: contiguous blocks in rank order."""
        return share(n, self.world)

    def spread(
        self,
        n: int,
        item: Callable[[int], T],
        on_item: Callable[[], None] | None = None,
    ) -> list[T]:
        """``[item(0), ..., item(n - 1)]`` on every rank (a meeting).

        Rank ``r`` computes the items ``i`` with ``i % size == r``; one meeting
        gathers them in index order. An item must depend on its index alone (a seed
        derived from ``i``, never from the rank) and must not meet the other ranks,
        so the list equals the one a single process computes. ``on_item()`` is
        called after each item this rank computes (progress)."""
        mine: dict[int, T] = {}
        error = None
        try:
            for i in range(self.world.rank, n, self.world.size):
                mine[i] = item(i)
                if on_item is not None:
                    on_item()
        except Exception as e:
            error = e
        merged: dict[int, T] = {}
        for part in self.gather(mine, error):
            merged.update(part)
        return [merged[i] for i in range(n)]

    def sum_arrays(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each array summed elementwise over the ranks, in float64 (a meeting, then
        one all-reduce per array; every rank gets the same sums)."""
        if not self.distributed:
            return [np.asarray(a, dtype=np.float64) for a in arrays]
        self.check(None)
        out = []
        with self._collective():
            for a in arrays:
                t = torch.from_numpy(np.array(a, dtype=np.float64, order="C", copy=True))
                dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
                out.append(t.numpy())
        return out

    def concat(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each array concatenated over the ranks along its first axis, in rank order
        (a meeting that shares the lengths, then one all-gather per array)."""
        if not self.distributed:
            return list(arrays)
        lengths = self.gather([len(a) for a in arrays], None)
        out = []
        with self._collective():
            for i, a in enumerate(arrays):
                n = [per_rank[i] for per_rank in lengths]
                t = torch.from_numpy(np.ascontiguousarray(a))
                padded = t.new_zeros((max(n), *t.shape[1:]))
                padded[: len(a)] = t
                parts = [torch.empty_like(padded) for _ in n]
                dist.all_gather(parts, padded, group=self.group)
                out.append(np.concatenate([p[:k].numpy() for p, k in zip(parts, n)]))
        return out


def _describe(e: BaseException) -> str:
    return str(e).strip() or type(e).__name__


#: The coordinator of the job running in this process, so that a stage called
#: inside another (analysis inside ``saeatlas analyze``) meets on the same group.
_current: ContextVar[Coordinator | None] = ContextVar("saeatlas_coordinator", default=None)


def solo() -> Coordinator:
    """A world of one."""
    return Coordinator(World())


#: The longest --timeout: a week (a gloo group's timeout must fit its clock's range).
MAX_TIMEOUT_S = 7 * 24 * 3600.0


def coordinate(
    device: str | None, timeout_s: float, job: str = "capture", hint: str = ""
) -> Coordinator:
    """The ranks of this job: the initialised process group, or the one ``torchrun``
    describes in the environment (joined here), or a world of one."""
    # in one process too: a bad --timeout is said where it is given, not on the cluster
    # (True was a timeout of one second, and the text '5' was shown as the number 5)
    number = isinstance(timeout_s, (int, float)) and not isinstance(timeout_s, bool)
    if not number or not 0 < timeout_s <= MAX_TIMEOUT_S:
        raise ConfigError(
            f"`timeout_s` (--timeout) must be a number of seconds in (0, {MAX_TIMEOUT_S:g}], "
            f"got {shown(timeout_s)}."
        )
    joined_here = not (dist.is_available() and dist.is_initialized())
    world = join(device or "cpu")
    if world.size == 1:
        return Coordinator(world, job=job, hint=hint)
    # a meeting of every rank too: one that failed before it left the others with torch's
    # DistStoreError ("wait timeout after 1800000ms, keys: /default_pg/...") at the end
    why = (
        f"one of them stopped before it reached the {job}, or took more than `timeout_s` "
        f"({timeout_s:g} s, --timeout) to reach it. See the other ranks' output for the cause."
    )
    try:
        with collective(world, job, why):
            group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
    except DistributedError:
        if joined_here and dist.is_initialized():
            dist.destroy_process_group()
        raise
    return Coordinator(world, group, timeout_s, owns_default=joined_here, job=job, hint=hint)


def run_ranks(job: str, device: str | None, timeout_s: float, fn: Callable[[Coordinator], T]) -> T:
    """``fn(coordinator)`` on every rank of this job (:meth:`Coordinator.run`); inside
    another job's ``run_ranks`` (analysis inside the CLI's), on that job's meetings."""
    outer = _current.get()
    if outer is not None:
        return outer.run(lambda: fn(outer))
    coord = coordinate(device, timeout_s, job)
    token = _current.set(coord)
    try:
        return coord.run(lambda: fn(coord))
    finally:
        _current.reset(token)
        coord.close()
