"""``AtlasInputs``: what every step of the analysis reads, encoded once.

The analysed SAE's codes on the atlas's rows, the units' global mode, and the
codes of any other SAE a step needs on the same rows (a seed twin for the
dictionary null and for seed stability), each encoded once and shared.

Under ``torchrun`` the inputs carry the ranks' :class:`~saeatlas._coordinator.Coordinator`:
every encoding is shared among the ranks (:func:`.graph.codes.encode_store`), and
every rank ends with the same inputs a single process prepares.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from .._coordinator import Coordinator, run_ranks, solo
from .._world import memory_bytes, rank_device
from ..errors import ConfigError
from ..sae import SparseAutoencoder
from ..sae.model import sae_fingerprint
from ..store import ActivationStore
from ..store.atomic import resolve
from ..store.store import INDEX_COLUMNS
from .arguments import check_arguments
from .config import AtlasConfig
from .constants import MIN_ROWS
from .fingerprints import store_fingerprint
from .graph.codes import encode_store
from .graph.firing import Firing, UnitsMode, firing, units_mode, view_members
from .repeated_rows import warn_repeated_rows
from .sae_checks import check_member, check_twin, warn_transfer

SAELike = SparseAutoencoder | str | Path
T = TypeVar("T")
log = logging.getLogger(__name__)

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
    check_arguments(sae, store, config, **kw)
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
    _loaded: dict = field(default_factory=dict, repr=False)
    """The seed SAEs and the null source, loaded (and checked) by :func:`prepare`."""

    def firing_of(self, other: SAELike) -> Firing:
        """``other``'s codes and firings on the atlas's rows, judged against the same
        global mode; encoded once per SAE (by path, or by object)."""
        key = _key(other)
        if other is self.sae:
            return self.main
        if key not in self._firings:
            sae = self._loaded.get(key) or _load(other)
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


def check_label_column(cfg: AtlasConfig, store: ActivationStore) -> None:
    """Refuse a ``label_column`` other than the default that the store's rows lack: named
    on purpose, it was passed over without a word (no module profiled against it)."""
    if cfg.label_column == AtlasConfig.label_column:
        return  # the default: profiled when the store has labels
    columns = store.row_columns()
    if cfg.label_column not in columns:
        # the columns that number the rows are no labels: they were the choices listed
        # (['row', 'sample', 'position']) where the store records no label at all
        labels = [c for c in columns if c not in INDEX_COLUMNS]
        numbering = [c for c in columns if c in INDEX_COLUMNS]
        choices = (
            f"; its label columns are {labels} (name one of them), and {numbering} number its rows"
            if labels
            else f", which record no labels ({numbering} number them); capture labels with "
            "--labels, or leave `label_column` out"
        )
        raise ConfigError(
            f"`label_column` {cfg.label_column!r} is not a column of the store's rows{choices}."
        )


def check_module_size(
    cfg: AtlasConfig,
    d_sae: int,
    name: str = "`min_module_features`",
    flag: str = "--min-module-features",
) -> None:
    """Refuse a ``min_module_features`` above the SAE's ``d_sae`` latents (it was "No
    significant structure", modularity 0): no feature community is that large."""
    if cfg.min_module_features > d_sae:
        raise ConfigError(
            f"{name} ({cfg.min_module_features:,}) is more than the SAE's {d_sae:,} latents: no "
            "feature community is that large, so the atlas could report no module. Give at "
            f"most {d_sae:,} ({flag})."
        )


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
    sae = _load(sae)
    store = store if isinstance(store, ActivationStore) else ActivationStore.open(store)
    cfg = config
    if store.n_rows < MIN_ROWS:  # (`max_rows` is at least as many: AtlasConfig)
        raise ConfigError(
            f"The store '{store.path}' has {store.n_rows} rows, fewer than the {MIN_ROWS} "
            "an atlas needs. Capture more rows."
        )
    check_label_column(cfg, store)
    check_module_size(cfg, sae.cfg.d_sae)
    loaded = _loaded_twins(sae, sae_path, store, seed_saes, null_source)
    twins = dict(loaded)
    for value, member in sweep[1] if sweep else ():
        loaded[_key(member)] = _load(member)
        what = f"sweep's member {value:g} ({_named(member, 'loaded')})"
        check_member(sae, loaded[_key(member)], store, sweep[0], value, what)
    if coord.distributed:  # a rank given other files would mix two analyses into one atlas
        coord.agree(
            _facts(
                sae,
                store,
                cfg,
                twins,
                sweep and (sweep[0], [(v, loaded[_key(m)]) for v, m in sweep[1]]),
            ),
            "this analysis",
            "Every rank must analyse the same SAE (and seed SAEs) on the same store with "
            "the same settings: give every rank the same files and flags.",
        )
    n_members = _view_members(cfg, 1 + len(seed_saes))
    n_rows = min(store.n_rows, cfg.max_rows or store.n_rows)
    if mode is None:
        check_view_fits(cfg, sae.cfg.d_in, 1 + len(seed_saes), store.n_rows)
    codes = encode_store(
        sae,
        store,
        max_rows=cfg.max_rows,
        batch_size=cfg.batch_size,
        device=cfg.device,
        unit_gram=mode is None,
        resamples=view_members(n_members, sae.cfg.d_in, n_rows) - 1 if mode is None else 0,
        resample_seed=cfg.seed,
        progress=progress,
        coord=coord,
    )
    if not (codes.unit_std > 0).any():  # was "no two features fire together more often than
        # chance ... use a larger k": identical rows have nothing to co-vary
        raise ConfigError(
            f"Every unit the SAE reads is constant over the {codes.n_rows:,} rows of "
            f"'{store.path}': nothing varies, so nothing fires together. Capture activations "
            "of varied inputs."
        )
    if codes.matrix.nnz == 0:  # its atlas would be the units' correlations under its name
        raise ConfigError(
            f"None of the SAE's {sae.cfg.d_sae:,} latents fires on any of the "
            f"{codes.n_rows:,} rows of '{store.path}': the SAE does not read this store. "
            "Check that it was trained on these activations (--acts), or train it again."
        )
    if coord.world.is_main:  # once the SAE is known to read the store's layers
        warn_transfer(sae, sae_path, store)
    # once, for the analysed SAE (the random-SAE control's inputs, given `mode`, said it again)
    if coord.world.is_main and mode is None and cfg.window and not codes.window_applied(cfg.window):
        log.warning(
            "`window` %d has no effect: every sample is one row and windows do not cross "
            "samples, so co-occurrence is counted per row (graph.window_applied: false).",
            cfg.window,
        )
    if coord.world.is_main and mode is None:
        warn_repeated_rows(codes, store)
    mode = units_mode(codes, n_members) if mode is None else mode
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
        _loaded=loaded,
    )


