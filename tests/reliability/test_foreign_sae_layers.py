"""SAEs of other tools against the store's layers, and back out (eighth sweep): a
SAELens SAE names its hook point in `metadata.hook_name`, which was ignored, so an SAE
of one layer was analysed on another layer of the same width without a word, and a
store holding its layer beside others was refused; a bfloat16 JumpReLU SAE fired off its
own thresholds, and was exported with other ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parents[1] / "fixtures"
HOOK = "blocks.1.hook_resid_post"


def _saelens_sae(tmp_path, hook=HOOK, old=False):
    """The SAELens topk fixture (d_in 16) trained on ``hook`` (the top-level key of
    configs older than SAELens 6 with ``old``)."""
    sae = shutil.copytree(FIXTURES / "saelens" / "topk", tmp_path / "sae")
    cfg = json.loads((sae / "cfg.json").read_text())
    if old:
        cfg["hook_name"] = hook
    else:
        cfg["metadata"]["hook_name"] = hook
    (sae / "cfg.json").write_text(json.dumps(cfg))
    return sae


def _store(tmp_path, names):
    x = np.random.default_rng(0).normal(size=(40, 16 * len(names))).astype(np.float32)
    np.save(tmp_path / "acts.npy", x)
    layers = [{"name": n, "start": 16 * i, "stop": 16 * (i + 1)} for i, n in enumerate(names)]
    (tmp_path / "acts.layers.json").write_text(json.dumps(layers))
    return tmp_path / "acts.npy"


@pytest.mark.parametrize("old", [False, True])
def test_a_saelens_sae_reads_the_store_layer_its_hook_names(tmp_path, old):
    # the store holds the hook's layer beside another: refused as "16 units ... the
    # store has 32", though the layer the SAE was trained on is there by name
    from saeatlas.sae import SparseAutoencoder
    from saeatlas.sae.model import sae_layers
    from saeatlas.store import ActivationStore

    sae = SparseAutoencoder.load(_saelens_sae(tmp_path, old=old))
    store = ActivationStore.open(_store(tmp_path, ["blocks.0.hook_resid_post", HOOK]))
    assert [(l.name, l.start, l.stop) for l in sae_layers(sae, store)] == [(HOOK, 16, 32)]


def test_a_saelens_sae_of_another_hook_is_named_when_analysed(tmp_path):
    # a store of one other layer of the same width was read as the SAE's input without
    # a word (an SAE of block 1 mapped on block 0's units)
    from saeatlas.errors import ShapeError
    from saeatlas.sae import SparseAutoencoder
    from saeatlas.sae.model import sae_layers
    from saeatlas.store import ActivationStore

    sae = SparseAutoencoder.load(_saelens_sae(tmp_path))
    store = ActivationStore.open(_store(tmp_path, ["blocks.0.hook_resid_post"]))
    with pytest.warns(UserWarning, match=f"trained on the hook '{HOOK}'.*no layer of that name"):
        sae_layers(sae, store)
    wide = ActivationStore.open(_store(tmp_path, ["a", "b"]))
    with pytest.raises(ShapeError, match=f"SAELens's `hook_name` '{HOOK}'"):
        sae_layers(sae, wide)


def test_a_saelens_sae_exported_again_keeps_its_hook_and_weights(tmp_path):
    # the export of an imported SAELens SAE wrote no hook_name (and none of its metadata)
    from safetensors.torch import load_file

    from saeatlas.sae import SparseAutoencoder
    from saeatlas.sae.saelens import export_saelens

    src = _saelens_sae(tmp_path)
    assert export_saelens(SparseAutoencoder.load(src), tmp_path / "out") == {HOOK: tmp_path / "out"}
    before, after = (json.loads((d / "cfg.json").read_text()) for d in (src, tmp_path / "out"))
    assert {k: v for k, v in after["metadata"].items() if k in before["metadata"]} == before[
        "metadata"
    ]
    assert {k: after.get(k) for k in before if k != "metadata"} == {
        k: v for k, v in before.items() if k != "metadata"
    }
    w0, w1 = (load_file(d / "sae_weights.safetensors") for d in (src, tmp_path / "out"))
    assert w0.keys() == w1.keys()
    for k in w0:  # bit for bit
        assert w0[k].dtype == w1[k].dtype and w0[k].numpy().tobytes() == w1[k].numpy().tobytes()


def test_a_bfloat16_jumprelu_sae_keeps_its_thresholds(tmp_path):
    # the thresholds were kept as bfloat16 logs: 7 of 32 moved by up to 0.7%, so the
    # SAE fired off SAELens's own definition, and an export wrote the moved ones
    import torch
    from safetensors.torch import load_file, save_file

    from saeatlas.sae import SparseAutoencoder
    from saeatlas.sae.saelens import export_saelens

    src = shutil.copytree(FIXTURES / "saelens" / "jumprelu", tmp_path / "sae")
    g = torch.Generator().manual_seed(0)
    w = {k: v.to(torch.bfloat16) for k, v in load_file(src / "sae_weights.safetensors").items()}
    w["threshold"] = (torch.rand(w["threshold"].shape, generator=g) * 0.5 + 0.05).bfloat16()
    save_file(w, src / "sae_weights.safetensors")
    cfg = json.loads((src / "cfg.json").read_text())
    (src / "cfg.json").write_text(json.dumps({**cfg, "dtype": "bfloat16"}))
    sae = SparseAutoencoder.load(src)
    x = torch.randn(2000, cfg["d_in"], generator=g).bfloat16()
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]  # SAELens's JumpReLU, in its dtype
    assert torch.equal(sae.encode(x).acts, torch.relu(pre) * (pre > w["threshold"]))
    export_saelens(sae, tmp_path / "out")
    back = load_file(tmp_path / "out" / "sae_weights.safetensors")
    assert all(back[k].dtype == torch.bfloat16 and torch.equal(back[k], w[k]) for k in w)


def test_an_atlas_of_a_saelens_sae_exports_the_layer_its_hook_names(tmp_path):
    # export-neuronpedia checked the SAE's width against the whole store on its own
    # ("reads 16 units but the store gives 32"), not the layer the atlas was made from
    from saeatlas.export import export_neuronpedia, read_batches
    from saeatlas.structure import AtlasConfig, map_structure

    sae = _saelens_sae(tmp_path)
    x = np.abs(np.random.default_rng(0).normal(size=(300, 32))).astype(np.float32)
    np.save(tmp_path / "acts.npy", x)
    layers = [{"name": "blocks.0.hook_resid_post", "start": 0, "stop": 16}]
    layers.append({"name": HOOK, "start": 16, "stop": 32})
    (tmp_path / "acts.layers.json").write_text(json.dumps(layers))
    cfg = AtlasConfig(n_null=2, nulls=("permutation",), n_examples=2, control=False)
    atlas = map_structure(sae, tmp_path / "acts.npy", cfg).save(tmp_path / "atlas")
    assert json.loads((atlas / "atlas.json").read_text())["layers"] == [HOOK]
    export_neuronpedia(atlas, tmp_path / "np")
    (batch,) = read_batches(tmp_path / "np")
    assert batch["layer"] == 1 and len(batch["features"]) > 0
