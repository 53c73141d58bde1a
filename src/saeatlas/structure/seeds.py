"""SAEs trained like a given one with other seeds, for module stability across seeds.

``saeatlas analyze --seeds N`` needs N - 1 SAEs besides the one analysed. They
are trained with the analysed SAE's own training settings (recorded in its
``cfg.json`` by :func:`saeatlas.train.train_sae`), the seed shifted by 1, 2,
..., into sibling directories ``<sae>-seed<s>``; a complete one already there
is reused, so a second ``analyze`` does not retrain.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..errors import ConfigError
from ..sae import SparseAutoencoder
from ..sae.io import CFG, WEIGHTS
from ..store import ActivationStore
from ..train.checkpoint import CHECKPOINT


def seed_sae_dir(sae_dir: str | Path, shift: int) -> Path:
    """Where the SAE trained with seed ``seed + shift`` lives: ``<sae>-seed<shift>``."""
    sae_dir = Path(sae_dir)
    return sae_dir.with_name(f"{sae_dir.name}-seed{shift}")


def train_seed_saes(
    sae_dir: str | Path,
    store: ActivationStore | str | Path,
    n_seeds: int,
    *,
    given: list[Path] | tuple[Path, ...] = (),
    progress: bool = False,
) -> list[Path]:
    """Directories of ``n_seeds - 1`` SAEs trained like ``sae_dir`` with other seeds.

    The SAEs in ``given`` count first; the rest are reused from ``<sae>-seed<s>``
    when complete, or trained there.
    """
    from ..train import TrainConfig, train_sae

    if n_seeds < 1:
        raise ConfigError(f"--seeds must be at least 1 (the SAE itself), got {n_seeds}.")
    out = [Path(p) for p in given][: n_seeds - 1]
    missing = n_seeds - 1 - len(out)
    if missing <= 0:
        return out
    sae = SparseAutoencoder.load(sae_dir)
    settings = (sae.cfg.metadata or {}).get("train_config")
    if not settings:
        raise ConfigError(
            f"'{sae_dir}' does not record how it was trained (not trained by saeatlas?), so "
            "--seeds cannot train more like it. Train them yourself and pass them with "
            "--seed-sae DIR ..."
        )
    base = TrainConfig.from_json(settings)
    shift = 0
    while missing:
        shift += 1
        target = seed_sae_dir(sae_dir, shift)
        if not ((target / CFG).is_file() and (target / WEIGHTS).is_file()):
            train_sae(
                store,
                replace(base, seed=base.seed + shift),
                target,
                resume=(target / CHECKPOINT).is_file(),  # an interrupted run goes on
                progress=progress,
            )
        out.append(target)
        missing -= 1
    return out
