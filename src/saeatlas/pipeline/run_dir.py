"""What a run refuses in its directory before its first stage, and what
``saeatlas run --check`` refuses with it: outputs that an earlier run made with other
settings (or from files edited since, or replaced since), which only ``--overwrite``
replaces, and a file or a folder of other files where a stage's output goes."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .config import RunConfig
from .outputs import RunPaths, check_run_out, check_stage_outputs
from .record import (
    RunState,
    fingerprints,
    setting_changes,
    stage_complete,
    stage_has_output,
    stage_record,
    stage_settings,
    stage_stamp,
)
from .stages import report_available
from .stamps import files_edited

#: The stages, in order.
STAGES = ("capture", "sweep", "train", "analyze", "ablation", "report")
#: Why a capture runs again (or is refused) when a file it read was edited in place.
EDITED = "its model, inputs or labels file changed since it ran (or the code they come from)"


def _enabled(name: str, cfg: RunConfig) -> str | None:
    """None when the stage is on, else why it is off."""
    if name == "sweep" and not cfg.sweep.enabled:
        return "`sweep.enabled` is false: the final SAE uses `train`'s own sparsity"
    if name == "ablation" and not cfg.ablation.enabled:
        return "`ablation.enabled` is false"
    if name == "report":
        if not cfg.report.enabled:
            return "`report.enabled` is false"
        return report_available()
    return None


_OUTPUT = {
    "capture": "store",
    "sweep": "sweep",
    "train": "sae",
    "analyze": "atlas",
    "ablation": "atlas",
    "report": "report",
}


def _refuse_changed(
    config: RunConfig,
    paths: RunPaths,
    state: RunState,
    prints: dict[str, str],
    settings: dict[str, dict],
) -> None:
    """Raise :class:`ConfigError` when a stage that is on would replace what is in the
    run directory, which ``overwrite`` alone allows: its output (or an interrupted run
    of it) made with other settings or, for the capture, from a model, inputs or labels
    file edited since; or its output replaced since this run wrote it (``saeatlas
    capture --overwrite`` into the run's store: the user's, not the run's)."""
    changed = []
    for name in STAGES:
        record = stage_record(state, name, paths, settings)
        if _enabled(name, config) is not None or record is None:
            continue
        where = getattr(paths, _OUTPUT[name])
        changes = setting_changes(record, prints[name], settings[name])
        if changes is not None:
            if not stage_has_output(name, paths, config):
                continue
            what = "; ".join(changes) or "its settings changed"
        elif name == "capture" and files_edited(config, record):
            if not stage_has_output(name, paths, config):
                continue
            what = EDITED
        elif record.get("stamp") is not None and stage_complete(name, paths, config):
            if record["stamp"] == stage_stamp(name, paths, config):
                continue
            what = "replaced since this run wrote it"
        else:
            continue
        changed.append(f"{where} ({name}: {what})")
    if changed:
        raise ConfigError(
            f"'{paths.out}' holds outputs that this run would replace (with the outputs made "
            f"from them): {'; '.join(changed)}. Pass --overwrite (`overwrite=True`) to "
            "replace them, or choose another --out to keep both."
        )


def seed_sae_dirs(config: RunConfig, paths: RunPaths) -> list[Path]:
    """The seed SAEs the run's train stage writes."""
    return [paths.seed_sae(i) for i in range(1, config.n_trained_seeds + 1)]


def check_run_dir(config: RunConfig, out: Path, overwrite: bool) -> None:
    """Refuse what the run would refuse in ``out`` before its first stage (`run --check`
    called valid a directory whose outputs of other settings, or a folder of the user's
    files where the atlas goes, the run then refused)."""
    paths = RunPaths(out)
    check_run_out(out)
    state = RunState(paths.state)  # a damaged run.json, as the run reads it
    if not overwrite:
        _refuse_changed(config, paths, state, fingerprints(config), stage_settings(config))
    check_stage_outputs(paths, seed_sae_dirs(config, paths), config.sweep.enabled)
