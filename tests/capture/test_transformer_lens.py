"""TransformerLens 4 models (TransformerBridge): capture by hook name, rows as run_with_cache's.

Both bridges are built offline: ``boot_native`` (random weights) and
``boot_transformers`` around a GPT-2 built from ``GPT2Config`` with a character
tokenizer made here.
"""

import pytest
import torch

tl = pytest.importorskip("transformer_lens", reason="pip install 'saeatlas[tl]'")
transformers = pytest.importorskip("transformers")

from transformer_lens.config import TransformerBridgeConfig  # noqa: E402
from transformer_lens.model_bridge import TransformerBridge  # noqa: E402

from saeatlas.capture import CaptureConfig, capture_activations, resolve_hookpoints  # noqa: E402
from saeatlas.errors import ShapeError  # noqa: E402
from saeatlas.evaluate import loss_recovered  # noqa: E402
from saeatlas.losses import per_sample_next_token  # noqa: E402
from saeatlas.sae import SAEConfig, SparseAutoencoder  # noqa: E402

QUIET = {"progress": False}
TEXTS = ["the cat sat on the mat", "a dog", "it was the best of times, it was"]


@pytest.fixture(scope="module")
def native():
    cfg = TransformerBridgeConfig(
        d_model=16,
        d_head=4,
        n_heads=4,
        n_layers=2,
        n_ctx=12,
        d_vocab=50,
        d_mlp=32,
        act_fn="gelu",
        normalization_type="LN",
        seed=0,
    )
    return TransformerBridge.boot_native(cfg).eval()


@pytest.fixture(scope="module")
def gpt2_bridge(make_gpt2, make_char_tokenizer, tmp_path_factory):
    tokenizer = make_char_tokenizer(tmp_path_factory.mktemp("tok"))
    return TransformerBridge.boot_transformers(
        "gpt2", hf_model=make_gpt2(40), tokenizer=tokenizer
    ).eval()


HOOKS = ["blocks.0.hook_resid_post", "blocks.0.attn.hook_z", "blocks.1.mlp.hook_post"]


def test_hook_names_resolve_to_the_hook_that_owns_them(native):
    hps = resolve_hookpoints(native, ["blocks.0.hook_resid_post", "blocks.0.hook_out"])
    assert [hp.name for hp in hps] == ["blocks.0.hook_out"] or [hp.name for hp in hps] == [
        "blocks.0.hook_resid_post"
    ]  # one hook, whichever name came first
    (z,) = resolve_hookpoints(native, ["blocks.0.attn.hook_z"])
    assert z.module is native.hook_dict["blocks.0.attn.hook_z"] and z.layout == "heads"


def test_token_ids_and_positions_are_no_layer(tmp_path, native):
    """`embed.hook_in` and `pos_embed.hook_in` give [batch, seq] integers (token ids,
    positions), which were stored as activations with one unit per position."""
    from saeatlas.errors import ShapeError

    ids = torch.randint(0, 50, (3, 6))
    for hook in ("embed.hook_in", "pos_embed.hook_in"):
        with pytest.raises(ShapeError, match="token ids or positions, not activations"):
            capture_activations(native, ids, [hook], tmp_path / "ids", progress=False)


