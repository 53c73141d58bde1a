"""Training checkpoints: everything needed to continue a run exactly.

One file, ``checkpoint.pt`` in the SAE directory, written atomically with
``torch.save`` and read with ``torch.load(weights_only=True)`` (tensors and
plain containers only; nothing is unpickled). It holds the SAE and optimiser
state, the schedules, the dead-latent counters, the data position (epoch and
batch within it), the torch RNG state, the metrics so far and the settings,
which must match on resume.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..store.atomic import atomic_write

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            sink = _Sink(f)
            try:
                torch.save(state, sink)
            except RuntimeError:
                if sink.error is not None:  # torch's writer says only "unexpected pos"
                    raise sink.error from None
                raise

    atomic_write(path / CHECKPOINT, write)


class _Sink:
    """The file ``torch.save`` writes to, keeping the OSError of a failed write (a
    full disk), which torch's zip writer turns into a RuntimeError that does not say."""

    def __init__(self, f: Any) -> None:
        self._f, self.error = f, None

    def write(self, data: bytes) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self._f.flush()


def load_checkpoint(
    path: Path, settings: dict[str, Any], *, partial: bool = False
) -> dict[str, Any]:
    """The checkpoint in ``path``; its settings must equal ``settings`` (with ``partial``,
    only the keys ``settings`` has: a check before the run starts, which maps the file
    rather than reading its tensors)."""
    file = Path(path) / CHECKPOINT
    if not file.exists():
        raise ConfigError(f"Nothing to resume: '{file}' does not exist. Start without --resume.")
    try:
        # torch's own words for a file it did not write advised `torch.save(...)` options
        if file.is_file() and not zipfile.is_zipfile(file):
            raise ValueError(
                "it is empty" if file.stat().st_size == 0 else "it is not a file torch.save wrote"
            )
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=partial)
    except Exception as e:  # torch raises several error types for bad files
        raise ConfigError(
            f"'{file}' is not a readable checkpoint ({e}). Start again with --overwrite "
            "(without --resume)."
        ) from e
    if not isinstance(state, dict):
        raise ConfigError(
            f"'{file}' holds a {type(state).__name__}, not a training checkpoint. Start again "
            "with --overwrite."
        )
    saved = state.get("settings")
    if partial and isinstance(saved, dict):
        saved = {k: saved.get(k) for k in settings}
    if isinstance(saved, dict) and None not in (
        saved.get("rows_digest"),
        settings.get("rows_digest"),
    ):
        # the rows are known by their digest: a store moved, or named through a link, is
        # the same store (its path tells the rows apart only in older checkpoints)
        saved = {k: v for k, v in saved.items() if k != "store"}
        settings = {k: v for k, v in settings.items() if k != "store"}
    if isinstance(saved, dict) and saved.get("store_layers") is None:
        # a checkpoint from before the layers' columns were recorded: unknown
        settings = {k: v for k, v in settings.items() if k != "store_layers"}
        saved = {k: v for k, v in saved.items() if k != "store_layers"}
    if isinstance(saved, dict) and "world_size" in settings:
        ranks = saved.get("world_size")
        if ranks is None:  # a checkpoint from before it was recorded: unknown
            settings = {k: v for k, v in settings.items() if k != "world_size"}
            saved = {k: v for k, v in saved.items() if k != "world_size"}
        elif isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
            # '1' (text) was refused as "written by a training on 1 processes; this one
            # runs on 1 process"
            raise ConfigError(
                f"'{file}' records `world_size` {str(ranks)[:40]!r}, not a number of processes: "
                "it is damaged. Start again with --overwrite (without --resume)."
            )
        elif ranks != settings["world_size"]:
            raise ConfigError(
                f"The checkpoint in '{path}' was written by a training on {_procs(ranks)}; "
                f"this one runs on {_procs(settings['world_size'])}. Resume on as many "
                f"(torchrun --nproc_per_node {ranks}, or one process without torchrun for 1), "
                "or pass --overwrite to start again."
            )
    if saved != settings:
        changed = sorted(
            k for k in set(saved or {}) | set(settings) if (saved or {}).get(k) != settings.get(k)
        )
        rows = " (`rows_digest`: the store's rows differ)" if "rows_digest" in changed else ""
        if "n_rows" in changed:  # a store captured again (--overwrite, --resume) since
            rows = (
                f" (`n_rows`: the store had {(saved or {}).get('n_rows')} rows when the "
                f"checkpoint was written, it has {settings.get('n_rows')} now)"
            )
        elif "store_layers" in changed:  # a layers.json or manifest edited since
            rows = (
                f" (`store_layers`: the layers' columns were {(saved or {}).get('store_layers')} "
                f"when the checkpoint was written, they are {settings.get('store_layers')} now)"
            )
        raise ConfigError(
            f"The checkpoint in '{path}' was made with other settings ({changed}){rows}"
            f"{_fields(saved, settings)}; resume with the same settings, or pass --overwrite "
            "to start again."
        )
    return state


