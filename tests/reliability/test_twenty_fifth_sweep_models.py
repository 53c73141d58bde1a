"""The twenty-fifth hostile sweep's cases on other models and other data (Hugging Face
architectures built at random from tiny configs, plain torch modules of unusual structure,
and odd inputs): each was refused wrongly, ended in a traceback or a misleading message, or
gave a result other than it said before its fix."""

from __future__ import annotations

import dataclasses
import textwrap
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
import torch

transformers = pytest.importorskip("transformers")


def _t5() -> torch.nn.Module:
    """A T5 of one layer per side, width 16, 40 tokens, built at random (seed 0)."""
    torch.manual_seed(0)
    cfg = transformers.T5Config(
        d_model=16, d_ff=32, d_kv=4, num_layers=1, num_heads=4, vocab_size=40
    )
    return transformers.T5ForConditionalGeneration(cfg).eval()


def test_an_encoder_decoder_s_decoder_rows_follow_the_decoder_s_padding(tmp_path):
    """A T5's decoder layer was captured by the encoder's `attention_mask`: the decoder's
    padding (`decoder_attention_mask`) was captured as rows and its real tokens where the
    encoder had padding dropped, without a word; decoder ids of another length than the
    encoder's were refused as a layer "whose positions are not the tokens"."""
    from saeatlas.capture import capture_activations
    from saeatlas.capture.hookpoints import resolve_hookpoints
    from saeatlas.capture.inputs import InputBatch
    from saeatlas.capture.masks import layer_masks

    model, ids = _t5(), torch.randint(3, 40, (4, 8))
    mask, dmask = torch.ones(4, 8, dtype=torch.long), torch.ones(4, 8, dtype=torch.long)
    mask[1, 5:], dmask[2, 2:] = 0, 0
    batch = {"input_ids": ids, "attention_mask": mask}
    batch.update(decoder_input_ids=ids, decoder_attention_mask=dmask)
    layers = ["encoder.block.0", "decoder.block.0", "lm_head"]
    capture_activations(model, [batch], layers[1:], tmp_path / "s", progress=False)
    per_sample = pd.read_parquet(tmp_path / "s" / "rows.parquet").groupby("sample").size()
    assert per_sample.to_dict() == {0: 8, 1: 8, 2: 2, 3: 8}
    masks = layer_masks(model, resolve_hookpoints(model, layers), InputBatch((), batch, 4, mask))
    assert masks["encoder.block.0"] is mask and masks["lm_head"] is dmask
    shorter = {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": ids[:, :5]}
    store = capture_activations(model, [shorter], layers[1], tmp_path / "d", progress=False)
    assert store.n_rows == 20
    # decoder tokens that BART derives from the input tokens (shifted right) keep its mask
    cfg = dict(d_model=16, encoder_layers=1, decoder_layers=1, vocab_size=40, pad_token_id=1)
    bart = transformers.BartModel(transformers.BartConfig(**cfg, decoder_start_token_id=2))
    derived = [{"input_ids": ids, "attention_mask": mask}]
    store = capture_activations(bart.eval(), derived, "decoder", tmp_path / "b", progress=False)
    assert store.n_rows == int(mask.sum())


def test_int32_token_ids_get_the_next_token_loss():
    """Token ids of int32 (which the capture and the model take) ended `evaluate --model
    --loss next-token` and the ablation in torch's traceback "expected target dtype to be
    Long or Byte, but got Int"."""
    from saeatlas.capture.inputs import InputBatch
    from saeatlas.losses import per_sample_next_token

    torch.manual_seed(0)
    logits, ids = torch.randn(3, 5, 40), torch.randint(0, 40, (3, 5))
    wide = per_sample_next_token(logits, InputBatch((), {"input_ids": ids}, 3))
    narrow = per_sample_next_token(logits, InputBatch((ids.int(),), {}, 3))
    torch.testing.assert_close(narrow, wide)


#: A model file of TorchScript modules: scripted, traced, and traced inside a Python one.
SCRIPTED = textwrap.dedent(
    """
    import torch
    from torch import nn

    def mlp():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))

    def scripted():
        return torch.jit.script(mlp())

    def traced():
        return torch.jit.trace(mlp(), torch.zeros(2, 6))

    def wrapped():
        return nn.Sequential(traced())
    """
)


@pytest.mark.parametrize("factory", ["scripted", "traced"])
def test_a_torchscript_model_s_layers_are_refused_in_one_line(factory, tmp_path, run_cli):
    """A scripted model's capture ended in an AttributeError traceback ("'_CachedForward'
    object has no attribute '__getattr__'"), and a traced one's said its layers "did not
    run during the forward pass", to choose modules the forward uses: TorchScript's
    compiled code calls no Python hook. A traced module called from a Python one is
    still recorded whole."""
    cli, one_line = run_cli
    (tmp_path / "m.py").write_text(SCRIPTED)
    np.save(tmp_path / "x.npy", np.zeros((4, 6), np.float32))
    args = ("capture", "--inputs", tmp_path / "x.npy", "-q", "--model")
    spec = f"{tmp_path / 'm.py'}:{factory}"
    one_line(
        cli(*args, spec, "--layers", "0", "--out", tmp_path / "s"),
        "Layer '0' is part of a TorchScript module",
        "Give the Python module it was made from",
    )
    assert not (tmp_path / "s").exists()
    r = cli(*args, f"{tmp_path / 'm.py'}:wrapped", "--layers", "0", "--out", tmp_path / "w")
    assert r.exit_code == 0, r.output


def _bert() -> torch.nn.Module:
    """A BERT classifier of one layer, width 16, 40 tokens, 3 classes, built at random."""
    torch.manual_seed(0)
    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, vocab_size=40)
    cfg = transformers.BertConfig(**small, num_attention_heads=2, num_labels=3)
    return transformers.BertForSequenceClassification(cfg).eval()


