"""``train_sae(store, TrainConfig(...)) -> TrainResult``.

Streams shuffled batches from a store (several passes when the budget is
larger than the store), trains with Adam under a warmup/decay schedule, and
returns the SAE with its input normalisation folded in, so that it encodes
and decodes rows in the store's own space. With ``checkpoint_every``, the run
can be continued exactly (``resume=True``) after an interruption. One run's
state and step are in :mod:`.run`; here are the loop, its logging and
checkpoints, and the finished SAE.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from .._progress import progress_bar
from .._validation import check_config_argument, check_flag_arguments, check_path_argument
from .._world import agree, from_main, join
from ..errors import ConfigError, TrainingDiverged
from ..sae import SparseAutoencoder
from ..sae.architectures import get_architecture
from ..sae.io import check_sae_out
from ..store import ActivationStore
from ..store.lock import output_lock
from .checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .optim import ScheduleFreeSignSGD
from .rows import rows_digest, store_layers
from .run import _Run

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"


@dataclass(frozen=True)
class TrainResult:
    sae: SparseAutoencoder
    """The trained SAE, normalisation folded in (store space), in eval mode."""
    metrics: list[dict[str, float]]
    """The logged records (also in ``metrics.jsonl`` when saved)."""
    summary: dict[str, Any]
    """Final figures and settings, also in ``cfg.json``'s ``metadata``."""
    path: Path | None
    """Where the SAE was saved, if it was."""


