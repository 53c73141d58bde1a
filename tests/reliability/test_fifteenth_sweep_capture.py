"""Fifteenth hostile sweep, capture half: a masked-LM checkpoint loaded as its base model,
narrow token ids beside other inputs of a dict batch, token ids of an ablation's inputs."""

from __future__ import annotations

import numpy as np
import pytest


def _bert(folder):
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    sizes = {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32}
    cfg = transformers.BertConfig(
        **sizes, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=16
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


def test_only_token_ids_of_a_dict_batch_are_widened(tmp_path):
    """uint8 token ids are read as int64 for a model that embeds them, but every narrow
    integer tensor of a dict batch was widened with them: a uint8 `pixel_values` beside
    `input_ids` reached the model as int64."""
    import torch

    from saeatlas.capture import capture_activations

    seen = []

    class TextAndImage(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(64, 4)

        def get_input_embeddings(self):
            return self.emb

        def forward(self, input_ids, pixel_values):
            seen.append((input_ids.dtype, pixel_values.dtype))
            return self.emb(input_ids) + pixel_values.float().mean(-1, keepdim=True) / 255

    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(0, 64, size=(2, 5)).astype(np.uint8),
        "pixel_values": rng.integers(0, 256, size=(2, 5, 3)).astype(np.uint8),
    }
    capture_activations(TextAndImage(), [batch], ["emb"], tmp_path / "s", progress=False)
    assert seen == [(torch.int64, torch.uint8)]


def test_an_ablation_reads_narrow_token_ids_as_the_capture_does(tiny_gpt2):
    """A capture reads token ids saved as uint8 as int64 ids, but the ablation of the
    same model on the same inputs gave them to the model as uint8 and ended in torch's
    "Expected tensor for argument #1 'indices' to have one of the following scalar
    types: Long, Int" (`analyze --model ... --inputs ids.npy`)."""
    from saeatlas.losses import loss_function
    from saeatlas.store import LayerSpec
    from saeatlas.structure.causal.ablation import ablate_modules

    ids = np.random.default_rng(0).integers(0, 64, size=(4, 8))
    layers = [LayerSpec("transformer.h.0", 0, 32, (None, 8, 32), "token")]
    modules = np.array([0] * 4 + [-1] * 28)

    def effect(x):
        kw = {"mode": "zero", "loss_fn": loss_function("next-token"), "n_random": 2}
        return ablate_modules(tiny_gpt2, x, layers, modules, **kw).effect

    assert np.array_equal(effect(ids.astype(np.uint8)), effect(ids))
