"""The progress file of a capture (``progress.safetensors``): its commit point.

One file holds the running moments of the committed shards (as tensors) and, in
its header, the shard list, where to resume and the job the capture belongs to.
The writer replaces it by one atomic rename after each shard
(:mod:`.writer`); a resume reads it back here and checks that it continues
the same job.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save as _save_np

from ..errors import ConfigError, StoreError
from .manifest import LayerSpec, ShardInfo
from .stats import RunningMoments

#: The tensors of :attr:`Progress.value_range` in the progress file.
RANGE_KEYS = ("range_lo", "range_hi")
#: Job keys known only once the capture runs; the resume checks them then.
LATE_JOB_KEYS = ("first_batch",)


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed capture picks up."""

    batches_done: int
    """Input batches whose rows are all in committed shards: skip them."""
    rows_into_batch: int
    """Rows of the next batch already committed: drop them after its forward pass."""
    next_sample: int
    """Index of the first sample of the next batch."""

    def check_reached(self, n_batches: int, out: str | Path) -> None:
        """A resumed capture's inputs reach past what the interrupted one stored: inputs
        that end sooner are other inputs, and the store would end at the old rows."""
        stored = self.batches_done + (self.rows_into_batch > 0)
        if n_batches < stored:
            raise ConfigError(
                f"The inputs differ from the interrupted capture in '{out}': they end after "
                f"{n_batches} batches, but it had already stored rows of {stored}. Resume with "
                "the same inputs and `batch_size`, or start again with --overwrite."
            )


@dataclass(frozen=True)
class Progress:
    """What one rank has committed, as its progress file records it."""

    dtype: str
    shard_rows: int
    n_units: int
    layers: tuple[LayerSpec, ...]
    shards: tuple[ShardInfo, ...]
    n_skipped: int
    """Rows dropped for NaN/Inf in the batches the committed shards complete."""
    meta_columns: tuple[str, ...]
    resume_point: ResumePoint
    job: dict[str, Any]
    moments: RunningMoments
    """Running moments of the committed shards' rows."""
    parts: tuple[str, ...] | None = None
    """The sha256 of each committed shard's row metadata (``.parts/``); None in progress
    files of saeatlas before it was recorded, whose parts are known by their row count."""
    value_range: tuple[Any, Any] | None = None
    """Per-unit minimum and maximum of the rows added before a half-precision store
    rounded them (:attr:`.writer.StoreWriter.value_range`), or None."""

    def to_bytes(self) -> bytes:
        header = {
            "dtype": self.dtype,
            "shard_rows": self.shard_rows,
            "n_units": self.n_units,
            "layers": [l.to_json() for l in self.layers],
            "shards": [asdict(s) for s in self.shards],
            "n_nonfinite_rows_skipped": self.n_skipped,
            "meta_columns": list(self.meta_columns),
            "resume_point": asdict(self.resume_point),
            "job": self.job,
            **({} if self.parts is None else {"parts": list(self.parts)}),
        }
        tensors = {k: np.ascontiguousarray(v) for k, v in self.moments.state().items()}
        if self.value_range is not None:
            for key, v in zip(RANGE_KEYS, self.value_range):
                tensors[key] = np.ascontiguousarray(np.asarray(torch.as_tensor(v).cpu()))
        return _save_np(tensors, metadata={"progress": json.dumps(header)})


