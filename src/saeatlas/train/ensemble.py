"""``train_ensemble``: one SAE per seed, in the layout ``saeatlas analyze --seeds`` reuses.

The analysis measures how its modules survive other SAE seeds. ``saeatlas train
--seeds N`` trains those SAEs up front: the SAE in ``out`` with the configured
seed ``s``, and ``N - 1`` more with seeds ``s + 1``, ... in the sibling
directories ``<out>-seed1``, ``<out>-seed2``, ... (:func:`seed_sae_dir`), where
``analyze --seeds N`` finds them complete and trains nothing.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, replace
from pathlib import Path

from .._validation import (
    check_config_argument,
    check_flag_arguments,
    check_path_argument,
    shown,
)
from .._world import agree, from_main, join
from ..errors import AtlasError, ConfigError
from ..sae import SparseAutoencoder
from ..sae.architectures import get_architecture
from ..sae.files import CFG, WEIGHTS, SAEFileError
from ..sae.io import check_sae_out
from ..store import ActivationStore
from ..store.atomic import recover_dir
from ..store.lock import output_lock
from .checkpoint import CHECKPOINT, load_checkpoint
from .config import TrainConfig
from .family import train_family
from .rows import rows_digest
from .trainer import METRICS, TrainResult, train_sae

#: SAEs in an ensemble at most (``saeatlas train --seeds``, ``analyze --seeds``).
MAX_SEEDS = 100


@dataclass(frozen=True)
class EnsembleResult:
    results: tuple[TrainResult, ...]
    """One per seed, in seed order: ``out`` (seed s), ``<out>-seed1`` (s + 1), ..."""
    trained: tuple[bool, ...]
    """Per member: trained by this call, or ``False`` for a complete member that
    ``resume=True`` kept."""


def seed_sae_dir(sae_dir: str | Path, shift: int) -> Path:
    """Where the SAE trained like ``sae_dir`` with seed ``seed + shift`` lives:
    the sibling ``<sae>-seed<shift>``."""
    sae_dir = Path(sae_dir)
    if sae_dir.name in ("", ".."):  # '.' or '..' has no name to extend
        sae_dir = sae_dir.resolve()
    return sae_dir.with_name(f"{sae_dir.name}-seed{shift}")


def train_ensemble(
    store: ActivationStore | str | Path,
    cfg: TrainConfig,
    out: str | Path,
    n_seeds: int = 3,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> EnsembleResult:
    """Train ``n_seeds`` SAEs that differ only in ``cfg.seed``: seed ``s`` into ``out``,
    seeds ``s + 1``, ..., ``s + n_seeds - 1`` into ``<out>-seed1``, ... .

    Every member keeps ``cfg``'s data order (its ``data_seed``); each member's seed
    sets its initialisation. Without checkpoints they are trained from the same
    batches in one pass (:func:`~saeatlas.train.train_family`, data-parallel under
    ``torchrun``); with ``checkpoint_every`` or ``resume`` one after the other with
    :func:`~saeatlas.train.train_sae`, which gives the same SAEs.
    ``n_seeds=1`` is ``train_sae(store, cfg, out)``.

    Args:
        store: the activations.
        cfg: training settings of the first member.
        out: the first member's SAE directory; the others are its siblings.
        n_seeds: how many SAEs, at least 1.
        overwrite: replace SAEs already in any of the directories.
        resume: continue each member whose directory holds a checkpoint, keep each
            that is complete (it must record ``cfg`` with its seed), train the rest.
        progress: show a progress bar.

    Every directory is checked (and locked) before anything is trained, so a bad one
    stops the call before it costs a training run.
    """
    # before the work, as train_sae does: a dict as `cfg` ended in an AttributeError, a
    # number as `out` in pathlib's TypeError, and `overwrite="no"` replaced the SAEs there
    check_config_argument("cfg", cfg, TrainConfig)
    check_path_argument("out", out)
    check_flag_arguments(overwrite=overwrite, resume=resume, progress=progress)
    # a NumPy integer (np.int64(2)) was refused as "must be an integer"
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, numbers.Integral):
        raise TypeError(f"`n_seeds` must be an integer, got {n_seeds!r}.")
    n_seeds = int(n_seeds)
    if n_seeds < 1:
        raise ConfigError(
            f"--seeds (`n_seeds`) must be at least 1, got {n_seeds}: --seeds 1 trains the SAE "
            "in --out alone, --seeds N adds N - 1 more with the next seeds beside it."
        )
    if n_seeds > MAX_SEEDS:  # a million trained in one pass held a million SAEs' weights
        raise ConfigError(
            f"--seeds (`n_seeds`) must be at most {MAX_SEEDS} (the SAEs `analyze --seeds` "
            f"reads at most), got {shown(n_seeds)}."
        )
    if cfg.seed + n_seeds - 1 >= 2**63:  # 10**20 built a list of as many folders, forever
        raise ConfigError(
            f"--seeds (`n_seeds`) {shown(n_seeds)} with --seed {cfg.seed} gives seeds beyond "
            f"2**63 - 1, the largest torch takes; give at most {2**63 - cfg.seed:,}."
        )
    out = Path(out)
    outs = [out] + [seed_sae_dir(out, i) for i in range(1, n_seeds)]
    cfgs = [replace(cfg, seed=cfg.seed + i) for i in range(n_seeds)]
    world = join(cfg.device)  # only rank 0 writes: only it locks and checks the outputs
    # a rank given another --seeds trained one SAE where rank 0 trained a family, and the
    # two stopped on the first difference of their runs' facts: "different --resume"
    agree(
        world,
        {"--seeds": n_seeds},
        "this training",
        "Every rank must train the same SAEs: give every rank the same command line.",
    )

    for o, c in zip(outs[1:], cfgs[1:]):  # the lock's refusal named a path nobody gave
        if o.exists() and not o.is_dir():
            raise ConfigError(
                f"--seeds {n_seeds} also writes the SAE with seed {c.seed} to '{o}', which "
                "exists and is not a directory; move it away, or choose another --out."
            )
    if resume and not isinstance(store, ActivationStore):  # its rows decide what is kept
        store = ActivationStore.open(store)

    def check() -> list[bool]:
        for o in outs:  # a member whose final swap a kill interrupted is complete
            recover_dir(o)
        _check_unfinished(outs, resume or overwrite)
        kept = [resume and _keep(c, o, overwrite, store) for c, o in zip(cfgs, outs)]
        for i, (o, keep) in enumerate(zip(outs, kept)):
            if not keep:
                _check_out(o, i, n_seeds, cfgs[i], overwrite, resume, world.size)
        return kept

    with output_lock(*(outs if world.is_main else ())):
        kept = from_main(check, world)
        todo = [i for i in range(n_seeds) if not kept[i]]
        if len(todo) > 1 and not (resume or cfg.checkpoint_every):
            trained = train_family(  # each out was checked above
                store,
                [cfgs[i] for i in todo],
                [outs[i] for i in todo],
                overwrite=True,
                progress=progress,
            )
        else:
            trained = [
                train_sae(
                    store,
                    cfgs[i],
                    outs[i],
                    overwrite=overwrite,
                    resume=resume and (outs[i] / CHECKPOINT).exists(),
                    progress=progress,
                )
                for i in todo
            ]
    by_member = dict(zip(todo, trained))
    results = tuple(by_member[i] if i in by_member else _load(outs[i]) for i in range(n_seeds))
    return EnsembleResult(results, tuple(not k for k in kept))


def _complete(path: Path) -> bool:
    """A finished SAE: its files, and no checkpoint of a run still going on in it."""
    return (
        (path / CFG).is_file() and (path / WEIGHTS).is_file() and not (path / CHECKPOINT).exists()
    )


def trained_like(out: Path, cfg: TrainConfig) -> bool | None:
    """``None`` when ``out`` holds no complete SAE, else whether the training settings it
    records are ``cfg`` (a record older than `data_seed` matches any data order)."""
    if not _complete(out):
        return None
    try:
        raw = json.loads((out / CFG).read_text())["metadata"]["train_config"]
        recorded = TrainConfig.from_json(raw)
    except (OSError, ValueError, KeyError, TypeError, AtlasError):
        return False
    if "data_seed" not in raw:
        cfg = replace(cfg, data_seed=recorded.data_seed)
    return recorded == cfg and edited_since(out) is None


def edited_since(out: Path) -> str | None:
    """How the SAE that ``out``'s cfg.json defines differs from the one the training it
    records makes (`k` edited by hand from 4 to 8: a resume kept the SAE as the k 4 one
    and every reader encoded with k 8), or None."""
    try:
        own = json.loads((out / CFG).read_text())
        cfg = TrainConfig.from_json(own["metadata"]["train_config"])
        d_sae = cfg.d_sae or cfg.expansion_factor * own["d_in"]
        # what the training made, `apply_b_dec_to_input` and `dtype` too (edited by hand,
        # the SAE was kept as trained and every reader encoded it otherwise)
        made = cfg.sae_settings(d_sae) | {
            "apply_b_dec_to_input": get_architecture(cfg.architecture).subtracts_b_dec,
            "dtype": "float32",
        }
        if not isinstance(own.get("k"), int):
            del made["k"]
        layers = [layer.get("name") for layer in own.get("layers") or ()]
        if cfg.layers and layers != list(cfg.layers):
            return f"layers {layers} in its cfg.json, {list(cfg.layers)} in its training"
    except (OSError, ValueError, KeyError, TypeError, AttributeError, AtlasError):
        return None  # no record to compare with: read as the SAE it defines
    for key, value in made.items():
        if own.get(key) != value:
            return f"`{key}` {own.get(key)!r} in its cfg.json, {value!r} in its training"
    return None


def finished_like(out: Path, cfg: TrainConfig, store: ActivationStore) -> bool:
    """Whether ``out`` holds a complete SAE trained with ``cfg`` on ``store``'s rows whose
    files load (checked, not assumed: what a kill left is trained again)."""
    recover_dir(out)
    if not trained_like(out, cfg) or _other_rows(out, store):
        return False
    try:
        SparseAutoencoder.load(out)
    except Exception:  # noqa: BLE001 - any damage means: train it again
        return False
    return True


def _keep(cfg: TrainConfig, out: Path, overwrite: bool, store: ActivationStore) -> bool:
    """Whether ``resume`` keeps the SAE in ``out``: complete and trained with ``cfg`` on
    ``store``'s rows. A complete SAE trained otherwise is an error unless ``overwrite``
    replaces it."""
    same = trained_like(out, cfg)
    other_rows = same and _other_rows(out, store)
    if same is None or ((not same or other_rows) and overwrite):
        return False
    if other_rows:  # it was kept as if trained on them
        raise ConfigError(
            f"--resume: '{out}' holds a complete SAE trained on other rows than those of "
            f"'{store.path}' ({other_rows}). Pass --overwrite to train it again on them, or "
            "choose another --out."
        )
    if same:  # a kept SAE whose weights were damaged since stopped the call after the rest
        try:  # were trained, in safetensors' words (or json's traceback for metrics.jsonl)
            _load(out)
        except AtlasError as e:
            if overwrite:
                return False
            raise ConfigError(
                f"--resume: '{out}' holds a complete SAE whose files are damaged "
                f"({str(e).rstrip('.')}). Pass --overwrite to train it again, or choose "
                "another --out."
            ) from None
        return True
    edited = edited_since(out)
    if edited is not None:
        raise ConfigError(
            f"--resume: '{out}' holds a complete SAE whose cfg.json is not the SAE its "
            f"training made ({edited}): it was edited since. Pass --overwrite to train it "
            "again, or choose another --out."
        )
    raise ConfigError(
        f"--resume: '{out}' holds a complete SAE that was not trained with these settings "
        f"and seed {cfg.seed}. Pass --overwrite to train it again, or choose another --out."
    )


def _other_rows(out: Path, store: ActivationStore) -> str | None:
    """How the rows the SAE in ``out`` records differ from ``store``'s, or None: their
    digest, or (an SAE from before it was recorded) the store's real path."""
    meta = json.loads((out / CFG).read_text()).get("metadata") or {}
    recorded = meta.get("store_layers")
    if isinstance(recorded, list):  # recorded since December 2026
        by_name = {l.name: [l.name, l.start, l.stop] for l in store.layers}
        names = [entry[0] if isinstance(entry, list) and entry else entry for entry in recorded]
        # an entry edited to a dict ended the resume in "unhashable type: 'dict'"
        now = [by_name.get(name) if isinstance(name, str) else None for name in names]
        if now != recorded:
            return f"its layers' columns were {recorded}, they are {now} now"
    if meta.get("rows_digest") is not None:
        mine = rows_digest(store)
        return (
            None
            if meta["rows_digest"] == mine
            else f"rows digest {meta['rows_digest']}, now {mine}"
        )
    here = str(Path(store.path).resolve())
    return None if meta.get("store") in (None, here) else f"store '{meta['store']}'"