def test_dict_batches_name_samples_whose_mask_holds_no_token(tmp_path):
    """A dict batch's sample whose `attention_mask` is all zeros got no rows without a
    word (an empty text is named); a 4-D mask of the model's own was refused as "the
    attention mask has shape (4, 1, 1, 6)", not saying which mask saeatlas reads."""
    from saeatlas.capture import capture_activations
    from saeatlas.errors import ShapeError

    model, ids = _bert(), torch.randint(3, 40, (4, 6))
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[2] = 0
    batches = [{"input_ids": ids, "attention_mask": mask}] * 2
    with pytest.warns(UserWarning, match=r"2 of 8 samples .* zeros \(the first, sample 2\)"):
        store = capture_activations(model, batches, "bert.encoder.layer.0", tmp_path / "s")
    assert store.n_rows == 36
    four = [{"input_ids": ids, "attention_mask": mask[:, None, None, :].float()}]
    with pytest.raises(ShapeError, match=r"\(4, 1, 1, 6\); saeatlas reads .* \[batch, seq\]"):
        capture_activations(model, four, "bert.encoder.layer.0", tmp_path / "f", progress=False)


class _Packed(torch.nn.Module):
    """An LSTM given packed sequences (two of each batch's samples cut to 2 steps)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.head = torch.nn.LSTM(6, 10, batch_first=True), torch.nn.Linear(10, 3)

    def forward(self, x):
        lengths = torch.full((x.shape[0],), x.shape[1])
        lengths[::2] = 2
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, lengths, batch_first=True, enforce_sorted=False
        )
        _, (h, _) = self.rnn(packed)
        return self.head(h[-1])


@pytest.mark.parametrize("index", [None, 0])
def test_an_rnn_s_packed_sequences_are_named(tmp_path, index):
    """An LSTM given `pack_padded_sequence` returns `(PackedSequence, (h, c))`: its
    capture was refused as "gives a tuple that holds no tensor" (and with `output_index`
    0 as "no tensor at `output_index` 0; tensors are at []"), though it holds five."""
    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.errors import ShapeError

    torch.manual_seed(0)
    x, config = torch.randn(4, 5, 6), CaptureConfig(output_index=index)
    with pytest.raises(ShapeError, match="'rnn' gives a PackedSequence .* pad_packed_sequence"):
        capture_activations(_Packed(), x, "rnn", tmp_path / "s", config, progress=False)


def test_a_vision_tower_s_patches_are_not_selected_by_the_text_s_mask(tmp_path):
    """CLIP given texts padded to as many tokens as its images have patches (5: 4 and
    the class token) captured its vision layer with the text's mask: an image's patches
    were dropped where its text had padding, without a word."""
    from saeatlas.capture import capture_activations

    torch.manual_seed(0)
    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    text = dict(vocab_size=40, max_position_embeddings=8, **small)
    cfg = transformers.CLIPConfig(
        text_config=text, vision_config=dict(image_size=8, patch_size=4, **small)
    )
    model = transformers.CLIPModel(cfg).eval()
    mask = torch.ones(4, 5, dtype=torch.long)
    mask[1, 3:] = 0
    batch = {"input_ids": torch.randint(3, 40, (4, 5)), "attention_mask": mask}
    batch["pixel_values"] = torch.randn(4, 3, 8, 8)
    layers = ["vision_model.encoder.layers.0", "text_model.encoder.layers.0"]
    for layer, rows in zip(layers, (20, 18)):
        store = capture_activations(model, [batch], layer, tmp_path / layer, progress=False)
        assert store.n_rows == rows, layer


@dataclasses.dataclass
class _Out:
    """A model's own output: features first, then its logits."""

    features: torch.Tensor
    logits: torch.Tensor


