"""The twenty-sixth hostile sweep's cases on models (Hugging Face architectures built at
random from tiny configs, plain torch modules of unusual structure, and the offline
all-MiniLM-L6-v2): each was refused wrongly, ended in a traceback or a misleading message,
or gave a result other than it said before its fix."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

transformers = pytest.importorskip("transformers")


def test_layers_of_an_encoder_decoder_given_texts_lists_its_encoder():
    """`saeatlas layers T5_DIR --inputs texts.txt` was refused ("its decoder needs
    `decoder_input_ids` ... Record its encoder as a model of its own"), although `capture`
    records the encoder's layers from the same texts: the encoder's layers are now listed
    with their shapes, the decoder's without one, and a warning says why."""
    from saeatlas.capture import list_layers
    from saeatlas.errors import ModelError

    cfg = dict(d_model=16, d_ff=32, d_kv=4, num_layers=1, num_heads=4, vocab_size=40)
    t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(**cfg))
    ids = torch.randint(3, 40, (2, 6))
    example = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with pytest.warns(UserWarning, match="only its encoder ran"):
        table = {info.name: info.shape for info in list_layers(t5, example)}
    assert table["encoder.block.0"] == (2, 6, 16) and table["decoder.block.0"] is None

    def fail(*args):  # a failure inside the encoder is still the listing's error
        raise RuntimeError("broken")

    # `labels` give the decoder its tokens (shifted right): its failure is the error
    with pytest.raises(ModelError) as caught:
        list_layers(t5, {**example, "labels": ids + 100})
    assert "decoder_input_ids" not in str(caught.value)
    t5.encoder.final_layer_norm.register_forward_hook(fail)
    with pytest.raises(ModelError, match="broken"):
        list_layers(t5, example)


def _llava() -> torch.nn.Module:
    """A LLaVA of a one-layer CLIP vision tower (8x8 images of 4x4 patches: 5 positions
    with the class token, read from that layer's output) and a one-layer Llama (width
    16, 50 tokens, image token 49)."""
    torch.manual_seed(0)
    vision = transformers.CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    vision.update(dict(image_size=8, patch_size=4, projection_dim=16))
    text = transformers.LlamaConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    text.update(dict(num_key_value_heads=2, vocab_size=50, max_position_embeddings=64))
    cfg = transformers.LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=49, image_seq_length=5
    )
    cfg.vision_feature_select_strategy, cfg.vision_feature_layer = "full", -1
    return transformers.LlavaForConditionalGeneration(cfg).eval()


def test_a_multimodal_projector_s_image_rows_take_no_text_mask(tmp_path):
    """A LLaVA's `multi_modal_projector` (the image's 5 patches in the text's width) was
    given the padded text's mask: refused as a layer "whose positions are not the tokens",
    or, where the text was as long as the patches, its image rows dropped by the text's
    padding without a word. Its rows are now every patch, as the vision tower's are."""
    from saeatlas.capture import capture_activations

    ids = torch.randint(1, 40, (2, 8))
    ids[:, 1:6] = 49  # the image's 5 positions in the text
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 7:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.randn(2, 3, 8, 8)}
    layers = ["model.multi_modal_projector", "model.language_model.layers.0"]
    for name, want in zip(layers, ({0: 5, 1: 5}, {0: 8, 1: 7}), strict=True):
        capture_activations(_llava(), [batch], name, tmp_path / name, progress=False)
        rows = pd.read_parquet(tmp_path / name / "rows.parquet")
        assert rows.groupby("sample").size().to_dict() == want


#: A model file whose `shared` layer runs twice in one pass .
TWICE = """
import torch
from torch import nn

class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp, self.shared, self.out = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.out(torch.relu(self.shared(torch.relu(self.shared(self.inp(x))))))
"""


def _twice() -> torch.nn.Module:
    namespace: dict = {}
    exec(TWICE, namespace)
    return namespace["Twice"]()


def test_a_layer_that_runs_twice_is_neither_spliced_nor_ablated():
    """A layer run twice in one pass (refused by the capture) given by a store of the
    user's own (`.npy` + layers.json): `evaluate --model` put the reconstruction of its
    second call's rows into both calls and the ablation set its units in both, each
    measuring another network than the stored layer's without a word."""
    from saeatlas.errors import ShapeError
    from saeatlas.evaluate.downstream import loss_recovered
    from saeatlas.sae import SAEConfig, SparseAutoencoder
    from saeatlas.store import LayerSpec
    from saeatlas.structure.causal.ablation import ablate_modules
    from saeatlas.structure.causal.ablation_inputs import check_ablation_inputs

    x, y = torch.randn(20, 6), torch.randint(0, 3, (20,))
    layers = [LayerSpec("shared", 0, 8, (None, 8), "sample")]
    sae = SparseAutoencoder(SAEConfig(d_in=8, d_sae=16, k=4, layers=tuple(layers)))
    with pytest.raises(ShapeError, match="'shared' ran more than once"):
        loss_recovered(sae, _twice(), x, labels=y)
    unit_module, mean = torch.zeros(8, dtype=torch.long).numpy(), torch.zeros(8).numpy()
    with pytest.raises(ShapeError, match="'shared' ran more than once"):
        check_ablation_inputs(_twice(), x, y, layers=layers)
    with pytest.raises(ShapeError, match="'shared' ran more than once"):
        ablate_modules(_twice(), x, layers, unit_module, labels=y, unit_mean=mean, n_random=1)


