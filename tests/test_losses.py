"""Per-sample losses: cross-entropy for classifiers, next-token for causal language models."""

import numpy as np
import pytest
import torch

from saeatlas.capture import capture_activations
from saeatlas.capture.inputs import InputBatch
from saeatlas.errors import ConfigError, ShapeError
from saeatlas.losses import loss_function, needs_labels, per_sample_next_token
from saeatlas.structure.causal.ablation import ablate_modules

VOCAB = 64  # the tiny_gpt2 fixture's


def test_next_token_loss_is_each_samples_mean_over_its_real_tokens():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g)
    ids = torch.randint(0, 7, (2, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])  # sample 1: 3 real tokens
    got = per_sample_next_token(logits, InputBatch((), {"input_ids": ids}, 2, mask=mask))
    for b, n in ((0, 5), (1, 3)):
        want = torch.stack(
            [torch.nn.functional.cross_entropy(logits[b, t], ids[b, t + 1]) for t in range(n - 1)]
        ).mean()
        assert torch.allclose(got[b], want, atol=1e-6)
    # ids given as an integer array (the first positional input) count too
    plain = per_sample_next_token(logits, InputBatch((ids,), {}, 2))
    assert plain.shape == (2,) and torch.allclose(plain[0], got[0])


def test_next_token_loss_names_what_is_wrong():
    ids = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ShapeError, match="AutoModelForCausalLM"):
        per_sample_next_token(torch.randn(2, 10), InputBatch((), {"input_ids": ids}, 2))
    with pytest.raises(ConfigError, match="token ids"):
        per_sample_next_token(torch.randn(2, 4, 5), InputBatch((torch.randn(2, 3),), {}, 2))
    short = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    with pytest.raises(ConfigError, match="fewer than 2 tokens"):
        per_sample_next_token(torch.randn(2, 4, 5), InputBatch((), {"input_ids": ids}, 2, short))
    with pytest.raises(ConfigError, match="next-token"):
        loss_function("perplexity")
    assert needs_labels("cross-entropy") and not needs_labels("next-token")


def test_ablation_with_the_next_token_loss_of_a_causal_lm(tiny_gpt2, tmp_path):
    model = tiny_gpt2
    ids = torch.randint(0, VOCAB, (12, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        hf_loss = float(model(ids, labels=ids).loss)  # token mean; equal lengths: = sample mean
    layer = "transformer.h.0.mlp.act"
    store = capture_activations(model, ids.numpy(), [layer], tmp_path / "s", progress=False)
    assert store.n_rows == 12 * 10
    n_units = store.layers[-1].stop
    unit_module = np.full(n_units, -1)
    unit_module[:16] = 0
    res = ablate_modules(
        model,
        ids.numpy(),
        store.layers,
        unit_module,
        unit_mean=np.asarray(store.mean, dtype=np.float64),
        mode="zero",
        loss_fn=per_sample_next_token,
        n_random=4,
        batch_size=5,
    )
    assert res.clean_loss == pytest.approx(hf_loss, rel=1e-5)
    assert np.isfinite(res.effect).all() and res.effect[0] != 0
    assert res.classes.size == 0  # no labels: no split by class