def read_progress(file: Path, store: Path) -> Progress:
    """The progress file ``file`` of the interrupted capture of ``store``."""
    try:
        with safe_open(str(file), framework="numpy") as f:
            prog = json.loads(f.metadata()["progress"])
            state = {k: f.get_tensor(k) for k in ("count", "mean", "m2")}
            kept = set(f.keys())
            value_range = (
                tuple(f.get_tensor(k) for k in RANGE_KEYS) if kept >= set(RANGE_KEYS) else None
            )
        return Progress(
            dtype=prog["dtype"],
            shard_rows=int(prog["shard_rows"]),
            n_units=int(prog["n_units"]),
            layers=tuple(LayerSpec.from_json(x) for x in prog["layers"]),
            shards=tuple(ShardInfo(**s) for s in prog["shards"]),
            n_skipped=int(prog["n_nonfinite_rows_skipped"]),
            meta_columns=tuple(prog["meta_columns"]),
            resume_point=ResumePoint(**prog["resume_point"]),
            job=dict(prog["job"]),
            moments=RunningMoments.from_state(state),
            parts=None if prog.get("parts") is None else tuple(str(x) for x in prog["parts"]),
            value_range=value_range,
        )
    except Exception as e:  # safetensors raises its own error types for bad files
        raise StoreError(
            f"Cannot resume the capture of '{store}': its progress file "
            f"'{file}' is unreadable ({e!r}). Start again with --overwrite."
        ) from e


def check_same_job(
    saved: Progress, store: Path, job: dict[str, Any], dtype: str, shard_rows: int | None
) -> None:
    """A resume continues the capture ``saved`` records: the same job (but for the
    :data:`LATE_JOB_KEYS`, which the caller compares later), dtype and, when given,
    rows per shard."""
    check_job(saved.job, job, f"the interrupted capture of '{store}'")
    if saved.dtype != dtype:
        raise ConfigError(
            f"The interrupted capture in '{store}' uses dtype {saved.dtype!r}, this run "
            f"asks for {dtype!r}. Resume with the same `dtype` (--store-dtype)."
        )
    check_shard_rows(saved.shard_rows, shard_rows, f"The interrupted capture in '{store}'")


def check_shard_rows(saved: Any, given: int | None, whose: str) -> None:
    """Refuse rows per shard ``given`` to a resume other than the ``saved`` ones a capture
    chose; none given (the default) continues with those."""
    if given is not None and isinstance(saved, int) and given != saved:
        raise ConfigError(
            f"{whose} uses {saved} rows per shard, this run asks for {given}. Resume with the "
            "same `shard_rows` (--shard-rows), or leave it out."
        )


def check_job(saved: dict[str, Any], job: dict[str, Any], whose: str) -> None:
    """Raise :class:`ConfigError` naming what differs between the ``job`` of a resume
    and the one ``whose`` capture recorded (but for the :data:`LATE_JOB_KEYS`). A key
    the capture did not record (one added to the job since, such as ``model_details``
    or ``tokenizer``) is not compared: a capture interrupted before it was added still
    resumes."""
    by_value = "label_values" in saved
    saved, job = _as_compared(saved, by_value), _as_compared(job, by_value)
    changed = sorted(k for k in saved if k not in LATE_JOB_KEYS and saved.get(k) != job.get(k))
    if changed:
        details = [d for k in changed for d in _changes(k, saved.get(k), job.get(k))]
        raise ConfigError(
            f"--resume continues the same capture, but this run's {', '.join(changed)} "
            f"differ from those of {whose} ({'; '.join(details)}). Resume with the same "
            "model, inputs, --layers and settings, or start again with --overwrite."
        )


def _as_compared(job: dict[str, Any], by_value: bool) -> dict[str, Any]:
    """``job`` as a resume compares it: less its `settings.shard_rows` as given (None: the
    default), which is compared as the rows per shard the capture chose
    (:func:`check_shard_rows`; the default beside the same number given was refused as
    another job), and with ``by_value`` (a job that records them) its labels by their
    values (int32 and int64 alike were refused as other labels)."""
    job = dict(job)
    values = job.pop("label_values", None)
    if by_value:
        job["labels"] = values
    settings = job.get("settings")
    if isinstance(settings, dict):
        job["settings"] = {k: v for k, v in settings.items() if k != "shard_rows"}
    return job


def _changes(name: str, old: Any, new: Any) -> list[str]:
    """What differs between two values of job key ``name``: the fields of a dict (the
    settings) one by one, so that the message names the setting that changed."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [
            f"`{k}` was {old.get(k)!r}, now {new.get(k)!r}"
            for k in keys
            if old.get(k) != new.get(k)
        ]
    return [f"{name} was {old!r}, now {new!r}"]
