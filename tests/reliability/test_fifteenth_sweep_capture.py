"""Fifteenth hostile sweep, capture half: a masked-LM checkpoint loaded as its base model,
narrow token ids beside other inputs of a dict batch, token ids of an ablation's inputs."""

from __future__ import annotations

import numpy as np
import pytest


def _bert(folder):
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    transformers.BertForMaskedLM(cfg).save_pretrained(folder)
    return folder


def test_a_masked_lm_checkpoint_loads_as_its_base_model(tmp_path):
    """`--model-class base` on a BertForMaskedLM checkpoint was refused for the pooler
    weights it never had (AutoModel builds a BertModel with a pooler), although the README
    offers base for any checkpoint; it is now the checkpoint's own BERT, whose activations
    are those of the masked-LM model's `bert`."""
    import torch

    from saeatlas.capture import capture_activations, load_model

    folder = _bert(tmp_path / "bert")
    base = load_model(str(folder), model_class="base").model
    full = load_model(str(folder)).model
    assert type(base).__name__ == "BertModel" and "pooler" not in dict(base.named_children())
    ids = torch.randint(0, 64, (3, 8), generator=torch.Generator().manual_seed(0))

    def acts(model, layer, name):
        return capture_activations(model, ids, [layer], tmp_path / name, progress=False).read()

    got = acts(base, "encoder.layer.1.output", "base")
    assert torch.equal(got, acts(full, "bert.encoder.layer.1.output", "full"))
