"""The checks of what a sweep sweeps: a setting the architecture reads, and values it can
take that give distinct SAEs (shared by :func:`.sweep.sweep` and ``saeatlas sweep``'s
early check)."""

from __future__ import annotations

import math

import numpy as np

from .._validation import shown
from ..errors import ConfigError
from ..sae.architectures import get_architecture
from .members import SWEEPABLE


def check_swept_setting(architecture: str, over: str) -> None:
    """Refuse a swept setting that ``architecture`` does not read."""
    setting = get_architecture(architecture).sparsity_setting
    if over != setting:
        raise ConfigError(
            f"A {architecture} SAE's sparsity is set by `{setting}`, not `{over}`: every "
            f"member would be the same SAE. Sweep --over {setting}, or choose the architecture "
            f"that `{over}` belongs to (--architecture)."
        )


def check_sweep_values(over: str, values: list[float]) -> None:
    """Refuse a setting that cannot be swept, or values it cannot take."""
    if over not in SWEEPABLE:
        raise ConfigError(f"Cannot sweep over {shown(over)}; expected one of: {list(SWEEPABLE)}.")
    if len(values) < 2:
        raise ConfigError("A sweep needs at least two --values.")
    bad = [
        v
        for v in values
        if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0)
    ]
    if bad:
        raise ConfigError(f"--values must be finite positive numbers, got {bad}.")
    if over == "k" and any(float(v) != int(v) for v in values):
        raise ConfigError(f"--values of k must be whole numbers, got {list(values)}.")
    repeated = sorted({float(v) for v in values if [float(u) for u in values].count(float(v)) > 1})
    if repeated:  # two members would be trained into one directory
        raise ConfigError(f"--values repeats {repeated}; give each value once.")
    # the penalty is computed in float32: 1e-320 and 2e-320 (both 0), or 1 and 1.00000001,
    # trained the same SAE under two values, without a word
    trained = [as_trained(v) for v in values]
    for i, v in enumerate(values):  # (beyond float32's range the settings' own check says so)
        if trained[i] == 0 or trained[i] in trained[:i] and math.isfinite(trained[i]):
            what = "0" if trained[i] == 0 else f"the same as {values[trained.index(trained[i])]!r}"
            raise ConfigError(
                f"--values {v!r} is {what} in float32, the precision the SAEs are trained in: "
                "members would be the same SAE. Give values that differ in float32 (at least "
                "1.4e-45, and apart by more than a part in 10**7)."
            )


def as_trained(value: float) -> float:
    """``value`` as the SAEs' float32 weights and penalties hold it."""
    with np.errstate(over="ignore"):
        return float(np.float32(value))
