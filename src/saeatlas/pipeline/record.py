"""``OUT/run.json``, the run's record: per stage, the fingerprint of the settings it ran
with, the files its capture read (:mod:`.stamps`), whether it finished and the stamp of
its output (:class:`RunState`); and how :mod:`.run` tells a stage's output complete and
unchanged (:func:`stage_complete`, :func:`stage_stamp`)."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..capture.nnsight import unwrap_model
from ..errors import ConfigError
from ..sae.files import CFG
from ..store.atomic import atomic_write_json, partial_dir
from ..store.manifest import MANIFEST
from ..store.partial import progress_files
from ..structure.atlas import ATLAS_JSON
from ..sweep.sweep import SWEEP_JSON
from ..train.checkpoint import CHECKPOINT
from .config import RunConfig
from .outputs import (
    RunPaths,
    analysis_stamp,
    atlas_summary,
    output_stamp,
    report_complete,
    sae_complete,
    store_complete,
    sweep_complete,
)


def _section(x: Any) -> Any:
    return x.to_json() if hasattr(x, "to_json") else asdict(x)


def stage_settings(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """Per stage, the settings its output depends on (earlier stages aside), as JSON
    reads them back."""
    parts = {
        "capture": {
            "model": cfg.model,
            "model_args": cfg.model_args,
            "inputs": cfg.inputs,
            "inputs_args": cfg.inputs_args,
            "labels": cfg.labels,
            "layers": list(cfg.layers),
            "capture": _section(cfg.capture),
        },
        "sweep": {"sweep": _section(cfg.sweep), "train": _section(cfg.train)},
        "train": {
            "sweep": _section(cfg.sweep),
            "train": _section(cfg.train),
            "stability": _section(cfg.stability),
        },
        "analyze": {"analyze": _section(cfg.analyze), "stability": _section(cfg.stability)},
        "ablation": {"ablation": _section(cfg.ablation)},
        "report": {"report": _section(cfg.report)},
    }
    if cfg.model_class != "auto":  # recorded only when set: runs made before it stay equal
        parts["capture"]["model_class"] = cfg.model_class
    return json.loads(json.dumps(parts, sort_keys=True, default=str))


def fingerprints(cfg: RunConfig) -> dict[str, str]:
    """Per stage, a hash of its :func:`stage_settings`."""
    return {
        name: hashlib.sha256(json.dumps(p, sort_keys=True).encode()).hexdigest()[:16]
        for name, p in stage_settings(cfg).items()
    }


def rank_settings(config: RunConfig) -> dict[str, object]:
    """The settings the ranks of a run must share, by name (`train.k`): every section's
    and those of the model and inputs but their paths (the capture compares what they
    hold by its fingerprints; another node may see them elsewhere) and `threads`."""
    raw = config.to_dict()
    keys = ("layers", "model_args", "model_class", "inputs_args")
    out = {f"`{k}`": raw[k] for k in keys if k in raw}
    for name, section in raw.items():
        if isinstance(section, dict) and name not in ("model_args", "inputs_args"):
            out.update({f"`{name}.{k}`": v for k, v in section.items()})
    return out


def changed_settings(old: Any, new: Any, name: str = "") -> list[str]:
    """The settings that differ between two of :func:`stage_settings`'s values, as
    ``section.field`` with both values (one entry per field, nested ones flattened)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            d
            for k in sorted(set(old) | set(new))
            for d in changed_settings(old.get(k), new.get(k), f"{name}.{k}" if name else k)
        ]
    # as a run config writes them (null, true), not as Python shows them (None, True)
    return [] if old == new else [f"`{name}` was {_shown(old)}, now {_shown(new)}"]


def _shown(value: Any) -> str:
    return json.dumps(value, default=str)


def _as_read(settings: Any) -> Any:
    """A stage's settings less those it does not read: a sweep that is off decides
    nothing but that it is off (its `values` edited refused the training as changed)."""
    sweep = settings.get("sweep") if isinstance(settings, dict) else None
    if isinstance(sweep, dict) and sweep.get("enabled") is False:
        return {**settings, "sweep": {"enabled": False}}
    return settings


