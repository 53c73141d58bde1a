"""``run_pipeline(config, out) -> RunResult``: capture, sweep, train, analyze, ablation and
report from one :class:`~.config.RunConfig`, into one run directory.

Stages whose output is already complete (see :mod:`.outputs`) are skipped, and
said so, unless their settings changed since they ran or an earlier stage ran
again. ``OUT/run.json`` records each stage's settings (a fingerprint),
whether it finished and a hash of its output (an output replaced since is made again); ``OUT/config.yaml`` is the config the run used, with
absolute paths, so ``saeatlas run OUT/config.yaml`` repeats it in place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch

from .._coordinator import Coordinator, run_ranks
from .._validation import check_config_argument, check_flag_arguments, check_path_argument, shown
from ..errors import AtlasError, ConfigError
from ..store.atomic import atomic_write_bytes, remove_killed_writes
from ..store.lock import output_lock
from ..structure import Atlas
from .config import RunConfig, load_run_config
from .outputs import (
    RunPaths,
    check_config_ours,
    check_run_out,
    check_stage_outputs,
    run_dir_path,
)
from .record import (
    RunState,
    code_files,
    fingerprints,
    rank_settings,
    setting_changes,
    stage_complete,
    stage_record,
    stage_settings,
    stage_stamp,
)
from .run_dir import _OUTPUT, EDITED, STAGES, _enabled, _refuse_changed, seed_sae_dirs
from .stages import (
    StageContext,
    chosen,
    run_ablation,
    run_analyze,
    run_capture,
    run_report,
    run_sweep,
    run_train,
)
from .stamps import files_edited, source_files

log = logging.getLogger(__name__)

RAN, SKIPPED, OFF = "ran", "skipped", "off"


@dataclass(frozen=True)
class StageOutcome:
    """What happened to one stage."""

    name: str
    status: str
    """``ran``, ``skipped`` (complete output kept) or ``off`` (disabled or unavailable)."""
    reason: str
    """Why it ran or was skipped, and what it did."""
    seconds: float = 0.0


@dataclass(frozen=True)
class RunResult:
    """A finished run: its directory, what each stage did, and the atlas."""

    out: Path
    config: RunConfig
    stages: list[StageOutcome]
    atlas: Atlas
    chosen: float | None
    """The sparsity value the sweep recommended (None without a sweep)."""

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.out)

    @property
    def report(self) -> Path | None:
        """The report page, when it was written."""
        return self.paths.report if self.paths.report.is_file() else None

    @property
    def skipped(self) -> list[str]:
        return [s.name for s in self.stages if s.status == SKIPPED]


_RUNNERS: dict[str, Callable[[StageContext], str]] = {
    "capture": run_capture,
    "sweep": run_sweep,
    "train": run_train,
    "analyze": run_analyze,
    "ablation": run_ablation,
    "report": run_report,
}

#: Stages that every rank of a ``torchrun`` run takes part in; rank 0 alone runs the others.
ON_EVERY_RANK = ("capture", "sweep", "train", "analyze", "ablation")


def check_run_arguments(config: object, out: object, name: str, **flags: object) -> None:
    """Refuse arguments of :func:`run_pipeline` and :func:`.check.check_run` of the wrong
    type: a config file's path ended in an AttributeError, a number as `out` in pathlib's
    TypeError, and `overwrite="no"` replaced the outputs of other settings (read by its
    truth; `check_run` called them valid)."""
    check_config_argument(name, config, RunConfig, reader="load_run_config")
    check_path_argument("out", out, optional=True)
    check_flag_arguments(**flags)


def run_pipeline(
    config: RunConfig,
    out: str | Path | None = None,
    *,
    progress: bool = True,
    on_stage: Callable[[StageOutcome], None] | None = None,
    timeout_s: float = 1800.0,
    overwrite: bool = False,
) -> RunResult:
    """Run every stage of ``config`` into ``out`` (default: ``config.out``).

    Layout: ``OUT/store``, ``OUT/sweep``, ``OUT/sae`` (and ``OUT/sae-seeds/seed-N``),
    ``OUT/atlas`` with ``report.html`` and ``figures/`` inside, plus
    ``OUT/config.yaml`` and ``OUT/run.json``.

    A stage is skipped when its output is complete, it finished with the same
    settings (or there is no record of it), and no earlier stage ran in this
    call; an interrupted capture or checkpointed training run with the same
    settings is continued. ``on_stage`` is told each stage's outcome as it happens.
    Outputs in ``out`` that a stage made with other settings (complete, or an
    interrupted capture or training run) are replaced only with ``overwrite``; else
    the run stops before it changes anything, naming the settings that differ.

    Under ``torchrun`` (or an initialised process group) every rank calls this alike:
    capture, sweep, training, analysis and the ablation run on every rank as they do
    on their own (:data:`ON_EVERY_RANK`; each rank ablates its share of the modules),
    and rank 0 alone locks ``out``, decides which stages run, writes the run's records
    and writes the report; the ranks meet after every stage. ``timeout_s``: seconds a
    rank waits for the others where they meet (rank 0's report included) before it
    stops with an error.
    """
    check_run_arguments(config, out, "config", progress=progress, overwrite=overwrite)
    if on_stage is not None and not callable(on_stage):
        raise ConfigError(
            f"`on_stage` must be a function of a StageOutcome, got {shown(on_stage)}."
        )
    out = run_dir_path(out)
    if out is None:
        if config.out is None:
            raise ConfigError(
                "No run directory: pass --out DIR (`out=`), or set `out` in the config."
            )
        out = config.out
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return run_ranks(
            "run",
            _group_device(config),
            timeout_s,
            lambda coord: _run(coord, config, RunPaths(Path(out)), progress, on_stage, overwrite),
        )
    finally:
        torch.set_num_threads(threads)


def _group_device(config: RunConfig) -> str:
    """``cuda`` when a stage runs there (the ranks' group is then NCCL's), else ``cpu``."""
    devices = (config.capture.device, config.train.device, config.analyze.device)
    return "cuda" if any(str(d or "").startswith("cuda") for d in devices) else "cpu"


def _run(
    coord: Coordinator,
    config: RunConfig,
    paths: RunPaths,
    progress: bool,
    on_stage: Callable[[StageOutcome], None] | None,
    overwrite: bool,
) -> RunResult:
    main = coord.world.is_main
    # One run per directory at a time (rank 0 holds the lock); each stage also locks
    # its own output.
    with output_lock(paths.out if main else None, holds_outputs=True):
        coord.check(None)
        # (ranks given other configs ran each stage until its own check stopped them)
        # and --overwrite: without it rank 0 meets the others once more, to refuse changes;
        # and --out: another rank's ran its stages into a folder rank 0 did not check, and
        # ended in "'B/atlas' does not exist" once rank 0 had skipped every stage
        coord.agree(
            {**rank_settings(config), "--overwrite": overwrite, "--out": str(paths.out)},
            "this run",
            "Every rank must run the same config with the same flags: give every rank the "
            "same command line.",
        )
        coord.from_main(lambda: check_run_out(paths.out))
        state = coord.from_main(lambda: RunState(paths.state))  # rank 0's alone is used
        state = state if main else None
        prints, settings = fingerprints(config), stage_settings(config)
        if not overwrite:  # before anything is written, config.yaml included
            coord.from_main(lambda: _refuse_changed(config, paths, state, prints, settings))
        # ... and no other command writes into it meanwhile: rank 0 holds the locks of
        # every output the stages write until the run ends (else `saeatlas train --out
        # OUT/sae` started while the sweep ran had its SAE replaced by the train stage).
        seeds = seed_sae_dirs(config, paths)
        outputs = (paths.store, paths.sweep, paths.sae, *seeds, paths.atlas)
        with output_lock(*(outputs if main else ())):
            coord.from_main(lambda: check_stage_outputs(paths, seeds, config.sweep.enabled))
            return _run_stages(coord, config, paths, state, prints, settings, progress, on_stage)


def _run_stages(
    coord: Coordinator,
    config: RunConfig,
    paths: RunPaths,
    state: RunState | None,
    prints: dict[str, str],
    settings: dict[str, dict],
    progress: bool,
    on_stage: Callable[[StageOutcome], None] | None,
) -> RunResult:
    """The stages of :func:`_run`, with its checks made and its locks held."""
    main = coord.world.is_main
    if main:
        paths.out.mkdir(parents=True, exist_ok=True)
        for path in (paths.state, paths.config):  # a killed run's, half-written
            remove_killed_writes(path)
        record = replace(config, out=".").dumps()
        if not _holds(paths.config, record):
            check_config_ours(paths)  # a file of the user's there was replaced
            atomic_write_bytes(paths.config, record.encode())
    ctx = StageContext(config, paths, progress and main)
    outcomes: list[StageOutcome] = []
    upstream: str | None = None  # the first stage that ran in this call
    for name in STAGES:
        # rank 0 decides (its records), and starts the stage's record when it runs
        decide = partial(_decide, name, config, paths, state, prints, settings, upstream)
        outcome, ctx.resume, why = coord.from_main(decide)
        if outcome is None:
            t0 = time.perf_counter()
            note = _RUNNERS[name](ctx) if main or name in ON_EVERY_RANK else None
            note = coord.gather(note, None)[0]  # rank 0's, once every rank has finished
            seconds = time.perf_counter() - t0
            if state is not None:
                # the capture's record also stamps the code its model and inputs come from
                code = code_files(config, ctx.source().model) if name == "capture" else None
                files = None if code is None else source_files(config, {"files": {"code": code}})
                state.finish(name, seconds, note, stage_stamp(name, paths, config), files)
            upstream = upstream or name
            outcome = StageOutcome(name, RAN, f"{why}; {note}" if note else why, seconds)
        outcomes.append(outcome)
        if main:
            log.info("%s: %s (%s)", outcome.name, outcome.status, outcome.reason)
            if on_stage is not None:
                on_stage(outcome)
    value = chosen(paths).value if config.sweep.enabled else None
    return RunResult(paths.out, config, outcomes, Atlas.load(paths.atlas), value)


def _holds(path: Path, record: str) -> bool:
    """Whether the config file ``path`` reads as the config ``record`` (YAML): a config
    written by hand at ``OUT/config.yaml``, comments and relative paths and all, is kept
    when it says what the run would write there."""
    if not path.is_file():
        return False
    try:
        return replace(load_run_config(path), out=".").dumps() == record
    except (AtlasError, OSError):  # unreadable or invalid: the run's own record replaces it
        return False


def _decide(
    name: str,
    config: RunConfig,
    paths: RunPaths,
    state: RunState,
    prints: dict[str, str],
    settings: dict[str, dict],
    upstream: str | None,
) -> tuple[StageOutcome | None, bool, str]:
    """``(outcome, resume, why)`` of stage ``name``: an outcome when it is off or
    skipped, else None, whether it continues an interrupted run, and why it runs
    (whose record is then started)."""
    off = _enabled(name, config)
    if off is not None:
        if upstream is not None:  # its output (a sweep) is no longer made from the one before
            state.outdate(name, upstream)
        return StageOutcome(name, OFF, off), False, ""
    record = stage_record(state, name, paths, settings)
    # a model, inputs or labels file edited in place: the config reads the same
    edited = name == "capture" and record is not None and files_edited(config, record)
    same = (
        record is not None
        and setting_changes(record, prints[name], settings[name]) is None
        and not edited
    )
    finished = record is None or (same and record.get("complete", False))
    where = getattr(paths, _OUTPUT[name])
    # looked up once, and only where the outcome or its reason depends on it
    complete = (upstream is None or record is None) and stage_complete(name, paths, config)
    # an output replaced since this run wrote it (`saeatlas capture --overwrite` into the
    # run's store) is not this run's: what was made from the old one must be made again
    replaced = (
        complete
        and record is not None
        and record.get("stamp", None) not in (None, stage_stamp(name, paths, config))
    )
    if upstream is None and complete and finished and not replaced:
        known = "" if record is not None else " (no record of its settings; kept as is)"
        return StageOutcome(name, SKIPPED, f"{where} is complete{known}"), False, ""
    # a report older than a file of its atlas (edited by hand) is as good as missing
    missing = f"{where} was missing or " + (
        "older than the atlas it shows" if name == "report" else "incomplete"
    )
    if record is None and not complete:
        why = missing
    elif upstream is not None:
        why = f"the {upstream} stage ran again"
    elif edited:
        why = EDITED
    elif record is not None and not same:
        why = record.get("outdated") or "its settings changed"
    elif replaced:
        why = f"{where} was replaced since this run wrote it"
    elif record is not None and not record.get("complete", False):
        why = "it was interrupted"
    else:
        why = missing
    files = source_files(config, record) if name == "capture" else None
    state.start(name, prints[name], settings[name], files)
    return None, same and upstream is None and not replaced, why
