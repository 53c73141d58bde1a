"""How each SAE architecture trains: its forward pass, its loss, and what it does
around each optimiser step. The SAE side (sparsifier, state, files) is in
:mod:`saeatlas.sae.architectures`; an architecture added there gets its rule here.

The training run (``_Run``, :mod:`.run`) calls, for every batch ``x``
(normalised, ``[batch, d_in]``): ``forward`` → ``loss`` (+ ``add_stats``) →
backward → ``on_gradients`` → optimiser step → ``after_step``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from .._linalg import row_norms
from .._world import World
from ..errors import ConfigError
from ..sae.activations import step as heaviside
from ..sae.architectures import REGISTRY
from ..sae.kernels import select_topk, sparse_decode, topk_encode
from .distributed import all_min, all_sum, global_topk_threshold
from .losses import auxk_loss, fvu, l1_penalty
from .optim import ScheduleFreeSignSGD

if TYPE_CHECKING:
    from .run import _Run

Tensors = dict[str, torch.Tensor]


class TrainingRule:
    """The training of one architecture; stateless (the run holds the state)."""

    uses_sample: bool = False
    """Initialise from a sample of rows even when `b_dec_init` is zeros."""

    def init_from_sample(self, run: _Run, sample: torch.Tensor) -> None:
        """Initialise from ``sample`` ``[n, d_in]`` (normalised rows), after ``b_dec``."""

    def forward(self, run: _Run, x: torch.Tensor) -> Tensors:
        """Reconstruction of a normalised batch: ``x_hat`` (float32), ``pre``, and
        ``acts`` (dense) or ``vals`` and ``idx`` (each row's active latents)."""
        x_hat, acts, pre = run.model(x)
        return {"x_hat": x_hat.float(), "acts": acts, "pre": pre}

    def loss(
        self,
        run: _Run,
        x: torch.Tensor,
        f: Tensors,
        recon: torch.Tensor,
        dead: torch.Tensor,
        warm: float,
    ) -> torch.Tensor:
        """The loss to minimise, given the forward pass ``f``, its squared error
        ``recon``, the ``dead`` latents ``[d_sae]`` and the sparsity warmup factor."""
        raise TypeError(f"{type(self).__name__} must define loss (every training rule does).")

    def add_stats(self, run: _Run, x: torch.Tensor, f: Tensors, stats: Tensors) -> None:
        """Add what :meth:`after_step` needs to the step's ``stats`` (no grad)."""

    def on_gradients(self, run: _Run) -> None:
        """Adjust the gradients after the backward pass (and averaging over ranks)."""

    def after_step(self, run: _Run, out: Tensors) -> None:
        """Act on the weights after the optimiser step (no grad); ``run.step`` is the
        step just taken."""


class ReLUTraining(TrainingRule):
    """Squared error + L1 of the activations weighted by decoder norms (Anthropic,
    April 2024 update; per layer for a joint SAE)."""

    def loss(self, run, x, f, recon, dead, warm):
        penalty = l1_penalty(f["acts"].float(), run.sae.W_dec, run.layers)
        return recon + run.cfg.l1_coefficient * warm * penalty


class JumpReLUTraining(TrainingRule):
    """Squared error + L0 through the Heaviside step's straight-through threshold
    gradient (Rajamanoharan et al. 2024, eq. 12)."""

    uses_sample = True

    @torch.no_grad()
    def init_from_sample(self, run, sample):
        """Refuse an initial threshold above every pre-activation of ``sample``: no
        latent fires, so the encoder gets no gradient, and the threshold's own comes only
        from pre-activations within half the bandwidth of it. Such a run trained to its
        end and saved an SAE of L0 0, advising a longer run or another learning rate."""
        cfg = run.cfg
        top = float(run.sae.pre_activations(sample).max())
        if top <= cfg.jumprelu_init_threshold - cfg.jumprelu_bandwidth / 2:
            raise ConfigError(
                f"`jumprelu_init_threshold` (--jumprelu-init-threshold) "
                f"{cfg.jumprelu_init_threshold:g} is above every pre-activation of the first "
                f"{sample.shape[0]:,} rows (the largest is {top:.4g}): no latent would fire, "
                "and nothing would train. Give a threshold below that"
                + (" (or standardise them: --normalize unit)." if cfg.normalize == "none" else ".")
            )

    def loss(self, run, x, f, recon, dead, warm):
        cfg = run.cfg
        threshold = run.sae.log_threshold.exp()
        fired = heaviside(f["pre"].float(), threshold, cfg.jumprelu_bandwidth)
        return recon + cfg.l0_coefficient * warm * fired.sum(dim=-1).mean()


def batch_total(x: torch.Tensor, world: World, floor: float = 0.0) -> torch.Tensor:
    """``sum ||x - mean||^2`` over the whole batch (all ranks' shares), at least ``floor``
    (see ``_Run.batch_total``)."""
    if world.size == 1:
        return (x - x.mean(dim=0)).pow(2).sum().clamp_min(floor)
    xd = x.detach().double()
    s1 = all_sum(xd.sum(dim=0), world)
    s2 = all_sum(xd.pow(2).sum(), world)
    n = x.shape[0] * world.size
    return (s2 - s1.pow(2).sum() / n).float().clamp_min(floor)


def aux_reconstruction(run: _Run, x: torch.Tensor, f: Tensors, dead: torch.Tensor) -> torch.Tensor:
    """The ``k_aux`` largest dead-latent pre-activations, decoded (AuxK, Gao et al. 2024)."""
    sae = run.sae
    k = min(run.k_aux, int(dead.sum()))
    if "idx" in f:
        # Select among the dead latents' columns only (usually a small share).
        columns = dead.nonzero().squeeze(1)
        pre_dead = f["pre"].index_select(1, columns)
        W_dead, b_dead = sae.W_enc.detach()[:, columns], sae.b_enc.detach()[columns]
        values, j = select_topk(pre_dead, k, f["xs"], W_dead, b_dead)
        idx = columns[j]
        vals = topk_encode(x, sae.W_enc, sae.b_enc, f["shift"], values, idx)
        return sparse_decode(vals, idx, sae.W_dec).float()
    masked = f["pre"].masked_fill(~dead, float("-inf"))
    values, idx = masked.topk(k, dim=-1, sorted=False)
    acts = torch.zeros_like(masked).scatter_(-1, idx, values.relu())
    return (acts @ sae.W_dec).float()


class TopKFamilyTraining(TrainingRule):
    """FVU + AuxK on dead latents, decoder rows kept at unit norm (Gao et al. 2024)."""

    uses_sample = True

    @torch.no_grad()
    def init_from_sample(self, run, sample):
        """Scale ``W_enc`` so that the first reconstructions have the least squared error.

        With ``b_enc = 0`` a TopK encoder's choice of latents does not depend on
        its scale, only the latent values do; the scale that best fits the sample,
        ``<x - b_dec, D a> / ||D a||^2``, is a closed form. Starting there (rather
        than at unit-norm encoder columns, whose values overshoot by a factor that
        grows with the input width) spares sign descent, whose steps have a fixed
        size, the first part of the run.
        """
        sae = run.sae
        sample = sample[:2048]  # enough for one scalar; keeps the dense codes small
        centred = sample - sae.b_dec
        acts = sae.encode(sample).acts.float()
        x_hat = acts @ sae.W_dec.float()
        power = float((x_hat * x_hat).sum())
        scale = float((centred * x_hat).sum()) / power if power > 0 else 0.0
        if math.isfinite(scale) and scale > 0:
            sae.W_enc.mul_(scale)

    def loss(self, run, x, f, recon, dead, warm):
        cfg, world = run.cfg, run.world
        x_hat = f["x_hat"]
        # this rank's share of the whole batch's FVU, scaled for gradient averaging
        loss = fvu(x, x_hat, run.batch_total(x)) * world.size
        if cfg.auxk_coefficient and bool(dead.any()):
            residual = (x - x_hat).detach()
            norm = None
            if world.size > 1:
                local = residual.double().pow(2).sum()
                norm = (all_sum(local, world) / (x.shape[0] * world.size)).float()
            aux = auxk_loss(residual, aux_reconstruction(run, x, f, dead), norm)
            loss = loss + cfg.auxk_coefficient * aux
        return loss

    def on_gradients(self, run):
        run.sae.remove_parallel_decoder_grad()

    def after_step(self, run, out):
        if isinstance(run.opt, ScheduleFreeSignSGD):
            run.opt.apply_(run.sae.W_dec, lambda w: w.div_(row_norms(w)))
        else:
            run.sae.set_decoder_norm_to_unit_norm()


class TopKTraining(TopKFamilyTraining):
    """TopK through the sparse kernels (equal to the dense path, tested)."""

    def forward(self, run, x):
        sae = run.sae
        shift = sae.b_dec if sae.cfg.subtracts_b_dec else torch.zeros_like(sae.b_dec.detach())
        with torch.no_grad():
            xs = x - shift
            d = run.select_dtype
            pre = torch.addmm(sae.b_enc.to(d), xs.to(d), sae.W_enc.to(d))
            values, idx = select_topk(pre, sae.cfg.k, xs, sae.W_enc, sae.b_enc)
        vals = topk_encode(x, sae.W_enc, sae.b_enc, shift, values, idx)
        x_hat = sparse_decode(vals, idx, sae.W_dec) + sae.b_dec
        return {
            "x_hat": x_hat.float(),
            "vals": vals,
            "idx": idx,
            "pre": pre,
            "xs": xs,
            "shift": shift,
        }


class BatchTopKTraining(TopKFamilyTraining):
    """BatchTopK: the batch-wide top k x batch, and a running estimate of the
    inference threshold (Bussmann et al. 2024)."""

    def forward(self, run, x):
        if run.world.size == 1:
            return super().forward(run, x)
        # The k x batch largest over the global batch (all ranks), as one process would.
        sae = run.sae
        pre = sae.pre_activations(x)
        n_keep = sae.cfg.k * x.shape[0] * run.world.size
        with torch.no_grad():
            cut = global_topk_threshold(pre.detach().relu(), n_keep, run.world)
        acts = pre * ((pre >= cut) & (pre > 0)).to(pre.dtype)
        return {"x_hat": sae.decode(acts).float(), "acts": acts, "pre": pre}

    def add_stats(self, run, x, f, stats):
        positive = f["acts"][f["acts"] > 0]
        stats["min_positive"] = (
            positive.min().float()
            if positive.numel()
            else torch.tensor(float("inf"), device=x.device)
        )

    def after_step(self, run, out):
        super().after_step(run, out)
        sae = run.sae
        low = all_min(out["min_positive"], run.world).to(sae.threshold.dtype)
        if torch.isfinite(low):
            # Running estimate of the batch-wide cut (Bussmann et al. 2024).
            sae.threshold.copy_(low if run.step == 0 else 0.99 * sae.threshold + 0.01 * low)


#: The training rule of every architecture, by name.
TRAINING: dict[str, TrainingRule] = {
    "relu": ReLUTraining(),
    "topk": TopKTraining(),
    "batchtopk": BatchTopKTraining(),
    "jumprelu": JumpReLUTraining(),
}
assert set(TRAINING) == set(REGISTRY), "every SAE architecture needs a training rule"
