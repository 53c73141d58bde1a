"""TransformerLens < 4: a HookedTransformer captured by hook name, texts fed as input=.

transformer-lens 4 (the `tl` extra) has no HookedTransformer, so this runs only where
an older one is installed (checked by hand in a venv with transformer-lens 3)."""

import pytest
import torch

tl = pytest.importorskip("transformer_lens")
try:
    tl.HookedTransformer  # noqa: B018 (4.x raises ImportError here)
except (AttributeError, ImportError):
    pytest.skip("needs transformer-lens<4 (HookedTransformer)", allow_module_level=True)
transformers = pytest.importorskip("transformers")

from saeatlas.capture import CaptureConfig, capture_activations  # noqa: E402

QUIET = {"progress": False}
TEXTS = ["the cat sat on the mat", "a dog", "it was the best of times"]


@pytest.fixture(scope="module")
def hooked(make_char_tokenizer, tmp_path_factory):
    tokenizer = make_char_tokenizer(tmp_path_factory.mktemp("tok"))
    cfg = tl.HookedTransformerConfig(
        n_layers=2,
        d_model=16,
        d_head=4,
        n_heads=4,
        d_mlp=32,
        n_ctx=40,
        d_vocab=40,
        act_fn="gelu",
        seed=0,
    )
    return tl.HookedTransformer(cfg, tokenizer=tokenizer).eval()


def test_rows_equal_run_with_cache_for_texts_and_heads(tmp_path, hooked):
    hooks = ["blocks.0.attn.hook_z", "blocks.1.hook_resid_post"]
    store = capture_activations(
        hooked, TEXTS, hooks, tmp_path / "s", CaptureConfig(batch_size=2), **QUIET
    )
    assert [(l.name, l.layout) for l in store.layers] == [
        ("blocks.0.attn.hook_z", "head"),
        ("blocks.1.hook_resid_post", "token"),
    ]
    got, start = store.read(), 0
    for text in TEXTS:
        _, cache = hooked.run_with_cache(text)
        n = cache[hooks[0]].shape[1]
        want = torch.cat([cache[h][0].reshape(n, -1) for h in hooks], dim=1)
        torch.testing.assert_close(got[start : start + n], want, atol=1e-5, rtol=1e-5)
        start += n
    assert start == store.n_rows


def test_loss_recovered_splices_at_hook_z(tmp_path, hooked):
    from saeatlas.evaluate import loss_recovered
    from saeatlas.losses import per_sample_next_token
    from saeatlas.sae import SAEConfig, SparseAutoencoder

    store = capture_activations(hooked, TEXTS, ["blocks.0.attn.hook_z"], tmp_path / "z", **QUIET)
    d = store.n_units  # 4 heads x 4: keep heads 0-2, drop head 3
    keep = torch.diag(torch.tensor([1.0] * 12 + [0.0] * 4))
    sae = SparseAutoencoder(SAEConfig("relu", d_in=d, d_sae=2 * d, layers=store.layers))
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([torch.eye(d), -torch.eye(d)], dim=1))
        sae.W_dec.copy_(torch.cat([keep, -keep], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    res = loss_recovered(sae.eval(), hooked, TEXTS, per_sample_next_token, batch_size=2)

    def drop_head_3(z, hook):
        z = z.clone()
        z[:, :, 3] = 0
        return z

    losses = []
    for text in TEXTS:
        ids = hooked.to_tokens(text)
        logits = hooked.run_with_hooks(ids, fwd_hooks=[("blocks.0.attn.hook_z", drop_head_3)])
        losses.append(torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:]).item())
    assert res.loss_sae == pytest.approx(sum(losses) / len(losses), abs=1e-4)