@pytest.mark.parametrize("pad", [float("-inf"), -10000.0, float("nan")])
def test_an_additive_attention_mask_is_refused(tmp_path, pad):
    """A dict batch's additive `attention_mask` (0 for a token, -inf or -10000 for
    padding, as a plain model of one's own may take) was read as 1 for a token: the
    padding was stored as rows and every real token dropped, beside a warning that
    samples had "an `attention_mask` of zeros"."""
    from saeatlas.capture import capture_activations
    from saeatlas.errors import InputsError

    class Masked(torch.nn.Module):  # takes the mask and attends to no token
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.out = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4)

        def forward(self, input_ids, attention_mask):
            return self.out(self.embed(input_ids))

    model, mask = Masked(), torch.zeros(2, 5)
    mask[1, 3:] = pad
    batch = {"input_ids": torch.randint(0, 10, (2, 5)), "attention_mask": mask}
    with pytest.raises(InputsError, match="an additive mask"):
        capture_activations(model, [batch], "out", tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def test_an_encoder_decoder_model_s_encoder_keeps_the_text_mask(tmp_path):
    """A BERT2BERT (`EncoderDecoderModel`, whose sub-configs are `encoder` and `decoder`)
    had every module taken for a tower other than the text's (any sub-config but
    `text_config` was): its encoder layers lost the attention mask and stored the
    padding as rows (12 rows for 9 tokens), without a word."""
    from saeatlas.capture import capture_activations

    bert = dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    enc = transformers.BertConfig(**bert, intermediate_size=32)
    dec = transformers.BertConfig(**bert, intermediate_size=32, is_decoder=True)
    dec.add_cross_attention = True
    cfg = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    model = transformers.EncoderDecoderModel(cfg).eval()
    ids, mask = torch.randint(3, 40, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    mask[1, 3:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": ids[:, :4]}
    for layer in ("encoder.encoder.layer.0", "decoder.bert.encoder.layer.0"):
        store = capture_activations(model, [batch], layer, tmp_path / layer, progress=False)
        assert store.n_rows == (9 if layer.startswith("encoder") else 8)


def _wav2vec2() -> torch.nn.Module:
    """A Wav2Vec2 of two conv layers (group norm, as wav2vec2-base's: 400 samples give
    79 then 39 frames of 8 channels) and one transformer layer of width 16."""
    torch.manual_seed(0)
    sizes = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    convs = dict(conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3))
    convs.update(num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
    return transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**sizes, **convs)).eval()


def test_a_speech_model_s_frames_follow_the_audio_mask(tmp_path):
    """Padded audio given with its `attention_mask` (over the samples, as a feature
    extractor pads it) was refused for every Wav2Vec2 layer as one "whose positions are
    not the tokens"; its frames are now masked as the model masks them (39 and 19)."""
    from saeatlas.capture import capture_activations

    audio, mask = torch.randn(2, 400), torch.ones(2, 400, dtype=torch.long)
    audio[1, 200:], mask[1, 200:] = 0, 0
    batch = {"input_values": audio, "attention_mask": mask}
    capture_activations(_wav2vec2(), [batch], "encoder.layers.0", tmp_path / "w", progress=False)
    rows = pd.read_parquet(tmp_path / "w" / "rows.parquet")
    assert rows.groupby("sample").size().to_dict() == {0: 39, 1: 19}
    # Speech2Text's `input_features` (40 frames, 20 of them padding) subsampled to 10
    sizes = dict(d_model=16, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=32)
    sizes.update(encoder_attention_heads=2, input_feat_per_channel=8, conv_channels=16)
    model = transformers.Speech2TextModel(transformers.Speech2TextConfig(**sizes)).eval()
    features, mask = torch.randn(2, 40, 8), torch.ones(2, 40, dtype=torch.long)
    mask[1, 20:] = 0
    batch = {"input_features": features, "attention_mask": mask}
    batch["decoder_input_ids"] = torch.randint(3, 40, (2, 5))
    store = capture_activations(model, [batch], "encoder.layers.0", tmp_path / "s", progress=False)
    assert store.n_rows == 15


def test_a_conv_map_through_a_hugging_face_activation_keeps_its_channels(tmp_path):
    """A Wav2Vec2 (HuBERT, WavLM) feature encoder's conv layer, whose [batch, 8, 39] map
    ends in transformers' GELUActivation (not torch's nn.GELU), was stored as [batch,
    seq, d]: 8 rows per sample of 39 "units" that were its time steps, without a word.
    Its units are now its 8 channels, a row per frame, as its Conv1d's are."""
    from saeatlas.capture import capture_activations

    layer = "feature_extractor.conv_layers.1"
    store = capture_activations(_wav2vec2(), torch.randn(2, 400), layer, tmp_path, progress=False)
    assert (store.n_rows, store.n_units, store.layers[0].layout) == (78, 8, "position")


def test_a_splice_reaches_hidden_states_that_transformers_gathers_by_hooks():
    """transformers 5 gathers `hidden_states` by forward hooks it installs at a model's
    first pass; a LLaVA's projector reads its vision layer so. In a model that had run
    before (a capture, or the ablation's check of its inputs), those hooks ran before
    saeatlas's: zeroing the layer (`evaluate --model`) or ablating its units left the
    loss as it was (loss_zero equal to loss_clean, every module "without effect")."""
    import numpy as np

    from saeatlas.evaluate.downstream import loss_recovered
    from saeatlas.sae import SAEConfig, SparseAutoencoder
    from saeatlas.store import LayerSpec
    from saeatlas.structure.causal.units import Ablator

    model, ids = _llava(), torch.randint(1, 40, (2, 8))
    ids[:, 1:6] = 49
    batch = {"input_ids": ids, "pixel_values": torch.randn(2, 3, 8, 8)}
    with torch.no_grad():
        clean = model(**batch).logits  # the model has run: transformers' hooks are on
    layers = (LayerSpec("model.vision_tower.encoder.layers.0", 0, 16, (None, 5, 16), "token"),)
    sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=32, k=4, layers=layers))
    result = loss_recovered(sae, model, [batch], "next-token")
    assert abs(result.loss_zero - result.loss_clean) > 1e-5
    ablator = Ablator(model, layers, np.zeros(16))
    try:
        ablator.set(np.arange(16))
        with torch.no_grad():
            assert not torch.allclose(model(**batch).logits, clean)
    finally:
        ablator.remove()


