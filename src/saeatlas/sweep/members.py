"""The members of a sweep: trained from shared batches into the sweep's partial
directory, evaluated on the held-out rows, and (``--resume``) kept from a sweep that
was killed or failed when they are finished and were trained the same way."""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from .._world import World, from_main
from ..errors import ConfigError, TrainingDiverged
from ..evaluate import evaluate_sae
from ..evaluate.metrics import MIN_HELDOUT_ROWS
from ..sae import SparseAutoencoder
from ..sae.files import CFG
from ..store import ActivationStore
from ..store.stats import RunningMoments
from ..train import TrainConfig, train_family
from ..train.ensemble import finished_like
from ..train.init import unit_varies
from .stability import mean_max_cosine

log = logging.getLogger(__name__)

#: Settings a sweep can run over (the members' directories are named after them).
SWEEPABLE = ("k", "l1_coefficient", "l0_coefficient")


def heldout_rows(n_rows: int, heldout_fraction: float, name: str = "--heldout-fraction") -> int:
    """The rows every member of a sweep of a store of ``n_rows`` rows holds out (the last
    ones); refuse a ``heldout_fraction`` of too few to measure the FVU. ``name``: how the
    message names the setting."""
    if n_rows * heldout_fraction < MIN_HELDOUT_ROWS:
        raise ConfigError(
            f"`heldout_fraction` {heldout_fraction} of {n_rows} rows holds out fewer than "
            f"{MIN_HELDOUT_ROWS} rows, too few to measure the FVU. Capture more rows or raise "
            f"{name}."
        )
    return max(1, int(n_rows * heldout_fraction))


def check_heldout_varies(store: ActivationStore, layers: tuple[str, ...], start: int) -> None:
    """Refuse, before any member is trained, held-out rows ``start:`` (of ``layers``, or
    all) that do not vary: no member's FVU is defined on them, and the sweep was refused
    so (advised to "evaluate on other rows", which it has no flag for) once every member
    had been trained."""
    names = list(layers) or None
    moments: RunningMoments | None = None
    for s in range(start, store.n_rows, 4096):
        x = store.read(s, min(store.n_rows, s + 4096), layers=names)
        moments = moments or RunningMoments(x.shape[1])
        moments.update(x)
    if moments is None or unit_varies(moments.mean, np.sqrt(moments.m2 / moments.count)).any():
        return
    raise ConfigError(
        f"The sweep's held-out rows {start}:{store.n_rows} of '{store.path}' (the last "
        "--heldout-fraction) do not vary (every row is the same), so no member's FVU is "
        "defined on them. Raise --heldout-fraction, or capture rows that vary at the end."
    )


class Members:
    """Trains and evaluates sweep members, into ``new`` (paths recorded under ``out``).

    Under ``torchrun`` every rank trains each member data-parallel
    (:func:`~saeatlas.train.train_family`); rank 0 alone writes them (``new`` is None
    on the others) and evaluates them, and every rank gets its figures, so that the
    ranks take the same decisions (extend the range or not)."""

    def __init__(
        self,
        store: ActivationStore,
        base: TrainConfig,
        over: str,
        out: Path,
        new: Path | None,
        seeds: int,
        heldout_fraction: float,
        world: World,
        progress: bool,
        resume: bool = False,
    ) -> None:
        self.store, self.base, self.over, self.resume = store, base, over, resume
        self.out, self.new, self.seeds, self.world = out, new, seeds, world
        self.heldout = heldout_rows(store.n_rows, heldout_fraction)
        self.start = store.n_rows - self.heldout
        check_heldout_varies(store, base.layers, self.start)
        self.progress = progress and world.is_main
        self.members: list[Path] = []
        """Every member's directory under ``out``, in the order trained."""

    def train(self, values: list[float]) -> list[tuple]:
        """One member per value (and its second seed): a tuple each of ``(value, path,
        fvu, l0, dead fraction, stability, d_sae)``."""
        over, base, seeds = self.over, self.base, self.seeds
        cast = int if over == "k" else float
        configs, outs = [], []
        for v in values:
            for s in range(seeds):
                configs.append(
                    replace(base, **{over: cast(v)}, seed=base.seed + s, heldout_rows=self.heldout)
                )
                outs.append(Path(f"{over}-{cast(v)}") / f"seed-{base.seed + s}")
        new = self.new
        self.members += outs

        def finished() -> list[bool]:  # rank 0 holds the members a killed sweep left
            return [
                self.resume and new is not None and finished_like(new / o, c, self.store)
                for c, o in zip(configs, outs)
            ]

        todo = [i for i, done in enumerate(from_main(finished, self.world)) if not done]
        try:
            family = (
                train_family(
                    self.store,
                    [configs[i] for i in todo],
                    [new / outs[i] for i in todo] if new is not None else None,
                    overwrite=True,  # its own new folder
                    progress=self.progress,
                )
                if todo
                else []
            )
        except (TrainingDiverged, ConfigError) as e:
            # the swept setting is given by --values, not its flag: a k above the default
            # d_sae was told to "Lower `k` (--k)", a flag the sweep refuses
            own = "--" + self.over.replace("_", "-")
            raise type(e)(re.sub(rf"{own}(?![a-z-])", "--values", str(e))) from None
        trained = dict(zip(todo, family))

        def sae(i: int) -> SparseAutoencoder:
            return trained[i].sae if i in trained else SparseAutoencoder.load(new / outs[i])

        def evaluate() -> list[tuple]:
            points = []
            for i, v in enumerate(values):
                first = sae(i * seeds)
                ev = evaluate_sae(first, self.store, start=self.start)
                stab = (
                    mean_max_cosine(first.W_dec, sae(i * seeds + 1).W_dec) if seeds == 2 else None
                )
                path = str(self.out / outs[i * seeds])
                points.append(
                    (float(v), path, ev.fvu, ev.l0, ev.dead_fraction, stab, first.cfg.d_sae)
                )
            return points

        # every rank evaluates its share of the held-out rows (evaluate_sae gathers the
        # sums), so every rank gets the same figures and extends the range alike
        return evaluate()


def kept_members(new: Path) -> bool:
    """After an error (a full disk, Ctrl-C): keep ``new`` for ``--resume`` when it holds
    finished members, and say so."""
    finished = sorted(str(p.parent.relative_to(new)) for p in new.glob(f"*/seed-*/{CFG}"))
    if finished:
        log.warning(
            "The sweep stopped with %d member%s finished (%s); %s in '%s', and "
            "`saeatlas sweep ... --resume` continues from %s.",
            len(finished),
            "s" * (len(finished) != 1),
            ", ".join(finished),
            "they stay" if len(finished) != 1 else "it stays",
            new,
            "them" if len(finished) != 1 else "it",
        )
    return bool(finished)


def drop_others(new: Path, members: list[Path]) -> None:
    """Remove the members of other values or seeds that a killed sweep left in ``new``
    (``--resume``), so that the sweep holds its own members only, and the lock files of
    the members a ``kill -9`` stopped while they were written (a lock's file goes when
    its lock is let go, which a killed process never does; the sweep's own lock keeps
    any other writer out of ``new``)."""
    for top in new.iterdir():
        if not (top.is_dir() and any(top.name.startswith(f"{o}-") for o in SWEEPABLE)):
            continue
        for stale in top.glob(".seed-*.lock"):
            stale.unlink(missing_ok=True)
        ours = {m.name for m in members if m.parts[0] == top.name}
        if not ours:
            shutil.rmtree(top)
            continue
        for d in top.iterdir():
            if d.is_dir() and d.name.startswith("seed-") and d.name not in ours:
                shutil.rmtree(d)