def _check_unfinished(outs: list[Path], told: bool) -> None:
    """Refuse, advising --resume, to start an ensemble whose first SAE is complete and
    another is not (without ``told``: --resume or --overwrite): a `train --seeds N`
    killed after its first SAE was saved was told only of --overwrite, which trains the
    finished ones again, where --resume keeps them and trains the rest."""
    unfinished = [o for o in outs[1:] if not _complete(o)]
    if told or not unfinished or not _complete(outs[0]):
        return
    raise ConfigError(
        f"'{outs[0]}' already holds an SAE, but '{unfinished[0]}' holds no complete one "
        f"(a `--seeds {len(outs)}` training stopped before it finished). Pass --resume to "
        "keep the SAEs finished with these settings and train the rest, or --overwrite to "
        "train them all again."
    )


def _check_out(
    out: Path, i: int, n: int, cfg: TrainConfig, overwrite: bool, resume: bool, ranks: int
) -> None:
    """``out`` can take member ``i``; with ``resume``, its checkpoint (if any) was made
    with ``cfg`` on as many ranks, so that no member is trained before a later one is
    refused."""
    try:
        check_sae_out(out, overwrite=overwrite, resume=resume)
        if resume and not overwrite and (out / CHECKPOINT).exists():  # else it starts again
            load_checkpoint(out, {"train_config": cfg.to_json(), "world_size": ranks}, partial=True)
    except ConfigError as e:
        if i == 0:
            raise
        raise ConfigError(
            f"--seeds {n} also writes the SAE with seed {cfg.seed} to '{out}': {e}"
        ) from e