def test_evaluate_model_refuses_a_layer_that_runs_twice_in_one_line(tmp_path, run_cli):
    """`saeatlas evaluate --model` of an SAE of the user's own activations (`.npy` and
    layers.json) at a layer run twice printed a fraction recovered measured with the
    reconstruction of the second call's rows put into both calls."""
    import json

    import numpy as np

    from saeatlas.sae import SAEConfig, SparseAutoencoder
    from saeatlas.store import LayerSpec

    cli, one_line = run_cli
    (tmp_path / "m.py").write_text(TWICE)
    np.save(tmp_path / "acts.npy", np.random.default_rng(0).normal(size=(20, 8)).astype("f4"))
    (tmp_path / "layers.json").write_text(json.dumps([{"name": "shared", "start": 0, "stop": 8}]))
    np.save(tmp_path / "x.npy", np.random.default_rng(1).normal(size=(20, 6)).astype("f4"))
    np.save(tmp_path / "y.npy", np.arange(20) % 3)
    layers = (LayerSpec("shared", 0, 8, (None, 8), "sample"),)
    SparseAutoencoder(SAEConfig(d_in=8, d_sae=16, k=4, layers=layers)).save(tmp_path / "sae")
    args = ["--model", f"{tmp_path / 'm.py'}:Twice", "--inputs", tmp_path / "x.npy"]
    args += ["--labels", tmp_path / "y.npy"]
    result = cli("evaluate", "--sae", tmp_path / "sae", "--acts", tmp_path / "acts.npy", *args)
    one_line(result, "'shared' ran more than once")


def test_a_loss_gap_within_float_rounding_recovers_nothing():
    """A layer the loss hardly reads (zeroing it raised a loss of 10.6 by 6e-6, a few
    steps of float32's rounding) was given a fraction recovered of 0.67 (or 2.0, or
    -3) made of rounding alone; it is now undefined, as for no gap at all."""
    import math

    from saeatlas.evaluate.downstream import loss_recovered
    from saeatlas.sae import SAEConfig, SparseAutoencoder
    from saeatlas.store import LayerSpec

    class Faint(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.hidden, self.out = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)

        def forward(self, x):
            return self.out(x) + 1e-6 * torch.relu(self.hidden(x)).sum(-1, keepdim=True)

    layers = (LayerSpec("hidden", 0, 4, (None, 4), "sample"),)
    sae = SparseAutoencoder(SAEConfig(d_in=4, d_sae=8, k=2, layers=layers))
    torch.manual_seed(1)
    x = torch.randn(32, 4)
    result = loss_recovered(sae, Faint(), x, lambda out, b: (out.squeeze(-1) - 3).pow(2))
    assert 0 < result.loss_zero - result.loss_clean < 1e-5 * result.loss_clean
    assert math.isnan(result.fraction_recovered) and "float rounding" in result.note()
