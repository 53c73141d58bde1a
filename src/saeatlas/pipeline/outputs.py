"""Where each stage of a run writes, and what marks its output complete.

Each check follows how the stage itself writes its files:

- store: the directory is renamed into place when complete, ``manifest.json``
  in it (:mod:`saeatlas.store.writer`).
- sweep: ``sweep.json`` is written after every member is trained and evaluated.
- SAE: ``cfg.json`` and the weights, then ``metrics.jsonl``, and the training
  checkpoint is removed (:func:`saeatlas.train.train_sae`).
- atlas: ``atlas.json`` is written last (:meth:`saeatlas.structure.Atlas.save`);
  the ablation adds ``summary["ablation"]`` to it.
- report: ``report.html``, newer than every file of the atlas it shows (a table
  edited by hand since is shown by a new report).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from .._world import is_main_process
from ..errors import ConfigError
from ..sae.files import CFG, WEIGHTS
from ..sae.io import check_sae_out
from ..store.atomic import check_output_dir, recover_dir, replacing_dir
from ..store.lock import output_lock
from ..store.manifest import MANIFEST
from ..store.merge import recover_store
from ..store.partial import is_store_file
from ..structure.atlas import ATLAS_JSON, OPTIONAL_TABLES, TABLES, check_atlas_out
from ..sweep.sweep import SWEEP_JSON, check_sweep_out
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


def _recovered(path: Path, recover: Callable[[Path], None] = recover_dir) -> Path:
    """``path`` after finishing a directory swap a kill interrupted (the one instant an
    output is absent, :func:`~saeatlas.store.atomic.recover_dir`; a store's
    :func:`~saeatlas.store.merge.recover_store` also puts in place one that a kill
    stopped before its swap). Under ``torchrun``
    rank 0 alone recovers (it holds the outputs' locks; it has recovered before the
    other ranks look, at its decisions): two ranks taking one lock at once made one of
    them fail with "is being written by process" (the other rank)."""
    if is_main_process():
        with output_lock(path):
            recover(path)
    return path


#: The file that marks a directory as one stage's own output, never a run directory.
STAGE_OUTPUTS = {
    MANIFEST: "an activation store",
    SWEEP_JSON: "a sweep",
    CFG: "an SAE",
    ATLAS_JSON: "an atlas",
}


def run_dir_path(out: str | os.PathLike | None) -> Path | None:
    """``out`` (``--out``) as a path; an empty one (`--out "$DIR"` with DIR unset) is
    refused: it read as the current folder, and the whole run was written among its files."""
    if out is not None and not os.fspath(out).strip():
        raise ConfigError(
            f"--out {os.fspath(out)!r} names no folder; give the run directory, or leave --out "
            "out for the default."
        )
    return None if out is None else Path(out)


def check_run_out(out: Path) -> None:
    """Refuse a run directory that is a store, sweep, SAE or atlas: the run would write
    its ``config.yaml`` and its stages' folders among that output's files."""
    for marker, what in STAGE_OUTPUTS.items():
        if (out / marker).is_file():
            raise ConfigError(
                f"'{out}' is {what} ({marker}), not a run directory; give --out a new folder "
                "(the run writes its store, SAE and atlas inside it)."
            )


def check_stage_outputs(paths: RunPaths, seed_saes: list[Path], sweep: bool) -> None:
    """Refuse, before the first stage, an output that a stage would refuse when it
    starts (a file, or a folder of other files, where the store, the sweep, an SAE or
    the atlas goes): the run found it only once the stages before it had run (`OUT/atlas`, a
    link to a folder of the user's, after the capture and the training). Complete
    outputs are not looked at: they are kept, or replaced by their own stage."""
    if not (paths.store / MANIFEST).is_file():  # refused by the capture, after `--check`
        check_output_dir(paths.store, "a store", "a store's", MANIFEST, is_store_file, True)
    if not (paths.atlas / ATLAS_JSON).is_file():
        check_atlas_out(paths.atlas, overwrite=True)
    for sae in (paths.sae, *seed_saes):
        if not (sae / CFG).is_file():
            check_sae_out(sae, overwrite=True, resume=True)
    if sweep and not (paths.sweep / SWEEP_JSON).is_file():
        check_sweep_out(paths.sweep, overwrite=True)
    for name in (CONFIG_YAML, RUN_JSON):  # "Cannot write or read '.tmp-config.yaml-...'"
        if (paths.out / name).exists() and not (paths.out / name).is_file():
            raise ConfigError(
                f"'{paths.out / name}' is not a file: the run writes its {name} there. Move "
                "it away, or choose another --out."
            )


def check_config_ours(paths: RunPaths) -> None:
    """Refuse to replace an ``OUT/config.yaml`` that no run wrote: one beside a run's
    ``run.json``, or holding ``out: .`` as a run writes it, is the run's own record;
    another (`saeatlas run a.yaml --out .` in a folder of the user's, whose own
    config.yaml was replaced without a word) is the user's."""
    if not paths.config.is_file() or paths.state.exists():
        return
    try:
        raw = yaml.safe_load(paths.config.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        raw = None
    if isinstance(raw, dict) and raw.get("out") == ".":
        return
    raise ConfigError(
        f"'{paths.config}' is a file that no run wrote, where the run writes its config; "
        "move it away, or choose another --out (a new folder for the run)."
    )


def store_complete(path: Path) -> bool:
    return (_recovered(path, recover_store) / MANIFEST).is_file()


def sweep_complete(path: Path) -> bool:
    _recovered(path)
    try:
        json.loads((path / SWEEP_JSON).read_text())
    except (OSError, ValueError):
        return False
    return True


def sae_complete(path: Path) -> bool:
    _recovered(path)
    return (
        all((path / f).is_file() for f in (CFG, WEIGHTS, METRICS))
        and not (path / CHECKPOINT).exists()
    )


def atlas_summary(path: Path) -> dict | None:
    """``atlas.json`` of a complete atlas, or None."""
    _recovered(path)
    try:
        summary = json.loads((path / ATLAS_JSON).read_text())
    except (OSError, ValueError):
        return None
    if not all((path / f"{t}.parquet").is_file() for t in TABLES):
        return None
    return summary


def report_complete(atlas_dir: Path) -> bool:
    """Whether ``report.html`` shows the atlas as it is: it is newer than ``atlas.json``
    and every table (a ``modules.parquet`` edited by hand since left the run's report
    showing the old values, its stage skipped as complete)."""
    html, meta = atlas_dir / REPORT_HTML, atlas_dir / ATLAS_JSON
    if not (html.is_file() and meta.is_file()):
        return False
    shown = [meta, *(atlas_dir / f"{t}.parquet" for t in TABLES + OPTIONAL_TABLES)]
    newest = max(f.stat().st_mtime for f in shown if f.is_file())
    return html.stat().st_mtime >= newest


def output_stamp(files: list[Path]) -> str | None:
    """A hash of ``files``' bytes (None when one is missing): whether an output is still
    the one the run wrote, or was replaced since (by hand, or by another command)."""
    digest = hashlib.sha256()
    for f in files:
        try:
            digest.update(f.read_bytes())
        except OSError:
            return None
    return digest.hexdigest()[:16]


#: What the ablation writes into ``atlas.json`` (its results, and the verdict again).
ABLATION_KEYS = (
    "ablation",
    "verdict",
    "message",
    "significant",
    "n_modules",
    "n_significant_modules",
    "n_sae_only_modules",
    "n_causal_modules",
)


def analysis_stamp(atlas: Path) -> str | None:
    """:func:`output_stamp` of the analysis in the atlas ``atlas``: its ``atlas.json``
    less what the ablation changes there, so that the ablation's rewrite keeps it."""
    summary = atlas_summary(atlas)
    if not isinstance(summary, dict):
        return None
    own = {k: v for k, v in summary.items() if k not in ABLATION_KEYS}
    return hashlib.sha256(json.dumps(own, sort_keys=True, default=str).encode()).hexdigest()[:16]


def copy_sae(src: Path, dst: Path) -> None:
    """Copy an SAE directory's files; ``dst`` is replaced in one step."""
    with replacing_dir(dst) as new:
        for name in (WEIGHTS, METRICS, CFG):
            if (src / name).exists():
                shutil.copy2(src / name, new / name)
