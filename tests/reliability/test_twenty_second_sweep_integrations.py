"""The twenty-second hostile sweep's cases in the integrations and runs past one process
(the Neuronpedia export, sparsify checkpoints, the SAELens export, TransformerLens and
nnsight models, `saeatlas run` configs, `torchrun` ranks): each was refused wrongly,
ended in a traceback or a misleading message, or wrote something other than it said
before its fix."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def l2norm(tmp_path_factory):
    """An atlas of an SAE on one layer named `encoder.l2norm` (digits, but no block index)."""
    from saeatlas.structure import AtlasConfig, map_structure
    from saeatlas.train import TrainConfig, train_sae

    root = tmp_path_factory.mktemp("l2norm")
    x = np.random.default_rng(1).exponential(size=(100, 6)).astype(np.float32)
    np.save(root / "acts.npy", x)
    layers = [{"name": "encoder.l2norm", "start": 0, "stop": 6}]
    (root / "acts.layers.json").write_text(json.dumps(layers))
    cfg = TrainConfig(d_sae=10, k=3, tokens=400, batch_size=32)
    train_sae(root / "acts.npy", cfg, root / "sae", progress=False)
    atlas = AtlasConfig(n_null=2, nulls=("permutation",), n_examples=2)
    map_structure(root / "sae", root / "acts.npy", atlas).save(root / "atlas")
    return root


def test_neuronpedia_layer_is_not_the_digits_of_a_module_name(l2norm, run_cli):
    """A layer named `encoder.l2norm` was filed under Neuronpedia layer 2 (the first
    digits in its name); it has no block index, so --layer is asked for."""
    from saeatlas.export import read_batches

    cli, one_line = run_cli
    out = l2norm / "np"
    one_line(cli("export-neuronpedia", l2norm / "atlas", "--out", out),
             "'encoder.l2norm'", "no block index", "--layer")  # fmt: skip
    assert not out.exists()
    r = cli("export-neuronpedia", l2norm / "atlas", "--out", out, "--layer", "5")
    assert r.exit_code == 0, r.output
    assert {b["layer"] for b in read_batches(out)} == {5}


@pytest.mark.parametrize(
    "name, want",
    [
        ("blocks.3.hook_resid_post", 3),
        ("blocks.0.ln2", 0),
        ("transformer.h.11.mlp:input", 11),
        ("model.layers.12.mlp", 12),
        ("1", 1),
        ("encoder.l2norm", "no block index"),
        ("fc2", "no block index"),
        ("ln2.blocks.0", "a number in 'ln2'"),
        ("layer4.1.conv2", "a number in 'layer4'"),
        ("layers.3.experts.7.w1", "several block indices (3, 7)"),
        ("x.1234567890", "past 999,999,999"),
    ],
)
def test_neuronpedia_layer_is_the_block_index(name, want):
    """The layer number was the first digits anywhere in the name: `ln2.blocks.0` was 2,
    `layer4.1.conv2` 4 and `layers.3.experts.7` 3 without a word."""
    from saeatlas.errors import ConfigError
    from saeatlas.export.neuronpedia import _layer_number

    if isinstance(want, int):
        assert _layer_number(name, None) == want
    else:
        with pytest.raises(ConfigError, match="--layer") as e:
            _layer_number(name, None)
        assert want in str(e.value)
