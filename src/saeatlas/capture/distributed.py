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
:func:`complete_capture`) in a world of one, which never waits. The meetings
themselves are :class:`saeatlas._coordinator.Coordinator`'s, shared with the
analysis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._coordinator import Coordinator
from ..errors import ConfigError
from ..store import StoreWriter
from ..store.merge import RankPart
from .inputs import InputBatch
from .job import batch_fingerprint


def agree(coord: Coordinator, job: dict[str, Any]) -> None:
    """Every rank must capture the same job (model, inputs, layers, settings)."""
    coord.agree(
        job,
        "this capture",
        "Every rank must run the same model (same weights: load them, or seed their "
        "initialisation) on the same inputs in the same order, with the same layers and "
        "settings.",
    )


def check_first_batch(writer: StoreWriter, batch: InputBatch, out: str | Path) -> None:
    """Record the first batch's fingerprint with the job; on resume it must match (for
    an iterable of batches, the inputs' fingerprint alone cannot tell two apart)."""
    fp = batch_fingerprint(batch.args, batch.kwargs)
    saved = writer.saved_job.get("first_batch")
    if saved is not None and saved != fp:
        raise ConfigError(
            f"--resume continues the same capture, but this run's inputs differ from those of "
            f"the interrupted capture of '{out}' (its first batch is another). Resume with the "
            "same inputs, or start again with --overwrite."
        )
    writer.job["first_batch"] = fp


def first_checked(
    coord: Coordinator, writer: StoreWriter, batches: Iterable[InputBatch], out: str | Path
) -> Iterator[InputBatch]:
    """``batches``, the first one checked (:func:`check_first_batch`) and, under
    torchrun, the same on every rank: each rank iterates every batch and takes its own
    share of them, so inputs that differ from rank to rank (a DataLoader with a
    ``DistributedSampler``, which deals each rank other samples) left half the samples
    out of the store, and numbered the others wrongly, without a word. A rank whose
    inputs give no batch meets the others too, with none."""
    first = True
    for batch in batches:
        if first:
            check_first_batch(writer, batch, out)
            _agree_first(coord, writer.job["first_batch"])
            first = False
        yield batch
    if first:
        _agree_first(coord, None)


def _agree_first(coord: Coordinator, fingerprint: str | None) -> None:
    if coord.distributed:
        coord.agree(
            {"first input batch": fingerprint},
            "this capture",
            "Give every rank all the inputs, in the same order (a DataLoader without a "
            "DistributedSampler, its shuffle seeded alike): saeatlas shares the batches "
            "among the ranks itself.",
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
