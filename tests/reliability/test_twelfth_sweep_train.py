"""Twelfth hostile sweep, training and evaluation half: a downstream loss that turns
NaN, evaluation and training settings that were named as fields, not flags."""

from __future__ import annotations

import numpy as np


def test_a_nan_downstream_loss_on_one_input_is_named_not_reported_as_nan(
    tmp_path, guarded, run_cli
):
    """`evaluate --model --inputs` with a NaN in one input printed loss_clean nan and
    fraction_recovered nan, exit code 0."""
    cli, one_line_error = run_cli
    x = np.load(guarded.inputs)[:40].copy()
    x[29, 2] = np.nan
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(40) % 8)
    args = ["evaluate", "--sae", guarded.sae, "--acts", guarded.store, "--model", guarded.model]
    args += ["--inputs", tmp_path / "x.npy", "--labels", tmp_path / "y.npy"]
    one_line_error(cli(*args, "--batch-size", "16"), "NaN or Inf on input 29")