def test_rows_equal_run_with_cache_on_token_ids(tmp_path, native):
    ids = torch.randint(0, 50, (5, 9), generator=torch.Generator().manual_seed(0))
    store = capture_activations(
        native, ids, HOOKS, tmp_path / "s", CaptureConfig(batch_size=2), **QUIET
    )
    _, cache = native.run_with_cache(ids)
    names = [layer.name for layer in store.layers]  # natural order: attn.hook_z first
    assert sorted(names) == sorted(HOOKS)
    expected = torch.cat([cache[h].reshape(45, -1) for h in names], dim=1)
    got = store.read()
    assert got.shape == expected.shape == (45, 16 + 16 + 32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    z = store.layers[names.index("blocks.0.attn.hook_z")]
    assert (z.name, z.layout, list(z.shape)) == ("blocks.0.attn.hook_z", "head", [None, 9, 4, 4])


def test_attention_patterns_need_consent(tmp_path, native):
    ids = torch.randint(0, 50, (3, 6), generator=torch.Generator().manual_seed(1))
    with pytest.raises(ShapeError, match="attention patterns.*--layout pattern"):
        capture_activations(native, ids, ["blocks.1.attn.hook_pattern"], tmp_path / "p", **QUIET)
    store = capture_activations(
        native,
        ids,
        ["blocks.1.attn.hook_pattern"],
        tmp_path / "q",
        CaptureConfig(layout="pattern"),
        **QUIET,
    )
    _, cache = native.run_with_cache(ids)
    pattern = cache["blocks.1.attn.hook_pattern"]  # [3, 4 heads, 6, 6]
    torch.testing.assert_close(store.read(), pattern.permute(0, 2, 1, 3).reshape(18, 24))


def test_texts_are_fed_as_the_bridge_takes_them(tmp_path, gpt2_bridge):
    hooks = ["blocks.1.hook_resid_post", "blocks.0.attn.hook_z", "blocks.0.attn.hook_q"]
    store = capture_activations(
        gpt2_bridge, TEXTS, hooks, tmp_path / "t", CaptureConfig(batch_size=2), **QUIET
    )
    rows = store.rows().to_pydict()
    got = store.read()
    start, worst = 0, 0.0
    for i, text in enumerate(TEXTS):
        _, cache = gpt2_bridge.run_with_cache(text)  # BOS first, as the bridge does
        n = cache[hooks[0]].shape[1]
        # resolved order is natural: blocks.0.attn.hook_q, blocks.0.attn.hook_z, blocks.1...
        want = torch.cat([cache[h][0].reshape(n, -1) for h in sorted(hooks)], dim=1)
        worst = max(worst, float((got[start : start + n] - want).abs().max()))
        assert rows["sample"][start : start + n] == [i] * n
        assert rows["token"][start] == "<bos>"
        start += n
    assert start == store.n_rows and worst < 1e-5
    prov = store.manifest.provenance
    assert prov["prepend_bos"] is True and prov["max_length"] == 40 and prov["model_name"] == "gpt2"


def test_loss_recovered_splices_at_the_hook(tmp_path, gpt2_bridge):
    """An SAE on hook_z that reproduces head 0 and drops head 1 must give the loss of
    the same edit made with TransformerLens's own hooks."""
    store = capture_activations(
        gpt2_bridge, TEXTS, ["blocks.0.attn.hook_z"], tmp_path / "z", **QUIET
    )
    d = store.n_units  # 2 heads x 16
    sae = SparseAutoencoder(SAEConfig("relu", d_in=d, d_sae=2 * d, layers=store.layers))
    keep = torch.diag(torch.tensor([1.0] * 16 + [0.0] * 16))
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([torch.eye(d), -torch.eye(d)], dim=1))
        sae.W_dec.copy_(torch.cat([keep, -keep], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    res = loss_recovered(sae.eval(), gpt2_bridge, TEXTS, per_sample_next_token, batch_size=2)

    def drop_head_1(z, hook):
        z = z.clone()
        z[:, :, 1] = 0
        return z

    losses = []
    for text in TEXTS:
        ids = gpt2_bridge.to_tokens(text)
        logits = gpt2_bridge.run_with_hooks(ids, fwd_hooks=[("blocks.0.attn.hook_z", drop_head_1)])
        losses.append(torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:]).item())
    assert res.loss_sae == pytest.approx(sum(losses) / len(losses), abs=1e-4)
    assert res.loss_sae != pytest.approx(res.loss_clean, abs=1e-4)


BRIDGE_FILE = """
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge


def build():
    cfg = TransformerBridgeConfig(
        d_model=16, d_head=4, n_heads=4, n_layers=2, n_ctx=12, d_vocab=50, d_mlp=32,
        act_fn="gelu", normalization_type="LN", seed=0,
    )
    return TransformerBridge.boot_native(cfg)
"""