def check_counters(state: dict[str, Any], batch_size: int, d_sae: int, log_every: int) -> None:
    """Raise ValueError where ``state`` (a checkpoint read back) cannot be a point of the
    run it claims: every float it holds finite (a NaN weight trained on without a word,
    and one in the optimiser's moments stopped every resume at the first step, advising
    the same checkpoint again), ``batch_size`` rows a step (the count the SAE reports
    and the dead-latent window read), one counter per latent (of ``d_sae``) of no more
    rows than that, and metrics that are records of numbers, one per ``log_every`` steps
    (``metrics.jsonl`` is written from them)."""
    for part in ("sae", "opt"):
        for name, value in _tensors(state.get(part), part):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise ValueError(f"`{name}` holds NaN or Inf")
    step, done = state.get("step"), state.get("rows_done")
    if isinstance(done, bool) or not isinstance(done, int) or done != step * batch_size:
        raise ValueError(f"`rows_done` is {done!r}, not {step} steps of {batch_size} rows")
    fired = state.get("rows_since_fired")
    if not torch.is_tensor(fired) or fired.is_floating_point() or fired.is_complex():
        raise ValueError("`rows_since_fired` is not a tensor of whole numbers")
    if tuple(fired.shape) != (d_sae,):  # [1] was copied into every latent's counter
        raise ValueError(f"`rows_since_fired` is {tuple(fired.shape)}, not one count per latent")
    if fired.numel() and not (0 <= int(fired.min()) and int(fired.max()) <= done):
        raise ValueError(f"`rows_since_fired` counts fall outside 0..{done} rows")
    metrics = state.get("metrics")
    if not isinstance(metrics, list) or not all(
        isinstance(m, dict)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in m.values())
        for m in metrics
    ):
        raise ValueError("`metrics` is not a list of records of numbers")
    # one record of each logged step before this one, in order, of the rows done by then:
    # a record of step 999 was written into metrics.jsonl (and drawn as the training
    # curve's end), and records dropped from the list were missing from it
    logged = range(0, step, log_every)
    for i, m in enumerate(metrics):
        at = logged[i] if i < len(logged) else None
        if at is None or m.get("step") != at or m.get("tokens") != (at + 1) * batch_size:
            raise ValueError(
                f"`metrics` holds a record of step {m.get('step')!r} and {m.get('tokens')!r} "
                f"rows, not one of the steps logged before {step} (every {log_every}) in order"
            )
    if len(metrics) < len(logged):
        raise ValueError(
            f"`metrics` holds {len(metrics)} records; the run logged {len(logged)} in "
            f"{step} steps (one every {log_every})"
        )


#: What each optimiser keeps per parameter once it has stepped (``--optimizer``).
OPTIMIZER_STATE = {"adam": ("step", "exp_avg", "exp_avg_sq"), "signum": ("z", "x")}


def check_state(
    state: dict[str, Any],
    own: dict[str, torch.Tensor],
    params: list[torch.Tensor],
    optimizer: str,
    step: int,
    scaler: dict[str, Any],
) -> None:
    """Raise ValueError unless the SAE, optimiser and loss-scaler state of ``state`` (a
    checkpoint read back) are of the kinds this run keeps at ``step``: the SAE's tensors
    of ``own``'s dtypes (an integer weight was cast to whole numbers; a BatchTopK
    threshold not below 0), the optimiser's state of each of ``params`` once it has
    stepped, of its shape and dtype (a state emptied, or an Adam `step` edited, resumed as
    another run; a negative one ended in a traceback), Adam's second moments not below 0
    (they stopped every resume as "diverged", advising the same checkpoint), and
    ``scaler`` (this run's fp16 loss scaler, empty without fp16) with a finite scale above
    0 (0 skipped every later step) and its own factors. fp16's scaler skips a step that
    overflowed, so Adam's count and state may then be behind the run's."""
    skips = bool(scaler)
    saved = state.get("sae")
    if not isinstance(saved, dict):
        raise ValueError("`sae` is not a state of named tensors")
    for name, mine in own.items():
        theirs = saved.get(name)
        if torch.is_tensor(theirs) and theirs.dtype != mine.dtype:
            raise ValueError(f"`sae.{name}` is {theirs.dtype}, not {mine.dtype}")
        if name == "threshold" and torch.is_tensor(theirs) and bool((theirs < 0).any()):
            raise ValueError("`sae.threshold` is below 0")
    opt = state.get("opt")
    kept = opt.get("state") if isinstance(opt, dict) else None
    if not isinstance(kept, dict):
        raise ValueError("`opt` holds no state of its parameters")
    for i, p in enumerate(params):
        s = kept.get(i) or {}
        if not isinstance(s, dict) or (not s and step and not skips):
            raise ValueError(f"`opt` holds no state of parameter {i} after {step} steps")
        for key in OPTIMIZER_STATE[optimizer] if s else ():
            t = s.get(key)
            if key == "step":
                n = float(t) if torch.is_tensor(t) and t.numel() == 1 else math.nan
                if not (n == step or (skips and n == int(n) and 0 < n < step)):
                    raise ValueError(f"`opt` step of parameter {i} is {n:g}, not {step}")
            elif not torch.is_tensor(t) or t.shape != p.shape or t.dtype != p.dtype:
                raise ValueError(f"`opt` {key} of parameter {i} is not a tensor like it")
            elif key == "exp_avg_sq" and bool((t < 0).any()):
                raise ValueError(f"`opt` exp_avg_sq of parameter {i} is below 0")
    theirs = state.get("scaler")
    if skips and isinstance(theirs, dict):
        scale = theirs.get("scale")
        if not (isinstance(scale, float) and 0 < scale < math.inf):
            raise ValueError(f"`scaler` scale is {scale!r}, not a number above 0")
        for key in ("growth_factor", "backoff_factor", "growth_interval"):
            if theirs.get(key) != scaler[key]:
                raise ValueError(f"`scaler` {key} is {theirs.get(key)!r}, not {scaler[key]!r}")


