"""Where each stage of a run writes, and what marks its output complete.

Each check follows how the stage itself writes its files:

- store: the directory is renamed into place when complete, ``manifest.json``
  in it (:mod:`saeatlas.store.writer`).
- sweep: ``sweep.json`` is written after every member is trained and evaluated.
- SAE: ``cfg.json`` and the weights, then ``metrics.jsonl``, and the training
  checkpoint is removed (:func:`saeatlas.train.train_sae`).
- atlas: ``atlas.json`` is written last (:meth:`saeatlas.structure.Atlas.save`);
  the ablation adds ``summary["ablation"]`` to it.
- report: ``report.html``, newer than the ``atlas.json`` it shows.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..sae.io import CFG, WEIGHTS
from ..store.manifest import MANIFEST
from ..structure.atlas import ATLAS_JSON, OPTIONAL_TABLES, TABLES
from ..sweep.sweep import SWEEP_JSON, SWEEPABLE
from ..train.checkpoint import CHECKPOINT
from ..train.trainer import METRICS

REPORT_HTML = "report.html"
FIGURES = "figures"
CONFIG_YAML = "config.yaml"
RUN_JSON = "run.json"


@dataclass(frozen=True)
class RunPaths:
    """The layout of a run directory."""

    out: Path

    @property
    def store(self) -> Path:
        return self.out / "store"

    @property
    def sweep(self) -> Path:
        return self.out / "sweep"

    @property
    def sae(self) -> Path:
        return self.out / "sae"

    def seed_sae(self, i: int) -> Path:
        """The ``i``-th extra seed SAE (``i`` >= 1)."""
        return self.out / "sae-seeds" / f"seed-{i}"

    @property
    def atlas(self) -> Path:
        return self.out / "atlas"

    @property
    def report(self) -> Path:
        return self.atlas / REPORT_HTML

    @property
    def config(self) -> Path:
        return self.out / CONFIG_YAML

    @property
    def state(self) -> Path:
        return self.out / RUN_JSON


def store_complete(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def sweep_complete(path: Path) -> bool:
    try:
        json.loads((path / SWEEP_JSON).read_text())
    except (OSError, ValueError):
        return False
    return True


def sae_complete(path: Path) -> bool:
    return (
        all((path / f).is_file() for f in (CFG, WEIGHTS, METRICS))
        and not (path / CHECKPOINT).exists()
    )


def atlas_summary(path: Path) -> dict | None:
    """``atlas.json`` of a complete atlas, or None."""
    try:
        summary = json.loads((path / ATLAS_JSON).read_text())
    except (OSError, ValueError):
        return None
    if not all((path / f"{t}.parquet").is_file() for t in TABLES):
        return None
    return summary


def report_complete(atlas_dir: Path) -> bool:
    html, meta = atlas_dir / REPORT_HTML, atlas_dir / ATLAS_JSON
    return html.is_file() and meta.is_file() and html.stat().st_mtime >= meta.stat().st_mtime


def clear_sae(path: Path) -> None:
    """Make an SAE directory incomplete before it is trained again (``cfg.json`` first)."""
    for name in (CFG, METRICS, WEIGHTS):
        (path / name).unlink(missing_ok=True)


def clear_atlas(path: Path) -> None:
    """Remove an atlas and its report from ``path`` (``atlas.json`` first), leaving
    files that are not the atlas's."""
    if not path.is_dir():
        return
    (path / ATLAS_JSON).unlink(missing_ok=True)
    for name in TABLES + OPTIONAL_TABLES:
        (path / f"{name}.parquet").unlink(missing_ok=True)
    (path / REPORT_HTML).unlink(missing_ok=True)
    if (path / FIGURES).is_dir():
        shutil.rmtree(path / FIGURES)


def clear_sweep(path: Path) -> None:
    """Remove a sweep directory before the sweep runs again; refuse when it holds
    anything a sweep does not write."""
    if not path.exists():
        return
    ours = {SWEEP_JSON, "pareto.json"}
    foreign = [
        p.name
        for p in path.iterdir()
        if p.name not in ours
        and not (p.is_dir() and any(p.name.startswith(f"{o}-") for o in SWEEPABLE))
        and not p.name.startswith(".tmp-")
    ]
    if foreign:
        raise ConfigError(
            f"'{path}' holds files a sweep does not write ({sorted(foreign)[:5]}); move them "
            "away or choose another --out."
        )
    shutil.rmtree(path)


def copy_sae(src: Path, dst: Path) -> None:
    """Copy an SAE directory's files (``cfg.json`` last, so a partial copy is incomplete)."""
    dst.mkdir(parents=True, exist_ok=True)
    clear_sae(dst)
    for name in (WEIGHTS, METRICS, CFG):
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
