"""export-neuronpedia: an atlas of a small GPT-2 written in Neuronpedia's batch layout,
valid against the schema derived from SAEDashboard's exporter, and read back."""

import json

import pytest
import torch
from typer.testing import CliRunner

transformers = pytest.importorskip("transformers")
jsonschema = pytest.importorskip("jsonschema", reason="pip install 'saeatlas[dev]'")

from saeatlas.capture import capture_activations  # noqa: E402
from saeatlas.cli import app  # noqa: E402
from saeatlas.export import BATCH_SCHEMA, NeuronpediaConfig, export_neuronpedia, read_batches  # noqa: E402
from saeatlas.sae import SparseAutoencoder  # noqa: E402
from saeatlas.structure import Atlas, AtlasConfig, map_structure  # noqa: E402
from saeatlas.train import TrainConfig, train_sae  # noqa: E402

WORDS = "the cat sat on a mat and dog ran to big red box in sun".split()


@pytest.fixture(scope="module")
def atlas_run(tmp_path_factory, tiny_gpt2, make_char_tokenizer):
    root = tmp_path_factory.mktemp("np")
    tokenizer = make_char_tokenizer()
    g = torch.Generator().manual_seed(0)
    texts = [
        " ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (3,), generator=g).tolist())
        for _ in range(60)
    ]
    store = capture_activations(
        tiny_gpt2,
        texts,
        ["transformer.h.1"],
        root / "store",
        tokenizer=tokenizer,
        progress=False,
        provenance={"model": "tiny-gpt2", "inputs": "texts.txt"},
    )
    train_sae(
        store,
        TrainConfig(d_sae=48, k=4, tokens=8000, batch_size=128, seed=0),
        root / "sae",
        progress=False,
    )
    atlas = map_structure(root / "sae", store, AtlasConfig(n_null=2))
    atlas.save(root / "atlas")
    return root, store, tokenizer


def test_batches_follow_the_schema_and_hold_what_the_sae_computes(atlas_run, tiny_gpt2):
    root, store, tokenizer = atlas_run
    config = NeuronpediaConfig(features_per_batch=20, n_examples=5, context=4)
    written = export_neuronpedia(
        root / "atlas", root / "np", model=tiny_gpt2, tokenizer=tokenizer, config=config
    )
    batches = read_batches(root / "np")
    assert len(batches) == len(written) >= 1
    for batch in batches:
        jsonschema.validate(batch, BATCH_SCHEMA)
        assert batch["model_id"] == "tiny-gpt2" and batch["layer"] == 1
    features = [f for b in batches for f in b["features"]]
    skipped = json.loads((root / "np" / "skipped_indexes.json").read_text())["skipped_indexes"]
    assert sorted([f["feature_index"] for f in features] + skipped) == list(range(48))

    sae = SparseAutoencoder.load(root / "sae")
    with torch.no_grad():
        acts = sae.encode(store.read()).acts
    rows = store.rows().to_pydict()
    atlas = Atlas.load(root / "atlas")
    module = dict(zip(atlas.features["feature"], atlas.features["module"]))
    w_u = tiny_gpt2.get_output_embeddings().weight.detach().T
    in_modules = [f for f in features if module[f["feature_index"]] >= 0]
    assert in_modules and all(f["correlated_features_indices"] for f in in_modules)
    for f in features:
        i = f["feature_index"]
        col = acts[:, i]
        assert f["frac_nonzero"] == pytest.approx(float((col > 0).float().mean()), abs=1e-6)
        assert sum(f["freq_hist_data_bar_heights"]) == int((col > 0).sum())
        top = f["activations"][0]
        assert top["bin_max"] == pytest.approx(float(col.max()), abs=1e-3)
        best = int(col.argmax())  # the top row's own token is in its context, at its value
        assert rows["token"][best] in top["tokens"]
        assert max(top["values"]) == pytest.approx(float(col.max()), abs=1e-3)
        mates = [j for j in module if j != i and module[j] == module[i]]
        if module[i] >= 0 and mates:  # else (no module, or alone in it) any feature
            assert all(module[j] == module[i] for j in f["correlated_features_indices"])
        effect = sae.W_dec[i].detach() @ w_u
        name = tokenizer.convert_ids_to_tokens(int(effect.argmax()))  # vocab 64, tokenizer 31
        assert f["pos_str"][0] == (name if name is not None else "<|outofrange|>")
        assert f["pos_values"][0] == pytest.approx(float(effect.max()), abs=1e-3)


def test_cli_writes_the_batches_and_refuses_a_model_without_logits(atlas_run, tmp_path):
    root, _, _ = atlas_run
    out = tmp_path / "np"
    result = CliRunner().invoke(
        app, ["export-neuronpedia", str(root / "atlas"), "--out", str(out), "--n-examples", "3"]
    )
    assert result.exit_code == 0, result.output
    (first,) = read_batches(out)[:1]
    assert first["features"][0]["pos_str"] == []  # no model, no logits
    (tmp_path / "m.py").write_text(
        "import torch\ndef build():\n    return torch.nn.Linear(32, 4)\n"
    )
    bad = CliRunner().invoke(
        app,
        [
            "export-neuronpedia",
            str(root / "atlas"),
            "--out",
            str(tmp_path / "b"),
            "--model",
            f"{tmp_path / 'm.py'}:build",
        ],
    )
    assert bad.exit_code == 1 and "no unembedding" in bad.output


def test_logits_of_another_model_than_the_captured_one_are_refused(atlas_run, make_gpt2, tmp_path):
    """A GPT-2 of the same shape with one weight changed lent every feature its
    logits, as if it were the model the SAE read, without a word."""
    from saeatlas.errors import ConfigError

    root, _, tokenizer = atlas_run
    other = make_gpt2(16)
    with torch.no_grad():
        other.transformer.h[0].mlp.c_fc.weight[0, 0] += 1.0
    with pytest.raises(ConfigError, match="not the one the store .* was captured from"):
        export_neuronpedia(root / "atlas", tmp_path / "np", model=other, tokenizer=tokenizer)
    assert not (tmp_path / "np").exists()


def test_an_sae_set_that_is_not_unicode_is_refused():
    # `--sae-set $'\xff'` arrives as a lone surrogate: every batch file named the set
    # "\udcff", which is valid JSON text but no Unicode (Atlas.load refuses the same)
    from saeatlas.errors import ConfigError

    with pytest.raises(ConfigError, match="is not Unicode text"):
        NeuronpediaConfig(sae_set="set\udcff")
