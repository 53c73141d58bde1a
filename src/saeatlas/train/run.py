"""One training run (``_Run``): its SAE, optimiser, schedule and counters, stepped
one batch at a time.

The run sizes itself from the store and the config (rows held out, batch size,
steps, learning rate, warmups), refuses an SAE that cannot fit in memory, and
initialises the SAE from a sample of rows. :func:`~saeatlas.train.train_sae` and
:func:`~saeatlas.train.train_family` drive runs; the checkpoint is the run's
``state_dict``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from .._world import agree, join, local_copies, memory_bytes
from ..errors import ConfigError
from ..sae import SAEConfig, SparseAutoencoder
from ..sae.architectures import get_architecture
from ..sae.kernels import fast_bf16
from ..store import ActivationStore, LayerSpec
from .architectures import TRAINING, aux_reconstruction, batch_total
from .checkpoint import check_counters, check_schedule, check_state
from .config import TrainConfig
from .distributed import all_sum, average_gradients
from .init import geometric_median, input_normalizer
from .losses import fvu, l0, mse
from .optim import ScheduleFreeSignSGD
from .rows import rows_digest, store_layers, training_rows, training_steps
from .schedules import lr_factor, sparsity_factor

#: Rows sampled for the geometric-median initialisation of ``b_dec``.
N_INIT_ROWS = 16384
#: The least variance a batch's FVU divides by, as a share of what as many rows of the
#: store hold (ordinary batches hold far more: it changes only degenerate ones).
MIN_BATCH_VARIANCE = 0.1


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


def _select_dtype(name: str, device: torch.device, n_weights: int) -> torch.dtype:
    """The dtype of the dense product that chooses TopK latents (see ``select_topk``)
    from an encoder of ``n_weights`` weights."""
    if name == "auto":
        return torch.bfloat16 if fast_bf16(device, n_weights) else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


#: What to lower when an SAE cannot fit, by the settings `saeatlas train` has.
TRAIN_SIZES = "`d_sae` (--d-sae, or --expansion-factor) or `batch_size` (--batch-size)"


def check_fits(
    d_in: int,
    d_sae: int,
    batch_size: int,
    device: str,
    lower: str = TRAIN_SIZES,
    n_saes: int = 1,
) -> None:
    """Refuse, before allocating, an SAE that cannot fit: its two weight matrices with
    their gradients and two optimiser states (4 copies), and a batch's latents.
    ``lower``: the settings the command has that shrink it. ``n_saes``: SAEs of this
    size trained at once (a family: seeds, a sweep's members), all held together."""
    # each of torchrun's ranks on the CPU holds its own weights in the machine's memory
    copies = local_copies(device)
    need = n_saes * (copies * 4 * (4 * 2 * d_in * d_sae) + 4 * 3 * batch_size * d_sae)
    have = memory_bytes(device)
    if have is not None and need > have:
        what = f"{n_saes} SAEs trained at once, each" if n_saes > 1 else "An SAE"
        ranks = f", held by each of the {copies} processes on this machine," if copies > 1 else ""
        raise ConfigError(
            f"{what} of {d_sae:,} latents on {d_in:,} units with batches of {batch_size:,} "
            f"rows{ranks} need{'' if n_saes > 1 or ranks else 's'} about {need / 2**30:,.1f} "
            f"GiB; {device} has {have / 2**30:,.1f} GiB. Lower {lower}."
        )


class _Run:
    """One training run: its model, optimiser and counters, stepped one batch at a time."""

    def __init__(
        self, store: ActivationStore, cfg: TrainConfig, job: dict[str, Any] | None = None
    ) -> None:
        """``job``: what else the ranks of a ``torchrun`` training must agree on besides
        the settings and the store's rows (``--resume``)."""
        self.store, self.cfg = store, cfg
        self.world = join(cfg.device)
        agree(
            self.world,
            {
                **{f"`{k}`": v for k, v in cfg.to_json().items()},
                "store rows": rows_digest(store),
                **(job or {}),
            },
            "this training",
            "Every rank must train on the same store with the same settings (and --resume); "
            "give every rank the same command line.",
        )
        columns, self.layers = _select_layers(store, cfg.layers)
        self.names = [l.name for l in self.layers]
        d_in = self.layers[-1].stop
        self.train_rows, self.batch_size = training_rows(
            cfg, store.n_rows, f"'{store.path}'", self.world.size
        )
        self.d_sae = cfg.d_sae or cfg.expansion_factor * d_in
        self.rule = TRAINING[cfg.architecture]
        if get_architecture(cfg.architecture).topk_family and cfg.k > self.d_sae:
            raise ConfigError(
                f"`k` ({cfg.k}) cannot exceed `d_sae` ({self.d_sae} = `expansion_factor` "
                f"{cfg.expansion_factor} x {d_in} units): a TopK SAE keeps k of its d_sae latents "
                "per row. Lower `k` (--k) or raise `d_sae` (--d-sae)."
            )
        check_fits(d_in, self.d_sae, self.batch_size, cfg.device)
        self.n_steps = training_steps(cfg, self.train_rows, self.batch_size)
        base_lr = 5e-3 if cfg.optimizer == "signum" else 2e-4
        self.lr = cfg.lr or base_lr / math.sqrt(self.d_sae / 2**14)
        self.sparsity_warmup = (
            cfg.sparsity_warmup_steps
            if cfg.sparsity_warmup_steps is not None
            else self.n_steps // 20
        )
        self.lr_warmup = (
            cfg.lr_warmup_steps if cfg.lr_warmup_steps is not None else min(100, self.n_steps // 20)
        )
        self.batches_per_epoch = self.train_rows // self.batch_size
        sae_cfg = SAEConfig(d_in=d_in, layers=self.layers, **cfg.sae_settings(self.d_sae))
        device = cfg.device
        if device == "cuda" and self.world.size > 1:
            device = f"cuda:{os.environ.get('LOCAL_RANK', self.world.rank)}"
        self.device = torch.device(device)
        torch.manual_seed(cfg.seed)
        self.sae = SparseAutoencoder(sae_cfg, torch.Generator().manual_seed(cfg.seed))
        self.sae.to(self.device).train()
        mean, scale = input_normalizer(store, columns, self.layers, cfg.normalize, self.batch_size)
        self.mean, self.scale = mean.to(self.device), scale.to(self.device)
        spread = torch.as_tensor(store.std, dtype=torch.float64)[columns] / scale.double()
        self.row_variance = float(spread.pow(2).sum())  # of a normalised row
        self.select_dtype = _select_dtype(cfg.select_dtype, self.device, self.sae.W_enc.numel())
        self._init_from_sample()
        self.model = torch.compile(self.sae) if cfg.compile else self.sae
        if cfg.optimizer == "signum":
            self.opt: torch.optim.Optimizer = ScheduleFreeSignSGD(self.sae.parameters(), self.lr)
            decay = "none"  # the schedule-free average takes the place of decay
        else:
            self.opt = torch.optim.Adam(
                self.sae.parameters(), lr=self.lr, betas=(0.9, 0.999), eps=6.25e-10
            )
            decay = cfg.lr_decay
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt,
            lambda s: lr_factor(s, self.n_steps, self.lr_warmup, decay, cfg.lr_decay_start),
        )
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.autocast)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.autocast == "fp16")
        self.k_aux = cfg.auxk_k or max(1, d_in // 2)
        self.rows_since_fired = torch.zeros(self.d_sae, dtype=torch.long, device=self.device)
        self.step, self.rows_done = 0, 0
        self.metrics: list[dict[str, float]] = []

    @torch.no_grad()
    def _init_from_sample(self) -> None:
        """``b_dec`` from a sample of rows, then the architecture's own initialisation."""
        if self.cfg.b_dec_init == "zeros" and not self.rule.uses_sample:
            return
        rows = min(self.train_rows, N_INIT_ROWS)
        sample = (
            self.store.read(0, rows, layers=self.names).to(self.device) - self.mean
        ) / self.scale
        if self.cfg.b_dec_init != "zeros":
            init = (
                geometric_median(sample)
                if self.cfg.b_dec_init == "geometric_median"
                else sample.mean(0)
            )
            self.sae.b_dec.copy_(init)
        self.rule.init_from_sample(self, sample)

    def batches(self) -> Iterator[torch.Tensor]:
        """Batches from the current data position on, epoch after epoch."""
        epoch, start = divmod(self.step, self.batches_per_epoch)
        while True:
            yield from self.store.iter_batches(
                self.batch_size,
                seed=self.cfg.data_seed,
                epoch=epoch,
                layers=self.names,
                drop_last=True,
                reuse_memory=True,
                start_batch=start,
                stop_row=self.train_rows,
                part=(self.world.rank, self.world.size),
            )
            epoch, start = epoch + 1, 0

    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruction of a normalised batch, as the architecture computes it."""
        return self.rule.forward(self, x)

    def _aux_reconstruction(
        self, x: torch.Tensor, f: dict[str, torch.Tensor], dead: torch.Tensor
    ) -> torch.Tensor:
        """AuxK's reconstruction from the ``dead`` latents (TopK family)."""
        return aux_reconstruction(self, x, f, dead)

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss of one normalised batch, and the tensors that metrics need."""
        cfg, sae = self.cfg, self.sae
        f = self._forward(x)
        x_hat = f["x_hat"]
        recon = mse(x, x_hat)
        dead = self.rows_since_fired >= cfg.dead_window
        warm = sparsity_factor(self.step, self.sparsity_warmup)
        loss = self.rule.loss(self, x, f, recon, dead, warm)
        with torch.no_grad():
            if "idx" in f:
                on = f["vals"] > 0
                fired_latents = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=x.device)
                fired_latents[f["idx"][on]] = True
                n_active = on.sum(dim=-1).float().mean()
            else:
                fired_latents = (f["acts"] != 0).any(dim=0)
                n_active = l0(f["acts"])
            stats = {
                "x_hat": x_hat.detach(),
                "mse": recon.detach(),
                "dead": dead,
                "fired": fired_latents,
                "l0": n_active,
            }
            self.rule.add_stats(self, x, f, stats)
        return loss, stats

    def train_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg, sae = self.cfg, self.sae
        x = (batch.to(self.device, non_blocking=True) - self.mean) / self.scale
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        ):
            loss, out = self.loss(x)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        average_gradients(list(sae.parameters()), self.world)
        self.rule.on_gradients(self)
        self.scaler.unscale_(self.opt)
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        with warnings.catch_warnings():  # fp16's scaler skips a step that overflowed: no fault
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.sched.step()
        with torch.no_grad():
            rows = x.shape[0] * self.world.size
            fired = all_sum(out["fired"].int(), self.world) > 0
            self.rows_since_fired += rows
            self.rows_since_fired[fired] = 0
            self.rule.after_step(self, out)
        self.step += 1
        self.rows_done += rows
        return {"x": x, "loss": loss.detach(), **out}

    def batch_total(self, x: torch.Tensor) -> torch.Tensor:
        """The denominator of a normalised batch's FVU: its ``sum ||x - mean||^2`` (all
        ranks' shares), at least :data:`MIN_BATCH_VARIANCE` of what as many rows of the
        store hold. A batch of identical rows (a ReLU layer's all-zero rows) has none:
        its squared error was divided by 1e-38, a TopK loss and a logged FVU of 9e12
        that outweighed every other batch."""
        rows = x.shape[0] * self.world.size
        return batch_total(x, self.world, MIN_BATCH_VARIANCE * self.row_variance * rows)

    def record(self, out: dict[str, torch.Tensor], tokens_per_s: float) -> dict[str, float]:
        """The logged figures of the step ``out`` came from, over the whole batch: under
        ``torchrun`` every rank calls this at the same steps, and the ranks' shares are
        reduced (each rank's loss, MSE and L0 are means over equal shares)."""
        x, x_hat, w = out["x"], out["x_hat"], self.world
        means = torch.stack([out[key].detach().double() for key in ("loss", "mse", "l0")])
        if w.size > 1:
            means = all_sum(means, w) / w.size
            residual = all_sum((x - x_hat).detach().double().pow(2).sum(), w)
            batch_fvu = residual / self.batch_total(x)
        else:
            batch_fvu = fvu(x, x_hat, self.batch_total(x))
        loss, mse_, l0_ = means.tolist()
        rec = {
            "step": self.step - 1,
            "tokens": self.rows_done,
            "loss": loss,
            "mse": mse_,
            "fvu": float(batch_fvu),
            "l0": l0_,
            "dead_fraction": float(out["dead"].float().mean()),
            "lr": self.sched.get_last_lr()[0],
            "tokens_per_s": tokens_per_s,
        }
        self.metrics.append(rec)
        return rec

    # -- checkpoints -------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        return {
            "train_config": self.cfg.to_json(),
            # one name however it is given (relative to another folder, absolute)
            "store": os.path.realpath(self.store.path),
            "n_rows": self.store.n_rows,
            # a store captured again at the same path, with as many rows, differs here
            "rows_digest": rows_digest(self.store),
            "store_layers": store_layers(self.store, self.names),
            # each rank's share of a batch, the default batch size and the data position
            # follow from it: a resume on as many processes continues the same run
            "world_size": self.world.size,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings(),
            "sae": self.sae.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rows_since_fired": self.rows_since_fired.cpu(),
            "step": self.step,
            "rows_done": self.rows_done,
            "metrics": self.metrics,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        step = state["step"]
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < self.n_steps:
            raise ValueError(f"`step` is {step!r}, not one of 0..{self.n_steps - 1}")
        check_counters(state, self.batch_size, self.d_sae, self.cfg.log_every)
        own = (self.opt.state_dict()["param_groups"], self.sched.state_dict()["base_lrs"])
        kinds, scaler = self.sae.state_dict(), self.scaler.state_dict()  # before the loads
        self.sae.load_state_dict(state["sae"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        rate = self.sched.lr_lambdas[0]
        check_schedule(state, *own, lambda s: self.lr * rate(s), step, bool(scaler))
        check_state(
            state,
            kinds,
            list(self.sae.parameters()),
            self.cfg.optimizer,
            step,
            scaler,
        )
        self.scaler.load_state_dict(state["scaler"])
        self.rows_since_fired.copy_(state["rows_since_fired"])
        self.step, self.rows_done = step, int(state["rows_done"])
        self.metrics = list(state["metrics"])
        torch.set_rng_state(state["torch_rng"])
