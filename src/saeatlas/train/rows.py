"""What a training reads of its store: the rows it trains on and their batch size
(:func:`training_rows`), and what identifies them (:func:`rows_digest`, the columns of
its layers :func:`store_layers`), recorded in checkpoints and SAEs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from ..store import ActivationStore
from .config import READ_BY, TrainConfig

#: Default batch size; a smaller store gets a quarter of its rows per batch.
DEFAULT_BATCH_SIZE = 4096
#: Fewer rows than this cannot train an SAE worth evaluating (FVU of 0 or inf).
MIN_TRAIN_ROWS = 16
#: Default budget: at least this many passes, and at least this many rows or steps
#: (whichever is fewer: small batches of a small store need not see 2M rows).
MIN_DEFAULT_PASSES, MIN_DEFAULT_TOKENS, MIN_DEFAULT_STEPS = 50, 2_000_000, 500


def rows_digest(store: ActivationStore) -> str:
    """A digest of the store's rows (:meth:`ActivationStore.digest`)."""
    return store.digest()[:16]


def store_layers(store: ActivationStore, names: list[str]) -> list[list[Any]]:
    """``[name, start, stop]`` of the store's layers ``names``: the columns trained on. A
    layers.json (or manifest) edited since keeps the rows' digest but not these."""
    return [[l.name, l.start, l.stop] for l in (store.layer(n) for n in names)]


def _flag(name: str) -> str:
    return f"`{name}` (--{name.replace('_', '-')})"


def _rows_flag(name: str) -> str:
    return "--tokens" if name == "tokens" else _flag(name)


def training_steps(
    cfg: TrainConfig, train_rows: int, batch_size: int, name: Callable[[str], str] = _rows_flag
) -> int:
    """The steps of a training of ``cfg`` on ``train_rows`` rows in batches of
    ``batch_size`` (:func:`training_rows`); refuse warm-ups longer than the run and a
    `checkpoint_every` that writes no checkpoint. ``name(field)``: as in
    :func:`training_rows` (`run --check` called such a run config valid, and the run
    refused it after the capture, naming flags `run` has not)."""
    tokens = cfg.tokens or max(
        MIN_DEFAULT_PASSES * train_rows, min(MIN_DEFAULT_TOKENS, MIN_DEFAULT_STEPS * batch_size)
    )
    n_steps = max(1, tokens // batch_size)
    penalised = cfg.architecture in READ_BY["sparsity_warmup_steps"][1]
    for field, value, what in (
        ("lr_warmup_steps", cfg.lr_warmup_steps, "learning rate"),
        # read by relu and jumprelu only (a warning says so of the others)
        ("sparsity_warmup_steps", cfg.sparsity_warmup_steps if penalised else None, "penalty"),
    ):
        if value is not None and value > n_steps:  # 10**18 trained without a word
            raise ConfigError(
                f"{name(field)} {value:,} is more than the run's {n_steps:,} steps: the {what} "
                f"would never reach its value. Give at most as many, or raise {name('tokens')}."
            )
    if cfg.checkpoint_every >= n_steps:  # none was written: a kill lost the run
        raise ConfigError(
            f"{name('checkpoint_every')} {cfg.checkpoint_every:,} is not fewer than the run's "
            f"{n_steps:,} steps: no checkpoint would be written. Give fewer, or 0 for none."
        )
    return n_steps


def training_rows(
    cfg: TrainConfig, n_rows: int, store: str, world: int = 1, name: Callable[[str], str] = _flag
) -> tuple[int, int]:
    """The rows a training of ``cfg`` trains on and its batch size, on a store of ``n_rows``
    rows (``store`` names it) over ``world`` ranks; refuse held-out rows or a batch size
    that leave too few. ``name(field)``: how the messages name a setting (a run config's
    `train.heldout_rows`, not the flag of `saeatlas train`)."""
    train_rows = n_rows - cfg.heldout_rows
    if train_rows < 0:  # the message below showed a negative count of rows
        raise ConfigError(
            f"{name('heldout_rows')} is {cfg.heldout_rows}, more than the {n_rows} rows of "
            f"{store}. Hold out at most {max(0, n_rows - MIN_TRAIN_ROWS)} rows (at least "
            f"{MIN_TRAIN_ROWS} are needed to train on)."
        )
    held = f"Of the {n_rows} rows of {store}, {cfg.heldout_rows} are held out:"
    if train_rows < MIN_TRAIN_ROWS:
        raise ConfigError(
            f"{held} {train_rows} to train on, fewer than the minimum {MIN_TRAIN_ROWS}. Capture "
            f"more rows (or hold out fewer with {name('heldout_rows')})."
        )
    batch_size = cfg.batch_size or min(
        DEFAULT_BATCH_SIZE, max(world, train_rows // 4 // world * world)
    )
    if batch_size % world:
        raise ConfigError(f"`batch_size` {batch_size} must divide evenly over {world} ranks.")
    if train_rows < batch_size:
        raise ConfigError(
            f"{held} {train_rows} to train on, fewer than {name('batch_size')} {batch_size}. "
            f"Give a {name('batch_size')} of at most {max(1, train_rows // 4)}, hold out fewer "
            "rows, or capture more."
        )
    return train_rows, batch_size