def _load(path: Path) -> TrainResult:
    """A member kept from an earlier run, as :func:`train_sae` returned it."""
    sae = SparseAutoencoder.load(path)
    file = path / METRICS
    lines = file.read_text().splitlines() if file.is_file() else []
    metrics = []
    for n, line in enumerate(lines, 1):
        try:
            record = json.loads(line) if line.strip() else {}
        except ValueError as e:
            raise SAEFileError(f"line {n} of '{file}' is not JSON: {e}") from None
        if not isinstance(record, dict):
            raise SAEFileError(f"line {n} of '{file}' is not a record of metrics")
        if record:
            metrics.append(record)
    summary = dict(sae.cfg.metadata or {})
    final = summary.get("final")
    # a `final` edited in cfg.json (emptied, a text, an FVU of "x") ended `train --resume`
    # in a KeyError or TypeError traceback once the rest were trained
    figures = ("fvu", "l0", "dead_fraction")
    if not isinstance(final, dict) or not all(_is_number(final.get(k)) for k in figures):
        raise SAEFileError(
            f"'{path / CFG}' records the final figures of its training (`metadata.final`) as "
            f"{str(final)[:60]!r}, not the numbers {list(figures)} training writes: it was "
            "edited"
        )
    if not (isinstance(summary.get("tokens"), int) and not isinstance(summary["tokens"], bool)):
        # read as a run past --dead-window: "dead 0.0%" of a run that measured none
        raise SAEFileError(
            f"'{path / CFG}' records the rows it was trained on (`metadata.tokens`) as "
            f"{str(summary.get('tokens'))[:60]!r}, not a whole number: it was edited"
        )
    return TrainResult(sae, metrics, summary, path)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
