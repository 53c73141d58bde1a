"""What training starts from: the input normalisation and the decoder bias."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..store import ActivationStore, LayerSpec

log = logging.getLogger(__name__)

#: The RMS per unit within which raw activations (``normalize="none"``) train as
#: well as standardised ones do: outside it the warning of :func:`input_normalizer`.
RAW_SCALE = (0.1, 100.0)

#: float32's smallest normal number: no smaller spread is a usable float32 scale.
FLOAT32_TINY = float(np.finfo(np.float32).tiny)
FLOAT32_MAX = float(np.finfo(np.float32).max)


def input_normalizer(
    store: ActivationStore,
    columns: slice | torch.Tensor,
    layers: Sequence[LayerSpec],
    mode: str,
    batch_size: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, scale)`` ``[d_in]`` so that the SAE sees ``(x - mean) / scale``, in
    batches of ``batch_size`` rows.

    - ``unit``: each unit standardised (units of very
      different scale otherwise dominate the reconstruction loss).
    - ``layer``: centred, one scale per layer so that each layer's mean squared
      norm equals its width (the fixed-norm normalisation of Gao et al. 2024,
      applied per layer as in Lindsey et al. 2024 for crosscoders).
    - ``none``: identity.
    """
    mean = np.asarray(store.mean, dtype=np.float64)[columns]
    std = np.asarray(store.std, dtype=np.float64)[columns]
    varies = unit_varies(mean, std)
    if not varies.any():
        raise ConfigError(
            f"Every unit of '{store.path}' (layers {[l.name for l in layers]}) is constant "
            f"(or varies by less than float32's smallest normal number, {FLOAT32_TINY:.3g}): "
            "an SAE has nothing to learn. Capture activations of varied inputs."
        )
    if mode == "none":
        # a batch's squared error (b_dec starts at the rows' median: their spread counts),
        # and float32's rounding of values that large (a unit held at 1e30 spreads by its
        # step, 7.6e22, around a batch's mean): the loss divided by an Inf total was 0, and
        # the run trained nothing and logged an FVU of 0
        spread = np.sqrt(std**2 + (float(np.finfo(np.float32).eps) * mean) ** 2)
        if 4 * batch_size * float((spread**2).sum()) >= FLOAT32_MAX:
            top = int(np.argmax(spread))  # was "Training diverged ... Lower the learning rate"
            layer = next(l for l in layers if l.start <= top < l.stop)
            raise ConfigError(
                f"With --normalize none the SAE sees '{store.path}' at its own scale, where "
                f"unit {top - layer.start} of layer '{layer.name}' has a standard deviation of "
                f"{std[top]:.3g} (and a mean of {mean[top]:.3g}): a batch's squared error "
                "overflows float32, the precision of the loss, whatever the learning rate. Use "
                "--normalize unit or layer (the scale is folded into the saved SAE, exactly)."
            )
        rms = float(np.sqrt(np.mean(std[varies] ** 2 + mean[varies] ** 2)))
        if not RAW_SCALE[0] <= rms <= RAW_SCALE[1]:
            log.warning(
                "With --normalize none the SAE sees '%s' at its own scale, RMS %.3g per unit, "
                "far from the order-1 values its initialisation and learning rate are made "
                "for: training may not learn it. Use --normalize layer (one scale per layer, "
                "the units' relative sizes kept) or unit.",
                store.path,
                rms,
            )
        return torch.zeros(len(mean)), torch.ones(len(mean))
    if mode == "unit":
        # Constant units get scale 1: they carry nothing and must not blow up.
        scale = np.where(varies, std, 1.0)
        return torch.from_numpy(mean).float(), torch.from_numpy(scale).float()
    scale = np.ones_like(mean)
    for layer in layers:
        part = slice(layer.start, layer.stop)
        rms = float(np.sqrt((std[part] ** 2).mean()))
        scale[part] = rms if rms >= FLOAT32_TINY else 1.0
    return torch.from_numpy(mean).float(), torch.from_numpy(scale).float()


def unit_varies(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``[d_in]`` bool: which units vary, from their ``mean`` and ``std`` ``[d_in]``.

    A unit is constant when its spread is below what float32 values near its mean can
    show (and float64 moments can cancel to), judged per unit so that no scale of the
    activations, however small, reads as constant. A spread below float32's smallest
    normal number cannot be a float32 scale: its inverse, folded into the weights,
    overflows (GELU's tails give such units; the training stopped as "diverged" and
    advised a lower learning rate)."""
    std = np.asarray(std)
    return (std > 1e-7 * np.abs(np.asarray(mean))) & (std >= FLOAT32_TINY)


def geometric_median(x: torch.Tensor, n_iter: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """The point minimising the summed Euclidean distance to the rows of ``x``
    ``[n, d]`` → ``[d]``, by Weiszfeld's algorithm (the ``b_dec`` initialisation
    of Bricken et al. 2023)."""
    x = x.to(torch.float64)
    y = x.mean(dim=0)
    for _ in range(n_iter):
        w = 1.0 / (x - y).norm(dim=1).clamp_min(1e-12)
        y_new = (w[:, None] * x).sum(dim=0) / w.sum()
        if (y_new - y).norm() <= tol * max(1.0, float(y.norm())):
            y = y_new
            break
        y = y_new
    return y.float()
