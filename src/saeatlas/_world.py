"""The process group ``torchrun`` describes, shared by every stage that runs on
several processes (capture, training, analysis): which rank this is, how many
there are, which device and which share of the work is its own.

The meetings of capture and analysis are :mod:`saeatlas._coordinator`'s; the
stages' own collective steps live with them (``capture/distributed.py``,
``train/distributed.py``, ``structure/graph/codes.py``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ._launcher import stop_with_launcher
from .errors import ConfigError, DistributedError

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@contextmanager
def collective(world: World, job: str, why: str) -> Iterator[None]:
    """Turn a collective that fails (gloo: a peer closed its connection, or the timeout
    ran out) into one :class:`DistributedError` that says so, ``why`` (what may have
    happened and what to do) after it."""
    try:
        yield
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistributedError(
            f"Rank {world.rank} of {world.size} lost contact with the other ranks of the "
            f"{job} ({first}): {why}"
        ) from e


def _env_number(name: str) -> int | None:
    """The whole number in the environment variable ``name`` (None when unset)."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"The environment variable {name} is {raw[:40]!r}, not a whole number. torchrun "
            f"sets it (`torchrun --nproc_per_node N -m saeatlas ...`); unset {name} to run "
            "as one process."
        ) from None


def env_world() -> World:
    """The rank and size the environment gives (``torchrun``'s ``RANK`` and
    ``WORLD_SIZE``), a world of one without ``WORLD_SIZE`` above 1. An environment set
    by hand and half-way (``WORLD_SIZE`` without ``RANK`` or ``MASTER_ADDR``, a rank past
    the world) is one :class:`ConfigError` naming what is missing, not torch's
    traceback or a wait for ranks that never come."""
    size = _env_number("WORLD_SIZE")
    if size is None or size <= 1:
        return World()
    missing = [
        v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v, "").strip()
    ]
    if missing:
        raise ConfigError(
            f"The environment sets WORLD_SIZE={size} but not {', '.join(missing)}: several "
            f"processes need every one of them. Launch with `torchrun --nproc_per_node {size} "
            "-m saeatlas ...`, which sets them all, or unset WORLD_SIZE to run as one process."
        )
    rank = _env_number("RANK")
    assert rank is not None  # checked as missing above
    if not 0 <= rank < size:
        raise ConfigError(
            f"The environment sets RANK={rank} with WORLD_SIZE={size}: ranks are 0 to "
            f"{size - 1}, so this one would wait for ranks that never come. Launch with "
            "`torchrun`, which numbers them, or unset WORLD_SIZE to run as one process."
        )
    return World(rank, size)


def join(device: str) -> World:
    """The process group ``torchrun`` describes in the environment (joined on first
    use: NCCL on CUDA, gloo on the CPU), or a world of one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    stop_with_launcher()  # torchrun --nproc_per_node 1 too
    world = env_world()
    if world.size == 1:
        return World()
    backend = "nccl" if device.startswith("cuda") else "gloo"
    # a join timeout shorter than torch's needs a way to give the group torch's timeout
    # back after the join (private in torch; without it, the join waits torch's own)
    set_timeout = getattr(dist.distributed_c10d, "_set_pg_timeout", None)
    wait_s = (
        join_timeout() if set_timeout is not None else _default_timeout(backend).total_seconds()
    )
    where = f"{os.environ['MASTER_ADDR'].strip()}:{os.environ['MASTER_PORT'].strip()}"
    # a rank whose peers were never started (an environment set by hand, one process)
    # waited torch's 30 minutes without a word: say what it waits for, and for how long
    waiting = threading.Timer(
        JOIN_NOTICE_S,
        log.warning,
        (
            "Rank %d of %d is waiting for the other ranks at %s (at most %g s, "
            "SAEATLAS_JOIN_TIMEOUT)...",
            world.rank,
            world.size,
            where,
            wait_s,
        ),
    )
    waiting.daemon = True
    waiting.start()
    try:
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=wait_s))
    except (RuntimeError, ValueError) as e:  # torch's DistStoreError, DistNetworkError
        raise DistributedError(
            f"Rank {world.rank} of {world.size} could not join the other ranks at {where} "
            f"within {wait_s:g} s ({_first_line(e)}). Start every rank (`torchrun "
            f"--nproc_per_node {world.size} -m saeatlas ...` sets WORLD_SIZE, RANK, "
            "MASTER_ADDR and MASTER_PORT for each), or unset WORLD_SIZE to run as one "
            "process; SAEATLAS_JOIN_TIMEOUT sets the wait in seconds."
        ) from None
    finally:
        waiting.cancel()
    # the wait was for the join only: the group's collectives keep torch's own timeout
    if set_timeout is not None:
        set_timeout(_default_timeout(backend), None)
    return World(dist.get_rank(), dist.get_world_size())


#: Seconds a rank waits for the others before it says that it waits.
JOIN_NOTICE_S = 10.0
#: Seconds a rank waits for the others to join, unless SAEATLAS_JOIN_TIMEOUT says.
JOIN_TIMEOUT_S = 600.0


def join_timeout() -> float:
    """Seconds a rank waits for the other ranks to join: ``SAEATLAS_JOIN_TIMEOUT``, or
    :data:`JOIN_TIMEOUT_S`."""
    raw = os.environ.get("SAEATLAS_JOIN_TIMEOUT", "").strip()
    if not raw:
        return JOIN_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 7 * 24 * 3600:  # NaN too; a week fits a group's clock
        raise ConfigError(
            f"The environment variable SAEATLAS_JOIN_TIMEOUT is {raw[:40]!r}; give the "
            "seconds a rank waits for the others to join, above 0 and at most 604800 "
            f"(a week), or unset it for {JOIN_TIMEOUT_S:g}."
        )
    return value


def _default_timeout(backend: str) -> timedelta:
    if backend == "nccl":
        return getattr(dist.constants, "default_pg_nccl_timeout", None) or dist.default_pg_timeout
    return dist.default_pg_timeout


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def is_main_process() -> bool:
    """Rank 0 of a ``torchrun`` world, or a process on its own: the one that writes."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return env_world().is_main  # a RANK left set without WORLD_SIZE is one process


