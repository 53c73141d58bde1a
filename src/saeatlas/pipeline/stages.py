"""The stages of ``run_pipeline``: each calls the stage's own function and writes into
the run directory (:class:`~.outputs.RunPaths`).

Every stage function takes a :class:`StageContext` and returns a short note of
what it did; :mod:`.run` decides which stages run. Under ``torchrun`` capture,
sweep, train, analyze and the ablation (each rank its share of the modules) run on
every rank (rank 0 writes what they share), and the report on rank 0 alone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .._progress import progress_bar
from .._world import is_main_process
from ..capture import capture_activations
from ..errors import AtlasError, ConfigError
from ..losses import loss_function, needs_labels
from ..store import ActivationStore
from ..store.atomic import partial_dir
from ..store.manifest import MANIFEST, Manifest
from ..store.partial import progress_files
from ..structure import Atlas, analyze
from ..structure.causal.ablation import ablate_atlas
from ..structure.causal.ablation_inputs import check_ablation_inputs
from ..sweep import sweep
from ..sweep.sweep import SWEEP_JSON, sweep_members
from ..train import TrainConfig, train_family, train_sae
from ..train.checkpoint import CHECKPOINT
from ..train.ensemble import trained_like
from .config import RunConfig
from .fit import check_store_fits
from .outputs import RunPaths, copy_sae, sae_complete, sweep_complete
from .record import fingerprints
from .source import Source, load_source

log = logging.getLogger(__name__)

#: The key of a run's store's manifest provenance that holds its capture's settings
#: fingerprint (:func:`.record.fingerprints`).
RUN_FINGERPRINT = "run_fingerprint"


@dataclass
class StageContext:
    """What the stages share: the config, the run directory and the loaded source."""

    config: RunConfig
    paths: RunPaths
    progress: bool
    resume: bool = False
    """Continue an interrupted capture or a checkpointed training run (same settings)."""
    _source: Source | None = field(default=None, repr=False)

    def source(self) -> Source:
        """The model, inputs and labels, loaded once and only when a stage needs them."""
        if self._source is None:
            # a factory may train its model here (the digits MLP: about a second)
            with progress_bar("load model and inputs", 1, self.progress) as bar:
                self._source = load_source(self.config)
                bar.advance(1)
        return self._source

    def store(self) -> ActivationStore:
        """The run's store, checked to fit the later stages' settings (:mod:`.fit`)."""
        store = ActivationStore.open(self.paths.store)
        check_store_fits(self.config, store, store.n_rows)
        return store


# -- capture -----------------------------------------------------------------------------------


def _captured_with(store: Path, fingerprint: str) -> bool:
    """Whether ``store`` is complete and a run's capture with settings ``fingerprint``
    wrote it (its manifest's provenance says so)."""
    try:
        provenance = Manifest.read(store / MANIFEST).provenance
    except (OSError, AtlasError):
        return False
    return provenance.get(RUN_FINGERPRINT) == fingerprint


def run_capture(ctx: StageContext) -> str:
    cfg, src = ctx.config, ctx.source()
    fingerprint = fingerprints(cfg)["capture"]
    # Resume a capture that left progress, or that wrote its store but was killed before
    # the run recorded it (the store is then put in place, not captured again). One
    # killed before its first shard left neither: the store in place is an older one.
    resume = ctx.resume and (
        bool(progress_files(partial_dir(ctx.paths.store)))
        or _captured_with(ctx.paths.store, fingerprint)
    )
    if cfg.ablation.enabled:
        # what would fail the ablation, the last stage, is refused before the first
        check_ablation_source(cfg, src)
    store = capture_activations(
        src.model,
        src.inputs,
        list(cfg.layers),
        ctx.paths.store,
        cfg.capture,
        tokenizer=src.tokenizer,
        labels=src.labels,
        resume=resume,
        overwrite=not resume,
        progress=ctx.progress,
        provenance={
            "model": cfg.model,
            "model_args": cfg.model_args,
            "inputs": cfg.inputs,
            "inputs_args": cfg.inputs_args,
            "run": str(ctx.paths.out),
            RUN_FINGERPRINT: fingerprint,
        },
    )
    return f"{store.n_rows:,} rows x {store.n_units:,} units"


# -- sweep -------------------------------------------------------------------------------------


def run_sweep(ctx: StageContext) -> str:
    s = ctx.config.sweep
    # The old sweep stays until the new one is complete (sweep writes beside it).
    res = sweep(
        ctx.store(),
        ctx.config.train,
        s.over,
        list(s.values),
        ctx.paths.sweep,
        seeds=s.seeds,
        heldout_fraction=s.heldout_fraction,
        extend=s.extend,
        overwrite=True,
        # a sweep this run started and was stopped in keeps the members it finished
        # (each is checked against these settings and rows before it is kept)
        resume=ctx.resume,
        progress=ctx.progress,
    )
    said = f"recommended {s.over} = {res.points[res.recommended].value:g}"
    if res.extended:
        said += f" (range extended by {', '.join(f'{v:g}' for v in res.extended)})"
    return said if res.knee_inside else f"{said}; {res.note}"


@dataclass(frozen=True)
class Chosen:
    """The sparsity the sweep recommends and the member trained with it."""

    over: str
    value: float
    member: Path


def chosen(paths: RunPaths) -> Chosen:
    """The recommendation of the sweep in ``paths.sweep``."""
    raw = json.loads((paths.sweep / SWEEP_JSON).read_text())
    point = raw["points"][raw["recommended"]]
    written = Path(point["path"])  # SWEEP/<over>-<value>/seed-<seed>, as the sweep saw SWEEP
    member = paths.sweep / written.parent.name / written.name
    return Chosen(raw["over"], float(point["value"]), member)


def final_train_config(cfg: RunConfig, paths: RunPaths) -> TrainConfig:
    """``train`` with the sweep's recommended sparsity (when the sweep is on)."""
    if not cfg.sweep.enabled:
        return cfg.train
    c = chosen(paths)
    value = int(c.value) if c.over == "k" else c.value
    return replace(cfg.train, **{c.over: value})


# -- train -------------------------------------------------------------------------------------


def _member_cfg(member: Path) -> dict[str, Any] | None:
    try:
        return json.loads((member / "cfg.json").read_text())["metadata"]["train_config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_train(ctx: StageContext) -> str:
    cfg, paths = ctx.config, ctx.paths
    final = final_train_config(cfg, paths)
    seeds = [replace(final, seed=final.seed + i) for i in range(1, cfg.n_trained_seeds + 1)]
    seed_dirs = [paths.seed_sae(i) for i in range(1, len(seeds) + 1)]
    todo: list[tuple[TrainConfig, Path]] = []
    note = ""
    if cfg.sweep.enabled and sweep_complete(paths.sweep):
        member = chosen(paths).member
        same = _member_cfg(member) == final.to_json()
        if same or not cfg.sweep.retrain:
            if is_main_process():  # under torchrun rank 0 writes
                copy_sae(member, paths.sae)
            note = f"reused the sweep member {member}" + (
                "" if same else " (`sweep.retrain: false`)"
            )
    if not note:
        todo.append((final, paths.sae))
    todo += list(zip(seeds, seed_dirs))
    if ctx.resume:  # SAEs that a killed run finished before it recorded the stage
        kept = [out for c, out in todo if sae_complete(out) and trained_like(out, c)]
        todo = [(c, out) for c, out in todo if out not in kept]
        if kept:
            note = "; ".join(filter(None, [note, f"kept {len(kept)} complete SAE(s)"]))
    if not todo:
        return note
    store = ctx.store()
    if final.checkpoint_every or len(todo) == 1:
        for c, out in todo:
            resume = ctx.resume and (out / CHECKPOINT).exists()
            train_sae(store, c, out, overwrite=not resume, resume=resume, progress=ctx.progress)
    else:
        train_family(
            store,
            [c for c, _ in todo],
            [o for _, o in todo],
            overwrite=True,
            progress=ctx.progress,
        )
    trained = f"trained {len(todo)} SAE(s)"
    return f"{note}; {trained}" if note else trained


# -- analyze, ablation -------------------------------------------------------------------------


def run_analyze(ctx: StageContext) -> str:
    cfg, paths = ctx.config, ctx.paths
    seed_saes = [paths.seed_sae(i) for i in range(1, cfg.stability.n_seed_saes + 1)]
    atlas = analyze(
        paths.sae,
        ctx.store(),
        cfg.analyze,
        seed_saes=seed_saes,
        null_source=paths.seed_sae(1) if cfg.n_trained_seeds else None,
        sweep=sweep_members(paths.sweep) if cfg.sweep.enabled else None,
        progress=ctx.progress,
    )
    atlas.summary["model"] = cfg.model
    if cfg.sweep.enabled:
        atlas.summary["sweep"] = str(paths.sweep)
    atlas.summary["run"] = {"out": str(paths.out), "config": str(paths.config)}
    if is_main_process():  # under torchrun every rank has the atlas; rank 0 writes it
        atlas.save(paths.atlas, overwrite=True)
    return atlas.summary["message"]


def check_ablation_source(cfg: RunConfig, src: Source) -> None:
    """Refuse a source the ablation would fail on: no labels for the cross-entropy loss,
    labels not one per input or no class indices of the model's logits, a model that
    fails on the first input (:func:`.check_ablation_inputs`)."""
    a = cfg.ablation
    if src.labels is None and needs_labels(a.loss):
        raise ConfigError(
            "`ablation.enabled` with `ablation.loss: cross-entropy` needs one label per sample: "
            "give `labels`, or an `inputs` function that returns (inputs, labels); for a causal "
            "language model set `ablation.loss: next-token`; or set `ablation.enabled: false`."
        )
    check_ablation_inputs(
        src.model,
        src.inputs,
        src.labels,
        loss_fn=loss_function(a.loss),
        tokenizer=src.tokenizer,
        max_length=cfg.capture.max_length,
    )


def run_ablation(ctx: StageContext) -> str:
    a = ctx.config.ablation
    src = ctx.source()
    # capture may have moved the model to `capture.device` / `capture.dtype`
    src.model.to(device="cpu", dtype=torch.float32)
    check_ablation_source(ctx.config, src)
    atlas = Atlas.load(ctx.paths.atlas)
    res = ablate_atlas(
        atlas,
        src.model,
        src.inputs,
        ctx.store(),
        labels=src.labels,
        mode=a.mode,
        loss_fn=loss_function(a.loss),
        n_random=a.n_random,
        batch_size=a.batch_size,
        random_state=a.seed,
        tokenizer=src.tokenizer,
        progress=ctx.progress,
    )
    if is_main_process():  # every rank ablated its share of the modules; rank 0 writes
        atlas.save(ctx.paths.atlas, overwrite=True)
    done = atlas.summary["ablation"]  # what ablate_atlas counted
    return (
        f"{done['n_modules_above_random']} of {len(res.q)} modules hurt the loss more than "
        f"random unit sets (p <= {done['alpha']:g} adjusted over the modules; up to "
        f"{done['n_random']} random sets each)"
    )


# -- report ------------------------------------------------------------------------------------


def report_available() -> str | None:
    """None when :mod:`saeatlas.report` can be imported, else why not."""
    try:
        from ..report import write_report  # noqa: F401
    except ImportError as e:
        return f"the report package is not available ({e})"
    return None


def run_report(ctx: StageContext) -> str:
    from ..report import write_report

    paths = ctx.paths
    res = write_report(
        paths.atlas,
        sweep_dir=paths.sweep if sweep_complete(paths.sweep) else None,
        max_map_points=ctx.config.report.max_map_points,
        progress=ctx.progress,
    )
    return f"{res.path} and {len(res.figures)} figures"
