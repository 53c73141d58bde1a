"""``train_family``: several SAEs trained from the same batches in one pass.

A sparsity sweep trains SAEs that differ only in their sparsity (k, or the
L1/L0 coefficient) or in their initialisation seed. Reading, shuffling and
moving each batch once for all of them saves the data pipeline's cost for
every member after the first. Under ``torchrun`` the members train data-parallel
as :func:`~saeatlas.train.train_sae` does: each rank gathers its own share of every
batch, and each member's gradients are averaged over the ranks.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from .._progress import progress_bar
from .._validation import (
    check_config_argument,
    check_flag_argument,
    check_path_argument,
    shown,
)
from .._world import from_main, join
from ..errors import ConfigError
from ..sae.io import check_sae_out
from ..store import ActivationStore
from ..store.lock import output_lock
from .config import TrainConfig
from .run import TRAIN_SIZES, check_fits
from .trainer import (
    TrainResult,
    _finish,
    _Run,
    _tensorboard,
    add_scalars,
    check_finite_training,
)

#: What to lower when a family's SAEs cannot fit together.
FAMILY_SIZES = f"the number of SAEs trained at once (--seeds, or a sweep's --values), {TRAIN_SIZES}"

#: Settings that must agree for the family to share batches.
SHARED = ("layers", "batch_size", "tokens", "heldout_rows", "device")


def train_family(
    store: ActivationStore | str | Path,
    configs: list[TrainConfig],
    outs: list[str | Path] | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> list[TrainResult]:
    """Train one SAE per config on the same stream of batches (the first config's
    `data_seed` sets the data order, and every member records it; each config's seed
    sets its initialisation).

    Args:
        store: the activations.
        configs: settings that agree on ``layers``, ``batch_size``, ``tokens``,
            ``heldout_rows`` and ``device``.
        outs: one SAE directory per config, or ``None`` to write nothing.
        overwrite: replace SAEs (or interrupted trainings) already in ``outs``; without
            it they are refused, as :func:`~saeatlas.train.train_sae` refuses them (they
            were replaced without a word).
    """
    # before the work: a dict among `configs` ended in an AttributeError, a generator in a
    # TypeError, `outs="dir"` was read as one directory per letter, a number among them
    # ended in pathlib's TypeError, and `progress="no"` was read by its truth
    if not isinstance(configs, (list, tuple)) or not configs:
        raise ConfigError(
            f"`configs` must be a non-empty list of TrainConfig, got {shown(configs)}."
        )
    for i, cfg in enumerate(configs):
        check_config_argument(f"configs[{i}]", cfg, TrainConfig)
    if outs is not None:
        if not isinstance(outs, (list, tuple)):
            raise ConfigError(
                f"`outs` must be a list of SAE directories, one per config, got {shown(outs)}."
            )
        for i, out in enumerate(outs):
            check_path_argument(f"outs[{i}]", out)
    check_flag_argument("overwrite", overwrite)
    check_flag_argument("progress", progress)
    # what each member's cfg.json records must be how it was trained
    configs = [replace(c, data_seed=configs[0].data_seed) for c in configs]
    for name in SHARED:
        values = {repr(getattr(c, name)) for c in configs}
        if len(values) > 1:
            raise ConfigError(f"A family must share `{name}`; got {sorted(values)}.")
    if any(c.checkpoint_every for c in configs):
        raise ConfigError(
            "Checkpoints are per run: train with train_sae to use `checkpoint_every`."
        )
    if outs is not None and len(outs) != len(configs):
        raise ConfigError(f"{len(outs)} output directories for {len(configs)} configs.")
    world = join(configs[0].device)

    def check() -> None:
        for out in outs or ():
            check_sae_out(Path(out), overwrite=overwrite, resume=False)

    # only rank 0 writes (:func:`.trainer._finish`): only it locks and checks the outputs
    with output_lock(*(outs if outs is not None and world.is_main else ())):
        from_main(check, world)
        return _train_family(store, configs, outs, progress and world.is_main)


def _train_family(
    store: ActivationStore | str | Path,
    configs: list[TrainConfig],
    outs: list[str | Path] | None,
    progress: bool,
) -> list[TrainResult]:
    store = store if isinstance(store, ActivationStore) else ActivationStore.open(store)
    first = _Run(store, configs[0])
    # each member was checked alone: ten seeds that each fit held ten SAEs' weights at once
    # and the machine ran out of memory (the OOM killer) instead of a word
    d_in = first.layers[-1].stop
    largest = max(c.d_sae or c.expansion_factor * d_in for c in configs)
    check_fits(d_in, largest, first.batch_size, first.cfg.device, FAMILY_SIZES, len(configs))
    runs = [first] + [_Run(store, c) for c in configs[1:]]
    n_steps = {r.n_steps for r in runs}
    assert len(n_steps) == 1, "shared tokens and batch size give equal step counts"
    total = runs[0].n_steps
    batches = runs[0].batches()
    dirs = [Path(o) for o in outs] if outs is not None else [None] * len(runs)
    boards = [_tensorboard(d, r.cfg, 1) if r.world.is_main else None for d, r in zip(dirs, runs)]
    t0 = time.perf_counter()
    with progress_bar(f"train x{len(runs)}", total, progress) as bar:
        while runs[0].step < total:
            batch = next(batches)
            for run, board, where in zip(runs, boards, dirs):
                out = run.train_step(batch)
                if (run.step - 1) % run.cfg.log_every == 0 or run.step == total:
                    # as train_sae stops: a member of an infinite loss (--l0-coefficient 1e38)
                    # was trained to its end and saved, `"loss": Infinity` in its metrics
                    check_finite_training(run, out, where)
                    speed = run.rows_done / max(time.perf_counter() - t0, 1e-9)
                    add_scalars(board, run.record(out, speed))
            bar.advance(1)
    for board in boards:
        if board is not None:
            board.close()
    seconds = time.perf_counter() - t0
    return [_finish(run, d, seconds) for run, d in zip(runs, dirs)]
