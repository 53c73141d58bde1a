"""SAEs trained like a given one with other seeds, for module stability across seeds.

``saeatlas analyze --seeds N`` needs N - 1 SAEs besides the one analysed. They
are trained with the analysed SAE's own training settings (recorded in its
``cfg.json`` by :func:`saeatlas.train.train_sae`), the seed shifted by 1, 2,
..., into sibling directories ``<sae>-seed<s>``; a complete one already there
is reused, so a second ``analyze`` does not retrain (``saeatlas train --seeds N``,
:func:`saeatlas.train.train_ensemble`, trains them there up front). The dictionary
null takes its source dictionary from the first of them (:func:`null_source_sae`).

Under ``torchrun`` every rank trains them together (data-parallel, one by one) and
rank 0 writes them; the ranks meet before any of them reads what was written.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..._coordinator import Coordinator
from ..._world import in_one_process
from ...errors import AtlasError, ConfigError
from ...sae import SparseAutoencoder
from ...sae.model import sae_layers
from ...store import ActivationStore
from ...train.checkpoint import CHECKPOINT
from ...train.ensemble import seed_sae_dir, trained_like
from ...train.rows import rows_digest
from ..sae_checks import settings_differ


def _train_settings(sae: SparseAutoencoder):
    from ...train import TrainConfig

    settings = (sae.cfg.metadata or {}).get("train_config")
    return TrainConfig.from_json(settings) if settings else None


def _rows(sae: SparseAutoencoder) -> dict:
    """The rows ``sae`` was trained on, as its ``cfg.json`` records them: their digest,
    and the store's path."""
    meta = sae.cfg.metadata or {}
    return {"digest": meta.get("rows_digest"), "store": meta.get("store")}


def _other_rows(mine: dict, its: dict) -> str | None:
    """How the rows a sibling was trained on differ from the SAE's, or None: by their
    digest (a store captured again at the same path has other rows), or, for SAEs from
    before it was recorded, by the store's path."""
    if mine["digest"] is not None and its["digest"] is not None:
        if mine["digest"] == its["digest"]:
            return None
        return f"the rows it was trained on (digest {its['digest']}, the SAE's {mine['digest']})"
    my_store, its_store = mine["store"], its["store"]
    # a relative store path says nothing without the folder it was given in
    if all(isinstance(s, str) and Path(s).is_absolute() for s in (my_store, its_store)):
        if Path(my_store).resolve() != Path(its_store).resolve():
            return f"the store ('{its_store}', the SAE's '{my_store}')"
    return None


def _check_sibling(sae: SparseAutoencoder, target: Path, sae_dir: str | Path) -> None:
    """Refuse to reuse ``<sae>-seed<s>`` when it was trained otherwise than ``sae`` (a
    stale one, left from before ``sae`` was trained again): it would join the ensemble
    and be the dictionary null's source as if it were ``sae`` with another seed."""
    its = SparseAutoencoder.load(target)
    differ = [f"`{k}`" for k, _, _ in settings_differ(sae, its)]
    rows = _other_rows(_rows(sae), _rows(its))
    if rows is not None:
        differ.append(rows)
    if differ:
        raise ConfigError(
            f"'{target}' differs from '{sae_dir}' in more than its seed: {', '.join(differ)}; "
            "a seed SAE left from before the SAE was trained again. Delete it so that "
            "analyze trains it again."
        )


def _own_rows(sae: SparseAutoencoder, sae_dir: str | Path, store: ActivationStore):
    """The store to train SAEs like ``sae`` on: its own rows (``rows_digest``). That is
    ``store`` when it holds them (or ``sae`` records none), else the store ``sae`` was
    trained on while it is still there with those rows. An analysis of another store (a
    transfer) trained them on the analysed rows, then refused them as seed SAEs of other
    rows, and they stayed in ``<sae>-seedN`` to block the analysis of the SAE's own store."""
    meta = sae.cfg.metadata or {}
    digest, path = meta.get("rows_digest"), meta.get("store")
    here = rows_digest(store)
    if not isinstance(digest, str) or here == digest:
        return store
    if isinstance(path, str):
        try:
            own = ActivationStore.open(path)
            if rows_digest(own) == digest:
                sae_layers(sae, own)
                return own
        except (AtlasError, OSError):
            pass  # moved, captured again or damaged since: said below
    raise ConfigError(
        f"'{sae_dir}' was trained on other rows than those of '{store.path}' (rows digest "
        f"{digest}, the store's {here}), and its own store ({path!r}) no "
        "longer holds them: its seed SAEs (--seeds, and the dictionary null's source) must "
        "be trained on its own rows. Give them with --seed-sae (from Python: seed_saes= or "
        "null_source=), or analyse with --seeds 1 and --nulls permutation rewiring."
    )


