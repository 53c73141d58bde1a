"""The thirteenth hostile sweep's cases in analysis, atlas files, report, interop and
export: each failed (a wrong result, a traceback or no word) before its fix."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from saeatlas.sae import SparseAutoencoder


def test_an_sae_of_other_rows_is_analysed_as_a_transfer_with_a_warning(tmp_path, outputs, caplog):
    """An SAE trained on another store of the same layers (other inputs, or another
    model) was analysed without a word, under the atlas's name; `evaluate --model` of
    another network warns that its figure is a transfer, and so does the analysis now."""
    from saeatlas.structure import AtlasConfig
    from saeatlas.structure.inputs import prepare

    cfg = AtlasConfig(n_null=2, nulls=("permutation",))
    prepare(outputs.sae, outputs.store, cfg)  # its own rows: no word
    assert "transfer" not in caplog.text
    sae = SparseAutoencoder.load(outputs.sae)
    meta = {**sae.cfg.metadata, "rows_digest": "0123456789abcdef"}
    SparseAutoencoder(replace(sae.cfg, metadata=meta)).save(tmp_path / "other")
    prepare(tmp_path / "other", outputs.store, cfg)
    assert "trained on other rows" in caplog.text and "0123456789abcdef" in caplog.text
    assert "transfer analysis" in caplog.text


def test_csv_labels_are_read_as_csv(tmp_path):
    """A `.csv` given as --labels was read as text, one label per line: `"a, b"` kept its
    quotes, `""` stayed doubled, and a quoted label over two lines became two labels."""
    from saeatlas.capture import load_labels
    from saeatlas.errors import InputsError

    (tmp_path / "one.csv").write_text('"a, b"\n"say ""hi"""\n"two\nlines"\nplain\n\n')
    assert load_labels(tmp_path / "one.csv").tolist() == ["a, b", 'say "hi"', "two\nlines", "plain"]
    (tmp_path / "named.csv").write_text('id,label\n1,"x,y"\n2,z\n')
    assert load_labels(tmp_path / "named.csv").tolist() == ["x,y", "z"]
    (tmp_path / "two.csv").write_text("a,b\n")
    with pytest.raises(
        InputsError, match=r"no column `label`: its first line holds the columns 'a', 'b'"
    ):
        load_labels(tmp_path / "two.csv")
    (tmp_path / "open.csv").write_text('"abc\n')
    with pytest.raises(InputsError, match="is not CSV"):
        load_labels(tmp_path / "open.csv")


def test_an_empty_modules_table_under_counted_modules_is_refused(tmp_path, outputs):
    """modules.parquet written as an empty table (no columns) while atlas.json counts two
    significant modules was read: the verdict was checked only against a table with a
    `significant` column."""
    from saeatlas.structure.atlas import Atlas
    from saeatlas.structure.atlas_format import AtlasFileError

    atlas = shutil.copytree(outputs.atlas, tmp_path / "atlas")
    summary = json.loads((atlas / "atlas.json").read_text())
    edited = {**summary, "verdict": "modules", "significant": True, "n_significant_modules": 2}
    (atlas / "atlas.json").write_text(json.dumps(edited))
    pd.DataFrame().to_parquet(atlas / "modules.parquet")
    with pytest.raises(AtlasFileError, match="n_significant_modules 2, but modules.parquet has 0"):
        Atlas.load(atlas)
    (atlas / "atlas.json").write_text(json.dumps({**edited, "n_significant_modules": 0}))
    with pytest.raises(AtlasFileError, match="says verdict 'modules'"):
        Atlas.load(atlas)