def test_pipeline_by_hook_name_on_a_bridge(tmp_path):
    """capture (hook names, per-head outputs) -> train -> analyze (with ablation) -> report."""
    import numpy as np
    import yaml
    from typer.testing import CliRunner

    from saeatlas.cli import app

    (tmp_path / "bridge.py").write_text(BRIDGE_FILE)
    ids = np.random.default_rng(0).integers(0, 50, size=(40, 10))
    np.save(tmp_path / "ids.npy", ids)
    config = {
        "model": "bridge.py:build",
        "inputs": "ids.npy",
        "layers": ["blocks.0.attn.hook_z", "blocks.1.hook_resid_post"],
        "out": "run",
        "sweep": {"enabled": False},
        "train": {"d_sae": 32, "k": 4, "batch_size": 64, "tokens": 2000},
        "analyze": {"n_null": 2, "n_examples": 2},
        "ablation": {"enabled": True, "n_random": 4, "loss": "next-token"},
        "report": {"enabled": True},
    }
    (tmp_path / "conf.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "conf.yaml"), "-q"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    layers = yaml.safe_load((run / "store" / "manifest.json").read_text())["layers"]
    assert [(l["name"], l["layout"]) for l in layers] == [
        ("blocks.0.attn.hook_z", "head"),
        ("blocks.1.hook_resid_post", "token"),
    ]
    assert (run / "atlas" / "atlas.json").is_file() and list(run.rglob("report.html"))
    from saeatlas.structure import Atlas

    assert "ablation" in Atlas.load(run / "atlas").summary
    from saeatlas.report.data import load_report_data

    names = load_report_data(run / "atlas").unit_names  # units of hook_z named head.dim
    assert names[:5] == [f"blocks.0.attn.hook_z:0.{d}" for d in range(4)] + [
        "blocks.0.attn.hook_z:1.0"
    ]
    assert names[16] == "blocks.1.hook_resid_post:0"


def test_layers_lists_hook_names_with_the_shapes_run_with_cache_shows(native):
    from saeatlas.capture import list_layers

    infos = {i.name: i.shape for i in list_layers(native, torch.randint(0, 50, (2, 5)))}
    assert infos["blocks.0.attn.hook_z"] == (2, 5, 4, 4)
    assert infos["blocks.0.hook_resid_post"] == (2, 5, 16)


def test_ablation_on_a_bridge_edits_the_hook_it_names(native):
    """Zero-ablating the units of head 1 at hook_z equals zeroing head 1 with
    TransformerLens's own hook (structure/ablation.py edits the hook's raw tensor,
    whose flat [batch, pos, head * d_head] order is the store's)."""
    import numpy as np

    from saeatlas.capture.inputs import iter_input_batches
    from saeatlas.store import LayerSpec
    from saeatlas.structure.causal.ablation import ablate_modules

    ids = torch.randint(0, 50, (6, 8), generator=torch.Generator().manual_seed(2))
    layers = [LayerSpec("blocks.0.attn.hook_z", 0, 16, (None, 8, 4, 4), "head")]
    unit_module = np.full(16, -1)
    unit_module[4:8] = 0  # head 1
    res = ablate_modules(
        native,
        ids,
        layers,
        unit_module,
        mode="zero",
        loss_fn=per_sample_next_token,
        n_random=1,
    )

    def drop_head_1(z, hook):
        z = z.clone()
        z[:, :, 1] = 0
        return z

    (batch,) = iter_input_batches(ids, batch_size=6)
    with torch.no_grad():
        logits = native.run_with_hooks(ids, fwd_hooks=[("blocks.0.attn.hook_z", drop_head_1)])
    ablated = float(per_sample_next_token(logits, batch).mean())
    assert res.clean_loss + res.effect[0] == pytest.approx(ablated, abs=1e-5)
    assert abs(res.effect[0]) > 1e-4