def in_one_process() -> bool:
    """No ``torchrun`` world (or a world of one)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() == 1
    return env_world().size == 1


def from_main(fn: Callable[[], T], world: World) -> T:
    """``fn()`` on rank 0, its value sent to every rank (one broadcast on the default
    group; ``fn()`` itself in a world of one).

    What only rank 0 decides (whether an output may be written, what a sweep
    measured) reaches every rank, and so does its failure: the other ranks raise a
    :class:`DistributedError` naming it instead of going on to a collective that
    rank 0 never reaches."""
    if world.size == 1:
        return fn()
    sent: list[Any] = [None]
    error = None
    if world.is_main:
        try:
            sent[0] = ("ok", fn())
        except Exception as e:
            error, sent[0] = e, ("error", str(e).strip() or type(e).__name__)
    # NCCL moves the pickled object through this rank's own GPU
    device = rank_device("cuda", world) if dist.get_backend() == "nccl" else None
    with collective(world, "job", "rank 0 died or was killed; see its output for the cause."):
        dist.broadcast_object_list(sent, src=0, device=device)
    if error is not None:
        raise error
    status, value = sent[0]
    if status == "error":
        raise DistributedError(
            f"Rank 0 of {world.size} failed, so rank {world.rank} stopped too: {value}"
        )
    return value


def differing(jobs: list[dict[str, Any]], what: str, fix: str) -> None:
    """Raise :class:`ConfigError` when a rank's ``jobs`` entry (its facts: settings,
    inputs, outputs) differs from rank 0's, naming the facts and the ranks (``what``: the
    job, as in "this capture"; ``fix``: what to do). Every rank, given every rank's job,
    raises the same error."""
    elsewhere = [r for r, job in enumerate(jobs) if not isinstance(job, dict)]
    if elsewhere:  # a rank given other flags met the others at another step of its command
        raise ConfigError(
            f"The ranks of {what} did not reach it together: ranks {elsewhere} were at "
            f"another step (given another command or other flags, such as --check). {fix}"
        )
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
            f"The ranks of {what} were given different {', '.join(differ)} (ranks "
            f"{ranks} differ from rank 0). {fix}"
        )


def agree(world: World, job: dict[str, Any], what: str, fix: str) -> None:
    """Every rank's ``job`` must be rank 0's (:func:`differing`): one gather on the
    default group, so that ranks given other settings stop together before working
    together (rank 0 alone writes, so a rank that trained otherwise would be averaged
    in without a word). Nothing to do in a world of one."""
    if world.size == 1:
        return
    if dist.get_backend() == "nccl":  # objects move through this rank's own GPU
        torch.cuda.set_device(rank_device("cuda", world))
    jobs: list[Any] = [None] * world.size
    with collective(world, what, "one of them died or was killed; see its output for the cause."):
        dist.all_gather_object(jobs, job)
    differing(jobs, what, fix)


def share(n: int, world: World) -> tuple[int, int]:
    """The items ``[lo, hi)`` of ``n`` that are rank ``world.rank``'s: contiguous
    blocks in rank order, the first ``n % size`` ranks one more."""
    per, extra = divmod(n, world.size)
    lo = world.rank * per + min(world.rank, extra)
    return lo, lo + per + (1 if world.rank < extra else 0)


def rank_device(device: str | None, world: World) -> str | None:
    """``cuda`` under ``torchrun`` means this rank's own GPU (``LOCAL_RANK``)."""
    if device == "cuda" and world.size > 1:
        n_gpus = torch.cuda.device_count()
        # torchrun's LOCAL_RANK, checked as RANK is ('abc' ended in int()'s ValueError)
        local = _env_number("LOCAL_RANK")
        local = world.rank % max(n_gpus, 1) if local is None else local
        if not 0 <= local < n_gpus:
            raise ConfigError(
                f"Rank {world.rank} (local rank {local}) would run on cuda:{local}, but this "
                f"machine has {n_gpus} GPU(s). Start at most {n_gpus} processes per machine "
                "(torchrun --nproc_per_node), or name one device for all (--device cuda:0)."
            )
        return f"cuda:{local}"
    return device


def local_copies(device: str) -> int:
    """Processes that each hold their own copy of a model in ``device``'s memory: the
    ranks ``torchrun`` starts on this machine (``LOCAL_WORLD_SIZE``) share its memory on
    the CPU; a GPU is one rank's own."""
    if device.startswith("cuda") or (_env_number("WORLD_SIZE") or 1) <= 1:
        return 1
    return max(1, _env_number("LOCAL_WORLD_SIZE") or 1)


def memory_bytes(device: str) -> int | None:
    """Memory of ``device``: the GPU's total, or the machine's physical memory."""
    try:
        if device.startswith("cuda"):
            return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError, RuntimeError):
        return None
