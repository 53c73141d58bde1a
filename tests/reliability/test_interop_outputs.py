"""Imports and exports (ninth sweep): a sparsify run's SAEs went into a store, SAE or
atlas given as --out, the same run (or a joint SAE's SAELens export) could not be written
again into its own folder, and `export-neuronpedia --n-examples 1000000000` ran out of
memory on 300 rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.mark.parametrize("kind", ["store", "sae", "atlas"])
def test_a_sparsify_run_is_not_imported_into_another_output(
    tmp_path, outputs, run_cli, snapshot, kind
):
    """`import-sparsify RUN --out STORE` wrote STORE/layers.0.mlp and STORE/layers.1
    beside the shards, and reported success."""
    cli, one_line = run_cli
    out = shutil.copytree(getattr(outputs, kind), tmp_path / kind)
    before = snapshot(tmp_path)
    what = {"sae": "the SAE", "store": "the activation store"}.get(kind, f"the {kind}")
    run = FIXTURES / "sparsify" / "run"
    one_line(cli("import-sparsify", run, "--out", out, "--overwrite"), f"is {what}", "--out")
    assert snapshot(tmp_path) == before


def test_a_sparsify_run_is_imported_again_into_its_folder(tmp_path, run_cli):
    """The second import, with --overwrite, was refused as writing a folder that holds
    SAEs (the nested-outputs rule); without it, the SAEs there, this very import, are
    kept (one there that is not is refused: test_twentieth_sweep_lead)."""
    cli, _ = run_cli
    run = FIXTURES / "sparsify" / "run"
    first = cli("import-sparsify", run, "--out", tmp_path / "out")
    assert first.exit_code == 0, first.output
    assert cli("import-sparsify", run, "--out", tmp_path / "out").exit_code == 0
    again = cli("import-sparsify", run, "--out", tmp_path / "out", "--overwrite")
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["layers.0.mlp", "layers.1"]


def _joint_relu_sae(path: Path) -> Path:
    """A joint ReLU SAE over two layers whose every latent stays in one layer (exported
    as one SAELens SAE per layer)."""
    import torch

    from saeatlas.sae import SAEConfig, SparseAutoencoder
    from saeatlas.store import LayerSpec

    layers = (LayerSpec("a", 0, 6, (None, 6)), LayerSpec("b", 6, 10, (None, 4)))
    sae = SparseAutoencoder(SAEConfig(architecture="relu", d_in=10, d_sae=6, layers=layers))
    with torch.no_grad():
        sae.W_enc[6:, :3] = sae.W_enc[:6, 3:] = 0
        sae.W_dec[:3, 6:] = sae.W_dec[3:, :6] = 0
    sae.save(path)
    return path


def test_a_joint_sae_is_exported_again_into_its_folder(tmp_path, run_cli):
    """The second export was refused: its folder 'holds the SAE OUT/a', its own first
    export's layer."""
    cli, one_line = run_cli
    sae = _joint_relu_sae(tmp_path / "sae")
    out = tmp_path / "out"
    for _ in range(2):
        r = cli("export-saelens", sae, "--out", out)
        assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]
    shutil.rmtree(out / "b")
    shutil.copytree(sae, out / "b")  # a saeatlas SAE of a layer's name is not the export's
    one_line(cli("export-saelens", sae, "--out", out), "not a SAELens export's", "['b']")
    assert (out / "b" / "sae_weights.safetensors").read_bytes() == (
        sae / "sae_weights.safetensors"
    ).read_bytes()


def test_neuronpedia_examples_beyond_the_rows_are_the_rows(tmp_path, outputs, run_cli):
    """--n-examples 1000000000 allocated a [n_examples, d_sae] table (96 GB) and ended in
    'Out of memory', advising --shard-rows and --d-sae, which the command has not."""
    from saeatlas.structure import AtlasConfig, map_structure

    cli, _ = run_cli
    cfg = AtlasConfig(n_null=2, nulls=("permutation",), n_examples=2)
    atlas = map_structure(outputs.sae, outputs.store, cfg).save(tmp_path / "atlas")
    pages = {}
    for n in (300, 10**12):
        r = cli("export-neuronpedia", atlas, "--out", tmp_path / f"np{n}", "--n-examples", n)
        assert r.exit_code == 0, r.output
        pages[n] = (tmp_path / f"np{n}" / "batch-0.json").read_text()
    assert pages[300] == pages[10**12]  # every row a feature fires on, either way


def test_an_export_names_no_model_of_a_store_captured_again_since_training(tmp_path, make_store):
    # the SAE's recorded store, captured again at its path (another model of the same
    # layer names and widths), gave the SAELens metadata that capture's model name
    import json

    from saeatlas.sae.saelens import export_saelens
    from saeatlas.train import TrainConfig, train_sae

    store = make_store(tmp_path / "store", rows=60)
    cfg = TrainConfig(d_sae=8, k=2, tokens=240, batch_size=30, layers=("2",))
    sae = train_sae(store, cfg, tmp_path / "sae", progress=False).sae

    def metadata():
        export_saelens(sae, tmp_path / "sl")
        return json.loads((tmp_path / "sl" / "cfg.json").read_text())["metadata"]

    assert "model_name" in metadata()
    shutil.rmtree(store)
    make_store(store, rows=60, seed=1)  # other rows at the recorded path
    assert "model_name" not in metadata() and metadata()["hook_name"]
