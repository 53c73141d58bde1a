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


def test_the_cli_control_line_names_the_sae_modules_it_compares(capsys):
    """Under a table of the units' correlation modules (three, with units), the random-SAE
    control's line said "no unit is in a module of it or of the real atlas": it compares
    the trained SAE's own modules (none here), not the ones the table lists."""
    import pandas as pd

    from saeatlas.cli.tables import print_atlas
    from saeatlas.structure.atlas import Atlas

    modules = pd.DataFrame(
        {
            "module": [0],
            "n_units": [3],
            "n_features": [2],
            "layers": [["a"]],
            "z": [4.0],
            "p": [0.01],
            "significant": [True],
        }
    )
    summary = {
        "n_modules": 1,
        "module_kind": "co-activation",
        "message": "1 reproducible module of correlated units, visible without the SAE.",
        "modules_from": "unit_correlations",
        "control": {"n_significant_modules": 0, "unit_ari": None},
    }
    atlas = Atlas(units=pd.DataFrame(), features=pd.DataFrame(), modules=modules, summary=summary)
    print_atlas(atlas)
    out = " ".join(capsys.readouterr().out.split())
    assert "of the real atlas" not in out, out
    assert "no unit is in a module of it or of the trained SAE's own modules" in out, out
    summary["control"]["unit_ari"] = 0.5
    print_atlas(atlas)
    out = " ".join(capsys.readouterr().out.split())
    assert "unit modules' ARI with the trained SAE's own 0.50." in out, out


def test_a_table_without_a_column_every_reader_needs_is_refused(
    tmp_path, two_modules_atlas, run_cli
):
    """`atlas.features = atlas.features.set_index('feature')` was saved without the
    `feature` column (pandas' index is not written) and loaded back without a word; the
    Neuronpedia export of such an atlas ended in a KeyError traceback."""
    import pandas as pd
    import pytest

    from saeatlas.structure.atlas import Atlas
    from saeatlas.structure.atlas_format import AtlasFileError

    cli, one_line_error = run_cli
    path = two_modules_atlas(tmp_path / "atlas")
    atlas = Atlas.load(path)
    atlas.features = atlas.features.set_index("feature")
    with pytest.raises(AtlasFileError, match=r"lacks the columns \['feature'\] \(`feature` is"):
        atlas.save(tmp_path / "edited")
    assert not (tmp_path / "edited").exists()
    pd.DataFrame({"module": [0, 1, 1, -1]}).to_parquet(path / "features.parquet", index=False)
    one_line_error(
        cli("export-neuronpedia", path, "--out", tmp_path / "np"),
        "features.parquet",
        "lacks the columns ['feature']",
    )