def _view_members(cfg: AtlasConfig, n_saes: int) -> int:
    # the correlation view starts with as many members as the SAE ensemble (at least
    # three), and where units are few has resamples to add while its consensus is undecided
    return max(n_saes * (1 + cfg.n_bootstrap), 3)


#: What shrinks the units' correlation view, by the flags `saeatlas analyze` has.
VIEW_SIZES = (
    "Analyse an SAE of fewer units (trained on fewer or narrower layers, --layers) or fewer "
    "SAEs (--seeds 1)."
)


def check_view_fits(
    cfg: AtlasConfig, n_units: int, n_saes: int, n_rows: int | None, lower: str = VIEW_SIZES
) -> None:
    """Refuse, before the encoding, units whose correlation view cannot fit in memory: a
    gram of the units per member and their correlations, ``n_units`` squared float64
    each (20,000 units ended in "Out of memory" advising --batch-size, which changes
    nothing). ``n_saes``: the SAE and its seed SAEs; ``n_rows``: the store's rows (None:
    not known, the fewest members counted); ``lower``: the settings that shrink it."""
    members = _view_members(cfg, n_saes)
    if n_rows is not None:
        members = view_members(members, n_units, min(n_rows, cfg.max_rows or n_rows))
    need, have = 2 * members * n_units**2 * 8, memory_bytes("cpu")
    if have is not None and need > have:
        raise ConfigError(
            f"The units' correlation view of the SAE's {n_units:,} units needs about "
            f"{need / 2**30:,.1f} GiB ({members} grams of {n_units:,} x {n_units:,} float64 "
            f"and their correlations); this machine has {have / 2**30:,.1f} GiB. {lower}"
        )