def test_an_sae_with_no_two_testable_features_is_not_told_to_raise_k():
    """An SAE whose every latent fires on every row (k = d_sae: all dense, kept out of
    modules) or of one latent has no pair of features to test; the verdict's sentence
    said 'no two features fire together more often than chance ... use a larger k'."""
    from saeatlas.structure.atlas import Atlas
    from saeatlas.structure.inference.outcome import decide

    summary = {
        "graph": {"n_edges": 0, "n_tests": 0},
        "sae": {"d_sae": 6, "k": 6},
        "config": {"max_density": 0.3},
        "n_dense_features": 6,
        "n_global_mode_features": 0,
        "n_rows_encoded": 400,
        "mean_l0": 5.5,
        "nulls": [{"null": "permutation"}],
    }
    atlas = Atlas(
        units=pd.DataFrame({"unit": [0], "module": [-1]}),
        features=pd.DataFrame({"feature": np.arange(6), "module": -1}),
        modules=pd.DataFrame({"module": pd.Series([], dtype=int)}),
        summary=summary,
    )
    decide(atlas)
    message = atlas.summary["message"]
    assert "fewer than two of the SAE's 6 features can be tested" in message, message
    assert "6 fire on more than 30%" in message and "larger k" not in message


def _copied_sae(outputs, folder, **metadata):
    """The protected SAE copied to ``folder``, ``metadata`` over its cfg.json's."""
    shutil.copytree(outputs.sae, folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["metadata"] = {**cfg["metadata"], **metadata}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def test_seed_saes_of_a_transfer_analysis_are_trained_on_the_saes_own_rows(tmp_path, outputs):
    """`analyze --seeds 2` of an SAE on another store's rows trained `<sae>-seed1` on the
    analysed rows, refused it as a seed SAE of other rows, and left it there to block the
    analysis of the SAE's own store ('differs ... Delete it')."""
    from saeatlas.errors import ConfigError
    from saeatlas.structure.inference.seeds import train_seed_saes

    sae = _copied_sae(outputs, tmp_path / "sae")
    mine = json.loads((sae / "cfg.json").read_text())["metadata"]["rows_digest"]
    (seed,) = train_seed_saes(sae, outputs.npy, 2)  # the same rows in a .npy: other rows
    assert json.loads((seed / "cfg.json").read_text())["metadata"]["rows_digest"] == mine
    gone = _copied_sae(outputs, tmp_path / "moved", store=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"trained on other rows .* --seed-sae"):
        train_seed_saes(gone, outputs.npy, 2)
    assert not (tmp_path / "moved-seed1").exists()


@pytest.mark.parametrize("table", ["units", "features"])
def test_a_table_without_its_module_column_under_listed_modules_is_refused(
    tmp_path, table, two_modules_atlas
):
    """units.parquet or features.parquet with the `module` column dropped, under a
    modules.parquet of two modules, was read (the report refused it, but
    `export-neuronpedia` took every feature for one of no module)."""
    from saeatlas.structure.atlas import Atlas
    from saeatlas.structure.atlas_format import AtlasFileError

    path = two_modules_atlas(tmp_path / "atlas")
    Atlas.load(path)
    frame = pd.read_parquet(path / f"{table}.parquet")
    frame.drop(columns=["module"]).to_parquet(path / f"{table}.parquet")
    with pytest.raises(AtlasFileError, match=rf"{table}.parquet .* no `module` column.* 2 modules"):
        Atlas.load(path)


def test_a_store_of_many_units_is_told_the_correlation_view_may_take_hours(
    outputs, caplog, monkeypatch
):
    """The units' correlation view decomposes the units' correlations, a cost cubic in
    the units: all of GPT-2 small's residual stream (9,216 units) would take hours on a
    CPU. Above MANY_UNITS it says so once, before it starts."""
    from saeatlas.structure import AtlasConfig
    from saeatlas.structure.inference import correlation
    from saeatlas.structure.inputs import prepare

    cfg = AtlasConfig(n_null=2, nulls=("permutation",))
    inp = prepare(outputs.sae, outputs.store, cfg)
    n_units = inp.mode.corr.shape[0]
    monkeypatch.setattr(correlation, "MANY_UNITS", n_units)
    correlation.correlation_view(inp)
    assert "may take hours" not in caplog.text  # at the bound: no word
    inp = prepare(outputs.sae, outputs.store, cfg)
    monkeypatch.setattr(correlation, "MANY_UNITS", n_units - 1)
    correlation.correlation_view(inp)
    correlation.correlation_view(inp, clean=True)
    assert caplog.text.count("may take hours") == 1 and f"{n_units:,} units" in caplog.text