def setting_changes(record: dict[str, Any], fingerprint: str, settings: Any) -> list[str] | None:
    """None when the stage of ``record`` ran with ``settings`` (its :func:`fingerprints`
    entry is ``fingerprint``), else the settings that differ (none named when the record
    holds no settings). Settings it does not read are not compared (:func:`_as_read`),
    and a record of the same settings under another fingerprint is of them."""
    if isinstance(record.get("outdated"), str):  # RunState.outdate
        return [record["outdated"]]
    if record.get("fingerprint") == fingerprint:
        return None
    old = record.get("settings")
    if not isinstance(old, dict):
        return []
    return changed_settings(_as_read(old), _as_read(settings)) or None


def code_files(cfg: RunConfig, model: torch.nn.Module) -> list[str]:
    """The Python files a capture's rows come from beyond the files of the config: the
    modules of ``package.module:function`` specs (model, inputs, labels), the modules
    loaded from the folder of those and of ``file.py:function`` specs, and those that
    define the model's modules, torch's own aside. A model file that imports its blocks
    from another file, or a model of a package, edited since (a ReLU made a Tanh) left
    ``saeatlas run`` skipping the capture, the store holding the old model's rows."""
    files, folders = set(), set()
    for spec in (cfg.model, cfg.inputs, cfg.labels):
        target = (spec or "").rpartition(":")[0]
        module = sys.modules.get(target)
        files.add(getattr(module, "__file__", None))
        where = target if target.endswith(".py") else getattr(module, "__file__", None)
        if where:
            folders.add(Path(where).resolve().parent)
    # and the modules those files import from their own folder: a helper of the model
    # file (`helpers.act()` returning a ReLU, edited to a Tanh) left the capture skipped
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if (
            isinstance(file, str)
            and file.endswith(".py")
            and Path(file).resolve().parent in folders
        ):
            files.add(file)
    model = unwrap_model(model)[0]  # an nnsight wrapper's module
    modules = model.modules() if isinstance(model, torch.nn.Module) else ()
    for cls in {type(m) for m in modules}:
        if not cls.__module__.startswith("torch."):
            try:
                files.add(inspect.getsourcefile(cls))
            except TypeError:  # a class of a built-in module
                continue
    return sorted(os.path.abspath(f) for f in files if f and Path(f).is_file())


#: The fields of a stage's record that :class:`RunState` writes, with their kinds (a
#: field left out is not checked: ``files`` is the capture's, and ``stamp`` a finished
#: stage's).
RECORD_FIELDS: dict[str, tuple[type, ...]] = {
    "fingerprint": (str,),
    "settings": (dict,),
    "complete": (bool,),
    "files": (dict,),
    "stamp": (str, type(None)),
}


def _check_record(name: str, record: Any) -> None:
    """Raise TypeError naming the field of stage ``name``'s record that is of another
    kind than :class:`RunState` writes: a fingerprint edited to null was refused as
    settings that changed without naming any, `complete: "no"` was read as finished, and
    `files: null` ended in an AttributeError traceback."""
    if not isinstance(record, dict):
        raise TypeError(f"the record of stage {name!r} is not an object")
    if "fingerprint" not in record:
        raise TypeError(f"the record of stage {name!r} has no `fingerprint`")
    for field, kinds in RECORD_FIELDS.items():
        if field in record and not isinstance(record[field], kinds):
            raise TypeError(
                f"`stages.{name}.{field}` is {json.dumps(record[field])}, not "
                f"{' or '.join('null' if k is type(None) else _KIND_NAMES[k] for k in kinds)}"
            )


_KIND_NAMES = {str: "a text", dict: "an object", bool: "true or false"}


def _read_record(path: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    """``run.json``'s format version and its stages' records, each checked (only for a
    version this saeatlas reads)."""
    try:
        raw = json.loads(path.read_text())
        version = raw.get("format_version", RUN_FORMAT)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"`format_version` is {json.dumps(version)}, not 1 or more")
        stages = raw["stages"]
        for name, record in stages.items() if version <= RUN_FORMAT else ():
            _check_record(name, record)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        # no record would keep every complete output "as it is", whatever its settings
        raise ConfigError(
            f"'{path}' is not a run record saeatlas can read ({type(e).__name__}: {e}); "
            "delete it to keep the run's complete outputs as they are (each stage says "
            "so), or choose a new --out."
        ) from e
    return version, stages


#: The version of ``run.json`` this saeatlas writes and reads (and every older one).
RUN_FORMAT = 1