def check_schedule(
    state: dict[str, Any],
    groups: list[dict[str, Any]],
    base_lrs: list[float],
    lr_at: Callable[[int], float],
    step: int,
    skips: bool,
) -> None:
    """Raise ValueError unless the optimiser and schedule of ``state`` are this run's at
    ``step``: the settings of its parameter groups (``groups``, as this run makes them),
    the schedule's base learning rates and position, the learning rate it is at
    (``lr_at(step)``: the rate of each step) and the schedule-free average's sum of the
    squared rates of the steps taken (fewer of them where ``skips``: fp16's scaler skips
    a step that overflowed). A `base_lrs` of 1.0 edited in trained on at that rate, and a
    `weight_sum` of 0 put the average at the last iterate, without a word."""
    taken = 0.0  # as the optimiser adds them up, step by step
    for s in range(step):
        taken += lr_at(s) * lr_at(s)
    lr = lr_at(step)
    saved = state["opt"]["param_groups"]
    if len(saved) != len(groups):
        raise ValueError(f"`opt` has {len(saved)} parameter groups, not {len(groups)}")
    for mine, theirs in zip(groups, saved):
        for key, value in mine.items():
            if key not in ("params", "lr", "weight_sum") and theirs.get(key) != value:
                raise ValueError(f"`opt` {key} is {theirs.get(key)!r}, not {value!r}")
        total = theirs.get("weight_sum", 0.0)  # the schedule-free average's running sum
        if not isinstance(total, (int, float)) or not 0 <= total < math.inf:
            raise ValueError(f"`opt` weight_sum is {total!r}, not a finite sum of squares")
        if "weight_sum" in mine and not (
            math.isclose(total, taken, rel_tol=1e-9) or (skips and total < taken)
        ):
            raise ValueError(
                f"`opt` weight_sum is {total!r}, not {taken!r}, the squared learning rates "
                f"of {step} steps"
            )
        if not math.isclose(theirs.get("lr", math.nan), lr, rel_tol=1e-9):
            raise ValueError(f"`opt` lr is {theirs.get('lr')!r}, not {lr!r} at step {step}")
    sched = state["sched"]
    if sched.get("base_lrs") != base_lrs or sched.get("last_epoch") != step:
        raise ValueError(
            f"`sched` is at {sched.get('last_epoch')!r} from {sched.get('base_lrs')!r}, not at "
            f"step {step} from {base_lrs!r}"
        )


def _tensors(value: Any, name: str) -> Any:
    """(name, tensor) of every tensor in nested dicts and lists."""
    if torch.is_tensor(value):
        yield name, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _tensors(v, f"{name}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _tensors(v, f"{name}[{i}]")


def _procs(n: object) -> str:
    return "1 process" if n == 1 else f"{n} processes"


def _fields(saved: Any, settings: dict[str, Any]) -> str:
    """Which training settings differ, each with the checkpoint's value and this run's."""
    old = (saved or {}).get("train_config")
    new = settings.get("train_config")
    if not isinstance(old, dict) or not isinstance(new, dict):
        return ""
    diff = [
        f"`{k}` {old.get(k)!r} in the checkpoint, {new.get(k)!r} now"
        for k in sorted(set(old) | set(new), key=str)
        if old.get(k) != new.get(k)
    ]
    return f": {'; '.join(diff[:5])}" if diff else ""