def _key(sae: SAELike) -> Any:
    # a loop of symbolic links (a --seed-sae that names itself) is named, not a traceback
    return str(resolve(sae)) if isinstance(sae, str | Path) else id(sae)


def _load(sae: SAELike) -> SparseAutoencoder:
    return sae if isinstance(sae, SparseAutoencoder) else SparseAutoencoder.load(sae)


def _loaded_twins(
    sae: SparseAutoencoder,
    sae_path: str | None,
    store: ActivationStore,
    seed_saes: Sequence[SAELike],
    null_source: SAELike | None,
) -> dict[Any, SparseAutoencoder]:
    """The seed SAEs and the null source, loaded and checked before the work (by
    :func:`check_twin`); no seed SAE may be ``sae`` itself or come twice, since a
    member counted twice makes every module look reproducible."""
    seen = {_key(sae_path) if sae_path is not None else id(sae)}
    loaded: dict[Any, SparseAutoencoder] = {}
    names = [_named(other, f"`seed_saes[{i}]`") for i, other in enumerate(seed_saes)]
    for other, name in zip(seed_saes, names):
        key = _key(other)
        if key in seen:
            raise ConfigError(
                f"The seed SAE {name} is the analysed SAE or another seed SAE again; give "
                "each --seed-sae once, each an SAE trained with another seed."
            )
        seen.add(key)
        twin = check_twin(sae, _load(other), store, f"seed SAE {name}")
        for earlier, before in zip(names, loaded.values()):
            if torch.equal(twin.W_dec, before.W_dec):  # a copy under another name
                raise ConfigError(
                    f"The seed SAEs {earlier} and {name} have the same weights (one is a "
                    "copy of the other); give SAEs trained with different seeds."
                )
        loaded[key] = twin
    if null_source is not None and _key(null_source) not in loaded:
        what = f"dictionary null's source {_named(null_source, '(`null_source`)')}"
        loaded[_key(null_source)] = check_twin(sae, _load(null_source), store, what)
    return loaded


def _named(sae: SAELike, given: str) -> str:  # a loaded one's repr named none
    return given if isinstance(sae, SparseAutoencoder) else f"'{sae}'"


def _facts(
    sae: SparseAutoencoder,
    store: ActivationStore,
    cfg: AtlasConfig,
    twins: dict[Any, SparseAutoencoder],
    sweep: tuple[str, Sequence[tuple[float, SparseAutoencoder]]] | None,
) -> dict[str, Any]:
    """What the ranks of one analysis must share: each setting (by its name, so that a
    rank given another --seed or --n-null is told which, not "different settings"), the
    SAEs' weights (the analysed one, its seed SAEs and null source, a sweep's members)
    and the store (its layers, rows and unit statistics)."""
    manifest = store.manifest
    return {
        **{f"`{k}`": v for k, v in cfg.to_json().items()},
        "SAE": sae_fingerprint(sae),
        "seed SAEs": [sae_fingerprint(o) for o in twins.values()],
        "sweep": None if not sweep else [sweep[0], [(v, sae_fingerprint(m)) for v, m in sweep[1]]],
        "store": store_fingerprint(store),
        # the fingerprint reads the first 64 rows only, and each rank reads its own share
        # of the rows: a store whose later shards differ (another copy under that path on
        # another node) is known by its shards' sha256, which its manifest holds, and a
        # .npy by the sha256 of every value, taken when it was opened
        "store's shards": [store.digest()]
        if manifest is None
        else [[s.sha256 for s in manifest.shards], manifest.rows_sha256],
    }