class _Pair(NamedTuple):
    hidden: torch.Tensor
    logits: torch.Tensor


@pytest.mark.parametrize("kind", [_Out, _Pair])
def test_a_model_s_own_output_gives_its_logits_by_name(kind):
    """A model returning a dataclass or NamedTuple of its own, `(features, logits)`, had
    its first tensor read as the logits: `evaluate --model` and the ablation measured the
    cross-entropy of its features [batch, 8] against 3 classes, without a word."""
    from saeatlas.capture.inputs import InputBatch
    from saeatlas.losses import per_sample_cross_entropy

    torch.manual_seed(0)
    features, logits, labels = torch.randn(4, 8), torch.randn(4, 3), np.array([0, 2, 1, 2])
    got = per_sample_cross_entropy(kind(features, logits), InputBatch((), {}, 4, labels=labels))
    want = torch.nn.functional.cross_entropy(logits, torch.tensor(labels), reduction="none")
    torch.testing.assert_close(got, want)


class _Scaling(torch.nn.Module):
    """A residual network that doubles its input in place (``x.mul_(2)``) when told to."""

    def __init__(self, in_place: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.act, self.b = torch.nn.Linear(6, 10), torch.nn.ReLU(), torch.nn.Linear(10, 3)
        self.skip, self.in_place = torch.nn.Linear(6, 3), in_place

    def forward(self, x):
        x = x.mul_(2) if self.in_place else x * 2
        return self.b(self.act(self.a(x))) + self.skip(x)


def test_a_model_that_changes_its_inputs_in_place_is_measured_on_them_as_given(tmp_path):
    """`evaluate --model` and the ablation run each batch several times; a model that
    changes its input in place (`x.mul_(2)`) was run with the SAE on inputs doubled by
    the clean pass and zeroed on inputs quadrupled (a fraction recovered of 0.68 where
    the reconstruction recovers nothing), the ablation's sets on inputs doubled again
    each pass, and the caller's own tensor came back multiplied by 8, without a word."""
    from saeatlas.capture import capture_activations
    from saeatlas.evaluate.downstream import loss_recovered
    from saeatlas.sae import SparseAutoencoder
    from saeatlas.structure.causal.ablation import ablate_modules
    from saeatlas.train import TrainConfig, train_sae

    torch.manual_seed(0)
    x, y = torch.randn(32, 6), np.arange(32) % 3
    store = capture_activations(_Scaling(False), x, "act", tmp_path / "s", progress=False)
    config = TrainConfig(d_sae=8, k=2, tokens=64, batch_size=32)
    train_sae(tmp_path / "s", config, tmp_path / "sae", progress=False)
    sae = SparseAutoencoder.load(tmp_path / "sae")
    results, given = [], x.clone()
    for in_place in (False, True):
        model = _Scaling(in_place).eval()
        kept = loss_recovered(sae, model, given, labels=y)
        ablated = ablate_modules(
            model, given, store.layers, np.arange(10) % 2, mode="zero", labels=y, n_random=2
        )
        results.append((kept.loss_sae, kept.loss_zero, *ablated.effect, *ablated.random_mean))
    np.testing.assert_allclose(results[1], results[0], rtol=1e-6)
    torch.testing.assert_close(given, x)


def test_a_shared_layer_s_refusal_points_to_a_module_that_runs_once(tmp_path):
    """ALBERT's shared layer runs once per layer of the network: its capture advised "a
    module that runs once (or its parent)", whose parent is a ModuleList (never run,
    refused) and whose group around it runs as often."""
    from saeatlas.capture import capture_activations
    from saeatlas.errors import ShapeError

    torch.manual_seed(0)
    small = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, vocab_size=40)
    cfg = transformers.AlbertConfig(embedding_size=8, num_hidden_layers=3, **small)
    model, ids = transformers.AlbertModel(cfg).eval(), torch.randint(3, 40, (2, 5))
    with pytest.raises(ShapeError, match="not a ModuleList.*`saeatlas layers MODEL` marks") as e:
        capture_activations(model, ids, "encoder.albert_layer_groups.0", tmp_path / "s")
    assert "or its parent" not in str(e.value)
