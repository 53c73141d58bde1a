"""The sixteenth hostile sweep's cases in analysis, atlas files, the report, interop,
export and evaluate: each failed (a wrong or misleading result, a traceback or no word)
before its fix."""

from __future__ import annotations

import numpy as np


def test_evaluate_range_after_skipped_rows_says_which_rows_of_the_file(
    outputs, save_acts, run_cli
):
    """`evaluate --start/--stop --on-nonfinite skip` counts rows without those left out
    (as `--heldout-rows` does), but said nothing of it: `--stop 100` measured rows 0..102
    of the file without a word, and `--stop 300` of a 300-row file was refused as outside
    "the store's 298 rows". Both now say how rows are counted."""
    cli, one_line_error = run_cli
    x = np.load(outputs.npy)
    x[5, 0], x[10, 3] = np.nan, np.inf
    acts = save_acts(x)
    common = ("evaluate", "--sae", outputs.sae, "--acts", acts, "--on-nonfinite", "skip")
    one_line_error(
        cli(*common, "--stop", "300"),
        "outside the store's 298 rows (the 300 rows of the file less the 2 with NaN/Inf",
        "rows are counted without them",
    )
    r = cli(*common, "--start", "0", "--stop", "100")
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())
    assert "they are rows 0..102 of" in said and "2 of them left out" in said, r.output
