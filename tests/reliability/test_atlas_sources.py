"""The SAE and the store an atlas was made from, and the store an SAE was trained on:
atlas.json and the SAE's cfg.json name them by absolute path (atlas.json also records
their fingerprints), so that what reads them later (export-neuronpedia, export-saelens,
the report) never takes another SAE or store of the same sizes for them without a word."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def made(outputs, tmp_path_factory):
    """An atlas analysed from the protected outputs' folder with relative paths (as a user
    runs `saeatlas analyze --sae sae --acts store` there)."""
    import os

    from saeatlas.structure import AtlasConfig, map_structure

    root = tmp_path_factory.mktemp("made")
    here = os.getcwd()
    os.chdir(outputs.root)
    try:
        atlas = map_structure("sae", "store", AtlasConfig(n_null=2, nulls=("permutation",)))
    finally:
        os.chdir(here)
    atlas.save(root / "atlas")
    return root / "atlas"


def _other_sae(outputs, path):
    """The protected SAE with other decoder weights: the sizes of a seed SAE."""
    from saeatlas.sae import SparseAutoencoder

    sae = SparseAutoencoder.load(outputs.sae)
    with torch.no_grad():
        sae.W_dec.mul_(-1)
    sae.save(path)
    return path


def test_export_from_another_directory_reads_the_atlas_own_sae(
    tmp_path, outputs, made, run_cli, monkeypatch
):
    """atlas.json held the paths as given ('sae', 'store'): an export run from a directory
    holding another 'sae' of the same sizes exported that SAE's features under the
    atlas's modules."""
    from saeatlas.export import read_batches
    from saeatlas.sae import SparseAutoencoder

    cli, _ = run_cli
    _other_sae(outputs, tmp_path / "sae")
    shutil.copytree(outputs.store, tmp_path / "store")
    monkeypatch.chdir(tmp_path)
    r = cli("export-neuronpedia", made, "--out", tmp_path / "np", "--n-examples", "2")
    assert r.exit_code == 0, r.output
    w_dec = SparseAutoencoder.load(outputs.sae).W_dec.detach()
    for f in read_batches(tmp_path / "np")[0]["features"]:
        units = f["neuron_alignment_indices"]
        want = w_dec[f["feature_index"], units].numpy()
        np.testing.assert_allclose(f["neuron_alignment_values"], want, atol=1e-3)


def test_export_refuses_another_sae_of_the_same_sizes(tmp_path, outputs, made, run_cli):
    cli, one_line = run_cli
    other = _other_sae(outputs, tmp_path / "seed1")
    args = ["--out", tmp_path / "np", "--sae", other]
    one_line(cli("export-neuronpedia", made, *args), "not the one the atlas was made from")
    assert not (tmp_path / "np").exists()


def test_export_refuses_another_store_of_the_same_shape(tmp_path, outputs, made, run_cli):
    """Rows of other inputs (or another model) with the atlas's layers and widths."""
    cli, one_line = run_cli
    x = np.load(outputs.npy)
    np.save(tmp_path / "acts.npy", x[::-1].copy())
    shutil.copy(outputs.root / "acts.layers.json", tmp_path / "acts.layers.json")
    args = ["--out", tmp_path / "np", "--acts", tmp_path / "acts.npy"]
    one_line(cli("export-neuronpedia", made, *args), "rows differ", "--acts")
    assert not (tmp_path / "np").exists()
    # the same rows as a .npy are the atlas's store
    np.save(tmp_path / "acts.npy", x)
    r = cli("export-neuronpedia", made, "--out", tmp_path / "np", "--acts", tmp_path / "acts.npy")
    assert r.exit_code == 0, r.output


def test_atlas_json_names_the_sae_and_store_by_absolute_path(outputs, made):
    summary = json.loads((made / "atlas.json").read_text())
    assert summary["sae"]["path"] == str(outputs.sae.resolve())
    assert summary["store"] == str(outputs.store.resolve())


