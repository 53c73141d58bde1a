"""Learning-rate and sparsity-coefficient schedules, as functions of the step."""

from __future__ import annotations

import math


def lr_factor(step: int, n_steps: int, warmup_steps: int, decay: str, decay_start: float) -> float:
    """Multiplier of the base learning rate: linear warmup, then constant until
    ``decay_start`` (a fraction of training), then ``linear`` or ``cosine`` decay to 0."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    start = int(decay_start * n_steps)
    if decay == "none" or step < start or n_steps <= start:
        return 1.0
    t = (step - start) / max(1, n_steps - start)
    return 1.0 - t if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))


def sparsity_factor(step: int, warmup_steps: int) -> float:
    """Multiplier of the sparsity coefficient: linear warmup from 0 (Anthropic, April 2024)."""
    return 1.0 if not warmup_steps else min(1.0, (step + 1) / warmup_steps)