class RunState:
    """``OUT/run.json``: per stage, the fingerprint it ran with and whether it finished."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stages: dict[str, dict[str, Any]] = {}
        if not path.exists():
            return
        version, stages = _read_record(path)
        if version > RUN_FORMAT:  # read as this version's, a newer record was misread
            raise ConfigError(
                f"'{path}' has format_version {version}; this saeatlas reads run records up "
                f"to {RUN_FORMAT}. Upgrade saeatlas, or choose a new --out."
            )
        self.stages = stages

    def start(self, name: str, fingerprint: str, settings: dict, files: dict | None = None) -> None:
        self.stages[name] = {"fingerprint": fingerprint, "settings": settings, "complete": False}
        if files is not None:
            self.stages[name]["files"] = files
        self._write()

    def outdate(self, name: str, upstream: str) -> None:
        """Mark the output of ``name``, a stage that is off, as made from what the
        ``upstream`` stage made before it ran again: a sweep kept while the store was
        captured again was skipped as complete once the sweep was on again, and the final
        SAE trained with the knee of another store's rows."""
        if name in self.stages and not self.stages[name].get("outdated"):
            self.stages[name]["outdated"] = f"the {upstream} stage ran again while it was off"
            self._write()

    def finish(
        self, name: str, seconds: float, note: str, stamp: str | None, files: dict | None = None
    ) -> None:
        """Mark ``name`` finished, with the stamp of its output (:func:`stage_stamp`) and,
        for the capture, the stamps of the files it read (:func:`source_files`)."""
        self.stages[name].update(complete=True, seconds=round(seconds, 2), note=note, stamp=stamp)
        if files is not None:
            self.stages[name]["files"] = files
        self._write()

    def _write(self) -> None:
        atomic_write_json(self.path, {"format_version": RUN_FORMAT, "stages": self.stages})


def stage_record(
    state: RunState, name: str, paths: RunPaths, settings: dict[str, dict]
) -> dict[str, Any] | None:
    """Stage ``name``'s record in ``state``; for an analysis without one (``run.json``
    deleted, an atlas written by hand or by an older run), what its ``atlas.json`` says
    of the settings that made it, when they are not the run's (``settings``,
    :func:`stage_settings`): such an atlas was kept "as is" under the run's settings, and
    its report with it. None when neither says anything."""
    record = state.stages.get(name)
    if record is not None or name != "analyze":
        return record
    summary = atlas_summary(paths.atlas)
    made = summary.get("config") if isinstance(summary, dict) else None
    if not isinstance(made, dict) or made == settings[name]["analyze"]:
        return None
    return {"fingerprint": None, "settings": {**settings[name], "analyze": made}, "complete": True}


def stage_complete(name: str, paths: RunPaths, cfg: RunConfig) -> bool:
    if name == "capture":
        return store_complete(paths.store)
    if name == "sweep":
        return sweep_complete(paths.sweep)
    if name == "train":
        n = cfg.n_trained_seeds
        return sae_complete(paths.sae) and all(
            sae_complete(paths.seed_sae(i)) for i in range(1, n + 1)
        )
    summary = atlas_summary(paths.atlas)
    if name == "analyze":
        return summary is not None
    if name == "ablation":
        return summary is not None and "ablation" in summary
    return summary is not None and report_complete(paths.atlas)


def stage_has_output(name: str, paths: RunPaths, cfg: RunConfig) -> bool:
    """Whether stage ``name`` has something in the run directory that running it would
    replace: its complete output, an interrupted capture's committed shards or a
    training checkpoint."""
    if name == "capture" and progress_files(partial_dir(paths.store)):
        return True
    if name == "train":
        saes = [paths.sae, *paths.out.glob("sae-seeds/seed-*")]
        if any((p / CHECKPOINT).is_file() for p in saes):
            return True
    return stage_complete(name, paths, cfg)


def stage_stamp(name: str, paths: RunPaths, cfg: RunConfig) -> str | None:
    """The stamp of stage ``name``'s output: the file it writes last (every SAE's); the
    analysis's is its ``atlas.json`` less the ablation's entries."""
    if name == "capture":
        files = [paths.store / MANIFEST]
    elif name == "sweep":
        files = [paths.sweep / SWEEP_JSON]
    elif name == "train":
        saes = [paths.sae, *(paths.seed_sae(i) for i in range(1, cfg.n_trained_seeds + 1))]
        files = [p / CFG for p in saes]
    elif name == "analyze":
        return analysis_stamp(paths.atlas)
    elif name == "ablation":
        files = [paths.atlas / ATLAS_JSON]
    else:
        files = [paths.report]
    return output_stamp(files)
