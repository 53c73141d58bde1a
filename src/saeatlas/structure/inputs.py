"""``AtlasInputs``: what every step of the analysis reads, encoded once.

The analysed SAE's codes on the atlas's rows, the units' global mode, and the
codes of any other SAE a step needs on the same rows (a seed twin for the
dictionary null and for seed stability), each encoded once and shared.

Under ``torchrun`` the inputs carry the ranks' :class:`~saeatlas._coordinator.Coordinator`:
every encoding is shared among the ranks (:func:`.graph.codes.encode_store`), and
every rank ends with the same inputs a single process prepares.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from .._coordinator import Coordinator, run_ranks, solo
from .._world import rank_device
from ..sae import SparseAutoencoder
from ..store import ActivationStore
from .config import AtlasConfig
from .graph.codes import encode_store
from .graph.firing import Firing, UnitsMode, firing, units_mode

SAELike = SparseAutoencoder | str | Path
T = TypeVar("T")

#: Seconds a rank of a ``torchrun`` analysis waits for the others where they meet.
DEFAULT_TIMEOUT_S = 1800.0


def analysis_ranks(device: str, timeout_s: float, fn: Callable[[Coordinator], T]) -> T:
    """``fn(coordinator)`` on every rank of the analysis: the initialised process
    group, or the one ``torchrun`` describes (joined here), or a world of one
    (:func:`saeatlas._coordinator.run_ranks`). Every rank gets ``fn``'s result; a rank
    that fails stops them all with one error naming it. ``device="cuda"`` means each
    rank's own GPU (``LOCAL_RANK``)."""

    def on_device(coord: Coordinator) -> T:
        local = rank_device(device, coord.world)
        if local != device and local is not None and local.startswith("cuda:"):
            torch.cuda.set_device(local)  # "cuda" in the settings is this rank's GPU
        return fn(coord)

    return run_ranks("analysis", device, timeout_s, on_device)


def prepared_on_ranks(
    then: Callable[[AtlasInputs], T],
    sae: SAELike,
    store: ActivationStore | str | Path,
    config: AtlasConfig,
    timeout_s: float,
    **kw: Any,
) -> T:
    """``then(prepare(sae, store, config, **kw))`` on every rank of the analysis
    (:func:`analysis_ranks`; ``timeout_s``: seconds a rank waits for the others where
    they meet before it stops with an error)."""
    return analysis_ranks(
        config.device, timeout_s, lambda coord: then(prepare(sae, store, config, coord=coord, **kw))
    )


@dataclass
class AtlasInputs:
    """The SAE, the store, the settings, and the SAE's firings on the atlas's rows."""

    sae: SparseAutoencoder
    sae_path: str | None
    """Where ``sae`` was loaded from (None for an SAE given as an object)."""
    store: ActivationStore
    cfg: AtlasConfig
    mode: UnitsMode
    """The units' correlation and global mode on the atlas's rows."""
    main: Firing
    """``sae``'s codes and firings."""
    seed_saes: tuple[SAELike, ...] = ()
    """SAEs trained like ``sae`` with other seeds (seed stability; the first is the
    dictionary null's default source)."""
    null_source: SAELike | None = None
    """The dictionary null's source SAE, when given."""
    sweep: tuple[str, tuple[tuple[float, SAELike], ...]] | None = None
    """``(setting, ((value, SAE), ...))``: a sparsity sweep's members, whose modules the
    atlas compares (:mod:`.inference.sparsity`)."""
    progress: bool = False
    coord: Coordinator = field(default_factory=solo, repr=False)
    """The ranks of a ``torchrun`` analysis (a world of one otherwise)."""
    _firings: dict = field(default_factory=dict, repr=False)

    def firing_of(self, other: SAELike) -> Firing:
        """``other``'s codes and firings on the atlas's rows, judged against the same
        global mode; encoded once per SAE (by path, or by object)."""
        key = str(Path(other).resolve()) if isinstance(other, str | Path) else id(other)
        if other is self.sae:
            return self.main
        if key not in self._firings:
            sae = other if isinstance(other, SparseAutoencoder) else SparseAutoencoder.load(other)
            codes = encode_store(
                sae,
                self.store,
                max_rows=self.cfg.max_rows,
                batch_size=self.cfg.batch_size,
                device=self.cfg.device,
                unit_gram=False,
                coord=self.coord,
            )
            self._firings[key] = firing(sae, codes, self.mode, self.cfg)
        return self._firings[key]


def prepare(
    sae: SAELike,
    store: ActivationStore | str | Path,
    config: AtlasConfig = AtlasConfig(),
    *,
    seed_saes: Sequence[SAELike] = (),
    null_source: SAELike | None = None,
    sweep: tuple[str, Sequence[tuple[float, SAELike]]] | None = None,
    mode: UnitsMode | None = None,
    progress: bool = False,
    coord: Coordinator | None = None,
) -> AtlasInputs:
    """Load ``sae`` and ``store`` and encode the store once.

    ``mode``: the units' mode when already known for these rows (the random-SAE
    control reuses the real atlas's); else it is computed from the rows.
    ``coord``: the ranks that share the work (a world of one by default).
    """
    coord = coord if coord is not None else solo()
    progress = progress and coord.world.is_main
    sae_path = None if isinstance(sae, SparseAutoencoder) else str(sae)
    sae = sae if isinstance(sae, SparseAutoencoder) else SparseAutoencoder.load(sae)
    store = store if isinstance(store, ActivationStore) else ActivationStore.open(store)
    cfg = config
    # the correlation view gets as many members as the SAE ensemble (at least three)
    n_members = (1 + len(seed_saes)) * (1 + cfg.n_bootstrap)
    codes = encode_store(
        sae,
        store,
        max_rows=cfg.max_rows,
        batch_size=cfg.batch_size,
        device=cfg.device,
        unit_gram=mode is None,
        resamples=max(n_members, 3) - 1 if mode is None else 0,
        resample_seed=cfg.seed,
        progress=progress,
        coord=coord,
    )
    mode = units_mode(codes) if mode is None else mode
    return AtlasInputs(
        sae=sae,
        sae_path=sae_path,
        store=store,
        cfg=cfg,
        mode=mode,
        main=firing(sae, codes, mode, cfg),
        seed_saes=tuple(seed_saes),
        null_source=null_source,
        sweep=(sweep[0], tuple(sweep[1])) if sweep else None,
        progress=progress,
        coord=coord,
    )