def test_export_saelens_from_another_directory_reads_the_sae_own_store(
    tmp_path, outputs, run_cli, monkeypatch
):
    """cfg.json named the training store as given ('store'): an export run from a directory
    holding another 'store' with the same layers wrote that store's model and dataset
    into the SAELens metadata."""
    cli, _ = run_cli
    (tmp_path / "a").mkdir()
    shutil.copytree(outputs.store, tmp_path / "a" / "store")
    monkeypatch.chdir(tmp_path / "a")
    args = ["--layers", "1", "--seeds", "1", "--d-sae", "8", "--k", "2", "--tokens", "256", "-q"]
    r = cli("train", "--acts", "store", "--out", "sae", *args)
    assert r.exit_code == 0, r.output
    other = tmp_path / "b" / "store"
    shutil.copytree(outputs.store, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["provenance"].update(model="another-model", inputs="other/data.txt")
    (other / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.chdir(tmp_path / "b")
    r = cli("export-saelens", tmp_path / "a" / "sae", "--out", tmp_path / "sl")
    assert r.exit_code == 0, r.output
    metadata = json.loads((tmp_path / "sl" / "cfg.json").read_text())["metadata"]
    assert metadata["model_name"] == outputs.model, metadata


def test_export_of_a_joint_sae_says_what_its_layer_and_units_are(tmp_path, made):
    """A batch names one `layer`: for an SAE over two layers it named the first, and the
    second layer's units (10-17) as that layer's, without a word."""
    from saeatlas.export import export_neuronpedia, read_batches

    with pytest.warns(UserWarning, match=r"reads 2 layers \(\['1', '3'\]\).*unit numbers"):
        export_neuronpedia(made, tmp_path / "np")
    (batch,) = read_batches(tmp_path / "np")
    assert batch["layer"] == 1
    named = {i for f in batch["features"] for i in f["neuron_alignment_indices"]}
    assert max(named) >= 10  # units of layer '3', by the atlas's numbering


def test_an_atlas_replaced_while_it_is_read_is_refused(tmp_path, made, monkeypatch):
    """Atlas.load read atlas.json, then the tables one by one: an `analyze --overwrite`
    swapping in its atlas between them gave one atlas's summary over another's tables."""
    from saeatlas.structure import atlas as atlas_mod
    from saeatlas.structure.atlas_format import AtlasFileError

    shutil.copytree(made, tmp_path / "atlas")
    shutil.copytree(made, tmp_path / "next")
    read = atlas_mod.pq.read_table

    def swap_then_read(file, *args, **kwargs):
        if (tmp_path / "next").exists():  # the other analysis's swap, after atlas.json
            (tmp_path / "atlas").rename(tmp_path / "old")
            (tmp_path / "next").rename(tmp_path / "atlas")
        return read(file, *args, **kwargs)

    monkeypatch.setattr(atlas_mod.pq, "read_table", swap_then_read)
    with pytest.raises(AtlasFileError, match="was replaced .* while it was read"):
        atlas_mod.Atlas.load(tmp_path / "atlas")


def test_an_ablation_refuses_the_means_of_another_store(tmp_path, outputs):
    # `ablate_atlas(atlas, model, inputs, store)` with a capture of other inputs through
    # the same layers: the ablated units were set to that capture's means without a word
    from saeatlas.capture import load_model
    from saeatlas.errors import ConfigError
    from saeatlas.structure import AtlasConfig, map_structure
    from saeatlas.structure.causal.ablation import ablate_atlas

    atlas = map_structure(outputs.sae, outputs.store, AtlasConfig(n_null=2, nulls=("permutation",)))
    other = np.load(outputs.npy)[::-1].copy()  # the same rows in another order
    np.save(tmp_path / "other.npy", other)
    shutil.copy(outputs.root / "acts.layers.json", tmp_path / "other.layers.json")
    model = load_model(outputs.model).model
    x = np.load(outputs.inputs)[:8]
    with pytest.raises(ConfigError, match="is not the one the atlas was made from"):
        ablate_atlas(atlas, model, x, tmp_path / "other.npy", loss_fn=lambda o, b: o.sum(1))