def train_seed_saes(
    sae_dir: str | Path,
    store: ActivationStore | str | Path,
    n_seeds: int,
    *,
    given: list[Path] | tuple[Path, ...] = (),
    progress: bool = False,
    coord: Coordinator | None = None,
) -> list[Path]:
    """Directories of ``n_seeds - 1`` SAEs trained like ``sae_dir`` with other seeds.

    The SAEs in ``given`` count first; the rest are reused from ``<sae>-seed<s>``
    when complete, or trained there. ``coord``: the ranks of a ``torchrun`` job, which
    meet once the SAEs are written.
    """
    from ...train import train_sae

    if n_seeds < 1:
        raise ConfigError(f"--seeds must be at least 1 (the SAE itself), got {n_seeds}.")
    out = [Path(p) for p in given][: n_seeds - 1]
    missing = n_seeds - 1 - len(out)
    if missing <= 0:
        return out
    sae = SparseAutoencoder.load(sae_dir)
    # an SAE of another store trained its seed SAEs on this one before the analysis
    # refused the pair, and those then blocked the right store's run as stale
    store = store if isinstance(store, ActivationStore) else ActivationStore.open(store)
    sae_layers(sae, store)
    store = _own_rows(sae, sae_dir, store)
    base = _train_settings(sae)
    if base is None:
        raise ConfigError(
            f"'{sae_dir}' does not record how it was trained (not trained by saeatlas?), so "
            "--seeds cannot train more like it. Train them yourself and pass them with "
            "--seed-sae DIR ..."
        )
    shift, todo = 0, []
    while missing:
        shift += 1
        target, cfg = seed_sae_dir(sae_dir, shift), replace(base, seed=base.seed + shift)
        if trained_like(target, cfg) is None:  # no complete SAE there (or a checkpoint)
            todo.append((cfg, target))
        else:
            _check_sibling(sae, target, sae_dir)
        out.append(target)
        missing -= 1
    resuming = any((t / CHECKPOINT).is_file() for _, t in todo)
    if len(todo) > 1 and not resuming and not base.checkpoint_every:
        from ...train.family import train_family

        # one pass over shared batches, as `saeatlas train --seeds N` trains them
        train_family(
            store, [c for c, _ in todo], [t for _, t in todo], overwrite=True, progress=progress
        )
    else:
        for cfg, target in todo:
            resume = (target / CHECKPOINT).is_file()  # an interrupted run goes on
            train_sae(store, cfg, target, resume=resume, progress=progress)
    if coord is not None:
        coord.check(None)  # rank 0 has written them: now every rank may read them
    return out


def null_source_sae(
    sae: SparseAutoencoder,
    sae_dir: str | Path | None,
    store: ActivationStore,
    *,
    progress: bool = False,
    coord: Coordinator | None = None,
) -> tuple[SparseAutoencoder | None, str]:
    """An SAE trained like ``sae`` with the next seed, the dictionary null's source:
    ``(sae, where it is)``, or ``(None, why not)`` when ``sae`` records no training
    settings.

    With ``sae_dir`` it is ``<sae>-seed1`` (reused, or trained there as ``--seeds 2``
    would); without one, or when that directory cannot be written, it is trained in
    memory, on the SAE's own rows as there (:func:`_own_rows`: an SAE analysed on other
    rows had its null's source trained on the analysed ones). Under ``torchrun`` (``coord``: the ranks, which meet before reading it) a
    directory that cannot be written is an error: only rank 0 would know.
    """
    from ...train import train_sae

    base = _train_settings(sae)
    if base is None:
        return None, "the SAE records no training settings"
    if sae_dir is not None:
        try:
            path = train_seed_saes(sae_dir, store, 2, progress=progress, coord=coord)[0]
            return SparseAutoencoder.load(path), str(path)
        except OSError:
            if not in_one_process():
                raise
    own = _own_rows(sae, sae_dir if sae_dir is not None else "the SAE", store)
    trained = train_sae(own, replace(base, seed=base.seed + 1), progress=progress).sae
    return trained, f"trained in memory with seed {base.seed + 1}"