def train_sae(
    store: ActivationStore | str | Path,
    cfg: TrainConfig = TrainConfig(),
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train a sparse autoencoder on ``store`` (a store directory, ``.npy`` or opened store).

    Args:
        store: the activations.
        cfg: training settings.
        out: an SAE directory to write (``cfg.json``, ``sae_weights.safetensors``,
            ``metrics.jsonl``, and ``checkpoint.pt`` while training with
            ``checkpoint_every``); nothing is written when ``None``.
        overwrite: replace an SAE already at ``out``.
        resume: continue from the checkpoint at ``out`` (same store and settings);
            the result equals an uninterrupted run's.
        progress: show a progress bar.
    """
    # before the work: a dict as `cfg` ended in an AttributeError, a number as `out` in
    # pathlib's TypeError, and `resume="no"` was read by its truth
    check_config_argument("cfg", cfg, TrainConfig)
    check_path_argument("out", out, optional=True)
    check_flag_arguments(overwrite=overwrite, resume=resume, progress=progress)
    if out is None and (resume or cfg.checkpoint_every):
        raise ConfigError("Checkpoints and --resume need an --out directory.")
    out = Path(out) if out is not None else None
    world = join(cfg.device)  # only rank 0 writes: only it locks and checks the output
    with output_lock(out if world.is_main else None):
        if out is not None:
            from_main(lambda: check_sae_out(out, overwrite=overwrite, resume=resume), world)
        return _train(store, cfg, out, resume, overwrite, progress)


def _continue(run: _Run, out: Path) -> None:
    """Load the checkpoint in ``out`` into ``run``, or raise :class:`ConfigError`."""
    state = load_checkpoint(out, run.settings())
    try:
        run.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # a damaged checkpoint
        raise ConfigError(
            f"'{out / CHECKPOINT}' has this run's settings but not a state it can continue "
            f"from ({type(e).__name__}: {' '.join(str(e).split())}). Start again with "
            "--overwrite (without --resume)."
        ) from None
    log.info("Resuming at step %d of %d.", run.step, run.n_steps)


def _train(
    store: ActivationStore | str | Path,
    cfg: TrainConfig,
    out: Path | None,
    resume: bool,
    overwrite: bool,
    progress: bool,
) -> TrainResult:
    store = store if isinstance(store, ActivationStore) else ActivationStore.open(store)
    # a rank that starts again would be averaged with one that goes on; every rank resumes
    # from the checkpoint in its own --out, so a rank given another --out (or one that
    # finds another checkpoint there) trained from another state, and rank 0 saved that
    # mix as a complete SAE
    job = {"--resume": resume, "--out": None if out is None else str(out)}
    run = _Run(store, cfg, job)
    if resume:
        restart = None
        try:
            _continue(run, out)
        except ConfigError as e:
            if not overwrite:
                raise
            restart = e
        # before a rank starts again (a meeting of its own): every rank continues the
        # same step, or every rank starts again
        agree(
            run.world,
            {"checkpoints": None if restart else run.step},
            "this training",
            f"Every rank must resume from the same checkpoint ('{out / CHECKPOINT}'): give "
            "every rank the same --out, on a filesystem every rank sees.",
        )
        if restart is not None:
            # --resume --overwrite: continue what can be continued, replace the rest
            log.info("Starting '%s' again (--overwrite): %s", out, restart)
            run = _Run(store, cfg, job)
    # what the run logged after its checkpoint is logged again: a resume hides the first
    # (TensorBoard drew those steps twice)
    board = _tensorboard(out, cfg, run.rows_done + 1) if run.world.is_main else None
    t0, done_before = time.perf_counter(), run.rows_done
    batches = run.batches()
    with progress_bar("train", run.n_steps, progress and run.world.is_main) as bar:
        bar.advance(run.step)
        while run.step < run.n_steps:
            step_out = run.train_step(next(batches))
            if (run.step - 1) % cfg.log_every == 0 or run.step == run.n_steps:
                check_finite_training(run, step_out, out)
                speed = (run.rows_done - done_before) / max(time.perf_counter() - t0, 1e-9)
                rec = run.record(step_out, speed)
                add_scalars(board, rec)
                bar.advance(
                    0,
                    info=f"fvu {rec['fvu']:.3f} L0 {rec['l0']:.1f} "
                    f"dead {rec['dead_fraction']:.2f} {rec['tokens_per_s']:,.0f} rows/s",
                )
            if (
                run.world.is_main
                and cfg.checkpoint_every
                and run.step % cfg.checkpoint_every == 0
                and run.step < run.n_steps
            ):
                check_finite_training(run, step_out, out)  # never replace a good checkpoint
                save_checkpoint(out, run.state_dict())
            bar.advance(1)
    if board is not None:
        board.close()
    return _finish(run, out, time.perf_counter() - t0)


def _tensorboard(out: Path | None, cfg: TrainConfig, purge_step: int) -> Any:
    """A TensorBoard ``SummaryWriter`` under ``out/tensorboard``, when asked for, that
    hides the events written before it at ``purge_step`` (rows) or later."""
    if not cfg.tensorboard:
        return None
    if out is None:
        raise ConfigError("`tensorboard` writes under the SAE directory; give --out.")
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ConfigError(
            "`tensorboard` needs the tensorboard package: pip install 'saeatlas[tensorboard]'."
        ) from e
    return SummaryWriter(log_dir=str(out / "tensorboard"), purge_step=purge_step)


def add_scalars(board: Any, rec: dict[str, float]) -> None:
    """One metrics record as TensorBoard scalars against the rows seen (``board``: a
    ``SummaryWriter`` from :func:`_tensorboard`, or ``None``)."""
    if board is None:
        return
    for key, value in rec.items():
        if key not in ("step", "tokens"):
            board.add_scalar(f"train/{key}", value, rec["tokens"])


def check_finite_training(run: _Run, step_out: dict[str, torch.Tensor], out: Path | None) -> None:
    """Stop with :class:`TrainingDiverged` when the loss or a weight is NaN/Inf; the
    last checkpoint (written only while everything was finite) stays."""
    bad, fix = None, f"Lower the learning rate (--lr, now {run.lr:g}) or check the activations."
    if "loss" in step_out and not bool(torch.isfinite(step_out["loss"]).all()):
        bad = f"the loss is {float(step_out['loss'])}"
        if float(step_out["loss"]) == math.inf and bool(torch.isfinite(step_out["mse"]).all()):
            # the penalty's term alone: `--l0-coefficient 1e38` times a JumpReLU's L0 is
            # beyond float32 at the first step, and the advice was a lower learning rate
            fix = _penalty_fix(run, float(step_out["mse"]))
    else:
        for name, p in run.sae.named_parameters():
            if not bool(torch.isfinite(p).all()):
                bad = f"`{name}` has NaN/Inf values"
                break
    if bad is None:
        return
    kept = (
        f" The last good checkpoint stays in '{out / CHECKPOINT}' (--resume continues from it)."
        if out is not None and (out / CHECKPOINT).exists()
        else ""
    )
    raise TrainingDiverged(
        f"Training diverged at step {run.step} of {run.n_steps}: {bad}; nothing was saved."
        f"{kept} {fix}"
    )


def _penalty_fix(run: _Run, squared_error: float) -> str:
    """What to lower when the loss is beyond float32 but its squared error is not: the
    coefficient of the architecture's other term (no learning rate helps)."""
    name = get_architecture(run.cfg.architecture).sparsity_setting
    if name == "k":  # the TopK family's other term is AuxK's
        name = "auxk_coefficient"
    flag = "--" + name.replace("_", "-")
    return (
        f"Its squared error is {squared_error:.4g}: the term of `{name}` ({flag}, now "
        f"{getattr(run.cfg, name):g}) is beyond float32, which no learning rate helps. Lower "
        f"{flag}."
    )


def _finish(run: _Run, out: Path | None, seconds: float) -> TrainResult:
    check_finite_training(run, {}, out)
    run.sae.eval()
    if isinstance(run.opt, ScheduleFreeSignSGD):
        run.opt.eval()  # the averaged weights are the result
    summary = {
        "saeatlas_version": __version__,
        # absolute: export-saelens read the provenance of whatever 'store' was in the
        # directory it ran from
        "store": str(Path(run.store.path).resolve()),
        # the rows it was trained on: `--resume` keeps a complete SAE of these rows only
        "rows_digest": rows_digest(run.store),
        "store_layers": store_layers(run.store, run.names),
        "train_config": run.cfg.to_json(),
        "n_steps": run.n_steps,
        "tokens": run.rows_done,
        "lr": run.lr,
        "normalization": {"mode": run.cfg.normalize, "folded": True},
        "final": run.metrics[-1] if run.metrics else {},
        "seconds": seconds,
    }
    _warn_if_unlearnt(run, out, summary["final"])
    folded = run.sae.folded(run.mean, run.scale).to("cpu").eval()
    folded.cfg = replace(folded.cfg, metadata=summary)
    broken = [n for n, p in folded.named_parameters() if not bool(torch.isfinite(p).all())]
    if broken:  # the averaged weights, or the normalisation folded into them
        raise TrainingDiverged(
            f"The trained SAE's {broken} have NaN/Inf values after averaging and folding in "
            "the input normalisation; nothing was saved. Lower the learning rate (--lr) or "
            "check the activations (a unit with no variance?)."
        )
    if out is None or not run.world.is_main:
        return TrainResult(folded, run.metrics, summary, None)
    metrics = "".join(json.dumps(m) + "\n" for m in run.metrics).encode()
    # The new directory replaces the one holding the checkpoints in one rename. Its
    # TensorBoard events are this run's: a `train --overwrite` without --tensorboard kept
    # those of the training it replaced, shown as this SAE's
    keep = ("tensorboard",) if run.cfg.tensorboard else ()
    folded.save(out, files={METRICS: metrics}, keep=keep)
    return TrainResult(folded, run.metrics, summary, out)


def _warn_if_unlearnt(run: _Run, out: Path | None, final: dict[str, Any]) -> None:
    """Warn (rank 0) of an SAE that fires no latent, or reconstructs worse than the mean,
    saying what to change: its ``final`` record of metrics."""
    fvu, l0 = final.get("fvu"), final.get("l0")
    # an SAE trained in memory (`validate`'s, the dictionary null's source) is named by
    # its settings, not by `train`'s flags: "trained in 'memory' ... (--lr 0.08)" sent
    # the user of `validate`, which has no --lr, to a flag it does not take
    where, tokens, lr, normalize = (
        (f"trained in '{out}'", "--tokens", "--lr ", "--normalize ")
        if out is not None
        else ("trained in memory (not saved)", "`tokens`", "`lr` ", "`normalize` ")
    )
    setting = get_architecture(run.cfg.architecture).sparsity_setting
    if run.world.is_main and l0 == 0 and setting != "k":
        # every latent silenced by a penalty (`--l1-coefficient 1000`) was told to train
        # longer or check the learning rate, which changes nothing (a TopK SAE's k is no
        # penalty: its latents are silenced otherwise)
        silencing = [setting] + (["jumprelu_init_threshold"] if setting == "l0_coefficient" else [])
        named = ", ".join(
            (f"--{name.replace('_', '-')} " if out is not None else f"`{name}` ")
            + f"{getattr(run.cfg, name):g}"
            for name in silencing
        )
        log.warning(
            "The SAE %s fires no latent on its last batch (L0 0, FVU %.4g): its sparsity "
            "settings (%s) silence every one. Lower them (`saeatlas sweep --over %s` tries "
            "several values).",
            where,
            fvu,
            named,
            setting,
        )
    elif run.world.is_main and fvu is not None and fvu > 1:
        log.warning(
            "The SAE %s reconstructs its inputs worse than their mean does (FVU %.4g > 1 "
            "after %d steps): it has not learnt them. Train longer (%s), or check the "
            "learning rate (%s%g) and the activations' scale (%s%s; 'unit' and 'layer' "
            "standardise them).",
            where,
            fvu,
            run.n_steps,
            tokens,
            lr,
            run.lr,
            normalize,
            run.cfg.normalize,
        )
