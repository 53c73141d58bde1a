"""``train_sae(store, TrainConfig(...)) -> TrainResult``.

Streams shuffled batches from a store (several passes when the budget is
larger than the store), trains with Adam under a warmup/decay schedule, and
returns the SAE with its input normalisation folded in, so that it encodes
and decodes rows in the store's own space.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from .._progress import progress_bar
from ..errors import ConfigError
from ..sae import SAEConfig, SparseAutoencoder
from ..sae.activations import step as heaviside
from ..store import ActivationStore, LayerSpec
from .config import TrainConfig
from .init import geometric_median, input_normalizer
from .losses import auxk_loss, fvu, l0, l1_penalty, mse
from .schedules import lr_factor, sparsity_factor

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
#: Rows sampled for the geometric-median initialisation of ``b_dec``.
N_INIT_ROWS = 16384
#: Default budget: at least this many rows, and at least this many passes.
MIN_DEFAULT_TOKENS, MIN_DEFAULT_PASSES = 2_000_000, 50


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


def _open(store: ActivationStore | str | Path) -> ActivationStore:
    return store if isinstance(store, ActivationStore) else ActivationStore.open(store)


def _select_layers(
    store: ActivationStore, names: tuple[str, ...]
) -> tuple[Any, tuple[LayerSpec, ...]]:
    chosen = [store.layer(n) for n in names] if names else list(store.layers)
    columns = store.columns([l.name for l in chosen])
    rebased, start = [], 0
    for l in chosen:
        rebased.append(LayerSpec(l.name, start, start + l.n_units, l.shape, l.layout))
        start += l.n_units
    return columns, tuple(rebased)


def _batches(store: ActivationStore, cfg: TrainConfig, names: list[str]) -> Iterator[torch.Tensor]:
    epoch = 0
    while True:
        yield from store.iter_batches(
            cfg.batch_size,
            seed=cfg.seed,
            epoch=epoch,
            layers=names,
            drop_last=True,
            reuse_memory=True,
        )
        epoch += 1


def train_sae(
    store: ActivationStore | str | Path,
    cfg: TrainConfig = TrainConfig(),
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train a sparse autoencoder on ``store`` (a store directory, ``.npy`` or opened store).

    Args:
        store: the activations.
        cfg: training settings.
        out: an SAE directory to write (``cfg.json``, ``sae_weights.safetensors``,
            ``metrics.jsonl``); nothing is written when ``None``.
        overwrite: replace an SAE already at ``out``.
        progress: show a progress bar.
    """
    if out is not None and (Path(out) / "cfg.json").exists() and not overwrite:
        raise ConfigError(
            f"'{out}' already holds an SAE. Choose another --out, or pass --overwrite "
            "(`overwrite=True`) to replace it."
        )
    store = _open(store)
    columns, layers = _select_layers(store, cfg.layers)
    names = [l.name for l in layers]
    d_in = layers[-1].stop
    if store.n_rows < cfg.batch_size:
        raise ConfigError(
            f"The store has {store.n_rows} rows, fewer than `batch_size` {cfg.batch_size}. "
            f"Use --batch-size {max(1, store.n_rows // 4)} or capture more rows."
        )
    d_sae = cfg.d_sae or cfg.expansion_factor * d_in
    tokens = cfg.tokens or max(MIN_DEFAULT_TOKENS, MIN_DEFAULT_PASSES * store.n_rows)
    n_steps = max(1, tokens // cfg.batch_size)
    lr = cfg.lr or 2e-4 / math.sqrt(d_sae / 2**14)
    sparsity_warmup = (
        cfg.sparsity_warmup_steps if cfg.sparsity_warmup_steps is not None else n_steps // 20
    )
    sae_cfg = SAEConfig(
        architecture=cfg.architecture,
        d_in=d_in,
        d_sae=d_sae,
        k=min(cfg.k, d_sae),
        l1_coefficient=cfg.l1_coefficient,
        l0_coefficient=cfg.l0_coefficient,
        jumprelu_bandwidth=cfg.jumprelu_bandwidth,
        jumprelu_init_threshold=cfg.jumprelu_init_threshold,
        layers=layers,
    )
    device = torch.device(cfg.device)
    generator = torch.Generator().manual_seed(cfg.seed)
    sae = SparseAutoencoder(sae_cfg, generator).to(device).train()
    mean, scale = (t.to(device) for t in input_normalizer(store, columns, layers, cfg.normalize))
    topk_family = cfg.architecture in ("topk", "batchtopk")

    with torch.no_grad():
        sample = store.read(0, min(store.n_rows, N_INIT_ROWS), layers=names).to(device)
        sample = (sample - mean) / scale
        if cfg.b_dec_init == "geometric_median":
            sae.b_dec.copy_(geometric_median(sample))
        elif cfg.b_dec_init == "mean":
            sae.b_dec.copy_(sample.mean(dim=0))

    model = torch.compile(sae) if cfg.compile else sae
    opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999), eps=6.25e-10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, n_steps, cfg.lr_warmup_steps, cfg.lr_decay, cfg.lr_decay_start)
    )
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.autocast)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.autocast == "fp16")
    k_aux = cfg.auxk_k or max(1, d_in // 2)
    rows_since_fired = torch.zeros(d_sae, dtype=torch.long, device=device)
    metrics: list[dict[str, float]] = []
    t0, rows_done = time.perf_counter(), 0
    batches = _batches(store, cfg, names)

    with progress_bar("train", n_steps, progress) as bar:
        for step in range(n_steps):
            x = (next(batches).to(device, non_blocking=True) - mean) / scale
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                x_hat, acts, pre = model(x)
                recon_mse = mse(x, x_hat.float())
                dead = rows_since_fired >= cfg.dead_window
                if topk_family:
                    recon_fvu = fvu(x, x_hat.float())
                    loss = recon_fvu
                    if cfg.auxk_coefficient and bool(dead.any()):
                        aux = auxk_loss(x, x_hat.float(), pre.float(), sae.W_dec, dead, k_aux)
                        loss = loss + cfg.auxk_coefficient * aux
                elif cfg.architecture == "relu":
                    penalty = l1_penalty(acts.float(), sae.W_dec, layers)
                    loss = (
                        recon_mse
                        + cfg.l1_coefficient * sparsity_factor(step, sparsity_warmup) * penalty
                    )
                else:
                    fired = heaviside(pre.float(), sae.jump_threshold, cfg.jumprelu_bandwidth)
                    penalty = fired.sum(dim=-1).mean()
                    loss = (
                        recon_mse
                        + cfg.l0_coefficient * sparsity_factor(step, sparsity_warmup) * penalty
                    )
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if topk_family:
                sae.remove_parallel_decoder_grad()
            scaler.unscale_(opt)
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            with torch.no_grad():
                if topk_family:
                    sae.set_decoder_norm_to_unit_norm()
                active = (acts != 0).any(dim=0)
                rows_since_fired += x.shape[0]
                rows_since_fired[active] = 0
                if cfg.architecture == "batchtopk":
                    positive = acts[acts > 0]
                    if positive.numel():
                        low = positive.min().to(sae.threshold.dtype)
                        # Running estimate of the batch-wide cut (Bussmann et al. 2024).
                        sae.threshold.copy_(low if step == 0 else 0.99 * sae.threshold + 0.01 * low)
            rows_done += x.shape[0]
            if step % cfg.log_every == 0 or step == n_steps - 1:
                loss, recon_mse, x_hat, acts = (t.detach() for t in (loss, recon_mse, x_hat, acts))
                record = {
                    "step": step,
                    "tokens": rows_done,
                    "loss": float(loss),
                    "mse": float(recon_mse),
                    "fvu": float(fvu(x, x_hat.float())),
                    "l0": float(l0(acts)),
                    "dead_fraction": float(dead.float().mean()),
                    "lr": sched.get_last_lr()[0],
                    "tokens_per_s": rows_done / (time.perf_counter() - t0),
                }
                metrics.append(record)
                bar.advance(
                    0,
                    info=f"fvu {record['fvu']:.3f} L0 {record['l0']:.1f} "
                    f"dead {record['dead_fraction']:.2f} {record['tokens_per_s']:,.0f} rows/s",
                )
            bar.advance(1)

    sae.eval()
    summary = {
        "saeatlas_version": __version__,
        "store": str(store.path),
        "train_config": cfg.to_json(),
        "n_steps": n_steps,
        "tokens": rows_done,
        "lr": lr,
        "normalization": {"mode": cfg.normalize, "folded": True},
        "final": metrics[-1] if metrics else {},
        "seconds": time.perf_counter() - t0,
    }
    folded = sae.folded(mean, scale).to("cpu").eval()
    folded.cfg = replace(folded.cfg, metadata=summary)
    path = None
    if out is not None:
        path = folded.save(out)
        (path / METRICS).write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return TrainResult(folded, metrics, summary, path)
