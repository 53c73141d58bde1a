"""The twenty-third hostile sweep's cases on models saeatlas had not met (Hugging Face
architectures built at random from a config and saved, and plain torch modules of other
output kinds): each was refused wrongly, ended in a traceback or a misleading message, or
gave a result other than it said before its fix."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

#: A model file whose modules '1' and '3' give a NamedTuple and a dataclass (of the
#: protected store's model's activations: the same weights, the same widths 10 and 8).
OUTPUT_KINDS_MODEL = textwrap.dedent(
    """
    import dataclasses
    from typing import NamedTuple

    import torch
    from torch import nn


    class Pair(NamedTuple):
        hidden: torch.Tensor
        sign: torch.Tensor


    @dataclasses.dataclass
    class Gate:
        hidden: torch.Tensor
        sign: torch.Tensor


    class PairReLU(nn.Module):
        def forward(self, x):
            h = torch.relu(x)
            return Pair(h, h.sign())


    class GateReLU(nn.Module):
        def forward(self, x):
            h = torch.relu(x)
            return Gate(h, h.sign())


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            for name, m in zip("0123", (nn.Linear(6, 10), PairReLU(), nn.Linear(10, 8), GateReLU())):
                self.add_module(name, m)

        def forward(self, x):
            h = getattr(self, "1")(getattr(self, "0")(x)).hidden  # the model reads its field
            return getattr(self, "3")(getattr(self, "2")(h)).hidden


    def build():
        torch.manual_seed(0)
        return Net()
    """
)


def _small(config: type, **settings: object) -> object:
    """A Hugging Face ``config`` of one layer of width 16 (2 heads, 32 wide MLP)."""
    shared = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    return config(**shared, **settings)


def _quiet_save(model: torch.nn.Module, path) -> str:
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """Tiny Hugging Face directories built offline: a T5 and a Whisper (encoder-decoder
    models), saved from random weights."""
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    t5 = transformers.T5ForConditionalGeneration(
        transformers.T5Config(
            vocab_size=64,
            d_model=16,
            d_ff=32,
            d_kv=8,
            num_layers=1,
            num_heads=2,
            decoder_start_token_id=0,
        )
    )
    whisper = transformers.WhisperModel(
        transformers.WhisperConfig(
            vocab_size=64,
            d_model=16,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            num_mel_bins=4,
            max_source_positions=8,
            max_target_positions=8,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
        )
    )
    audio = root / "audio.npy"  # [n, mel bins, frames]: twice the encoder's positions
    np.save(audio, np.random.default_rng(0).normal(size=(6, 4, 16)).astype(np.float32))
    ids = root / "ids.npy"
    np.save(ids, np.random.default_rng(0).integers(0, 64, size=(2, 5)))
    return {
        "ids": ids,
        "t5": _quiet_save(t5.eval(), root / "t5"),
        "whisper": _quiet_save(whisper.eval(), root / "whisper"),
        "audio": audio,
    }


def test_whisper_audio_features_are_not_taken_for_token_ids(hf_dirs, tmp_path, run_cli):
    """Whisper's input embedding (`get_input_embeddings()`) is its decoder's, so its
    audio features (`input_features`, float [n, mel bins, frames]) were refused as
    "array inputs must be integers [n, seq]": its main input is no token ids."""
    from saeatlas.store import ActivationStore

    cli, _ = run_cli
    r = cli(
        "capture",
        "--model",
        hf_dirs["whisper"],
        "--inputs",
        hf_dirs["audio"],
        "--layers",
        "encoder.layers.0",
        "--out",
        tmp_path / "s",
        "-q",
    )
    assert r.exit_code == 0, r.output
    store = ActivationStore.open(tmp_path / "s")
    assert store.n_rows == 6 * 8 and store.n_units == 16  # 8 positions of 16 units


@pytest.mark.parametrize("which", ["t5", "whisper"])
def test_an_encoder_decoder_model_without_decoder_inputs_is_named(
    hf_dirs, which, run_cli, tmp_path
):
    """A T5 (or Whisper) given no decoder inputs ended in transformers' words of the
    decoder's inputs ("You must specify exactly one of input_ids or inputs_embeds",
    "You cannot specify both decoder_input_ids and decoder_inputs_embeds"), which named
    neither the decoder nor what to do. `saeatlas layers` now lists the encoder's layers
    (the decoder's without a shape: twenty-sixth sweep); a capture of a decoder layer is
    refused in those words."""
    cli, one_line = run_cli
    inputs = hf_dirs["audio"] if which == "whisper" else hf_dirs["ids"]
    listed = cli("layers", hf_dirs[which], "--inputs", inputs)
    assert listed.exit_code == 0, listed.output
    assert "encoder" in listed.output and "decoder" in listed.output
    layer = "decoder.block.0" if which == "t5" else "decoder.layers.0"
    one_line(
        cli(
            "capture",
            "--model",
            hf_dirs[which],
            "--inputs",
            inputs,
            "--layers",
            layer,
            "--out",
            tmp_path / "s",
            "-q",
        ),
        "is an encoder-decoder model",
        "`decoder_input_ids`",
        "get_encoder()",
    )


def _gpt2_base_and_ids():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=16, n_positions=8)
    return transformers.GPT2Model(cfg).eval(), torch.randint(0, 16, (3, 6))


def test_next_token_loss_refuses_hidden_states_wider_than_the_vocabulary():
    """A model without its head (GPT2Model) whose hidden size is above every token id (a
    character-level model: vocabulary 16, width 32) had its hidden states read as
    logits: a next-token loss, loss recovered and ablation of numbers that are none."""
    from saeatlas.capture.inputs import InputBatch
    from saeatlas.errors import ShapeError
    from saeatlas.losses import per_sample_next_token

    model, ids = _gpt2_base_and_ids()
    with torch.no_grad():
        output = model(input_ids=ids)
    with pytest.raises(ShapeError, match="gives hidden states .*no `logits`"):
        per_sample_next_token(output, InputBatch((), {"input_ids": ids}, 3))


def test_next_token_loss_refuses_a_masked_language_model():
    """`--loss next-token` of a BertForMaskedLM took its logits at each position as the
    next token's prediction; a masked LM predicts the token at its own position."""
    from saeatlas.capture.inputs import InputBatch
    from saeatlas.errors import ShapeError
    from saeatlas.losses import per_sample_next_token

    torch.manual_seed(0)
    cfg = _small(transformers.BertConfig, vocab_size=16, max_position_embeddings=8)
    model = transformers.BertForMaskedLM(cfg).eval()
    ids = torch.randint(0, 16, (3, 6))
    with torch.no_grad():
        output = model(input_ids=ids)
    with pytest.raises(ShapeError, match="is a masked language model"):
        per_sample_next_token(output, InputBatch((), {"input_ids": ids}, 3))


def test_cross_entropy_of_hidden_states_does_not_advise_next_token():
    """The cross-entropy loss of a vision model without its head (hidden states
    [batch, patches, d]) advised `--loss next-token`, a language model's loss."""
    from saeatlas.capture.inputs import InputBatch
    from saeatlas.errors import ShapeError
    from saeatlas.losses import per_sample_cross_entropy

    torch.manual_seed(0)
    cfg = _small(transformers.ViTConfig, image_size=8, patch_size=4, num_channels=3)
    with torch.no_grad():
        output = transformers.ViTModel(cfg).eval()(torch.randn(2, 3, 8, 8))
    with pytest.raises(ShapeError, match="gives hidden states") as e:
        per_sample_cross_entropy(output, InputBatch((), {}, 2, labels=np.array([0, 1])))
    assert "next-token" not in str(e.value)


def test_a_classifier_given_labels_in_its_dict_batches_is_ablated():
    """Dict batches that hold `labels` (what saeatlas asks of iterable inputs) make a
    Hugging Face classifier compute its own loss, its output's first tensor: the
    cross-entropy took that 0-d loss for the logits and refused every such model
    ("needs logits [batch, classes]; the model gives shape []")."""
    from saeatlas.capture.inputs import InputBatch
    from saeatlas.losses import per_sample_cross_entropy

    torch.manual_seed(0)
    cfg = _small(transformers.BertConfig, vocab_size=16, max_position_embeddings=8, num_labels=3)
    model = transformers.BertForSequenceClassification(cfg).eval()
    kwargs = {"input_ids": torch.randint(0, 16, (4, 5)), "labels": torch.tensor([0, 1, 2, 1])}
    with torch.no_grad():
        output = model(**kwargs)
    labels = np.array([0, 1, 2, 1])
    loss = per_sample_cross_entropy(output, InputBatch((), kwargs, 4, labels=labels))
    want = torch.nn.functional.cross_entropy(output.logits, kwargs["labels"], reduction="none")
    torch.testing.assert_close(loss, want)


def test_named_tuple_and_dataclass_outputs_are_spliced(outputs, tmp_path, run_cli):
    """A layer giving a NamedTuple was recorded, but the loss recovered and the ablation
    put a plain tuple back, so the model's own `out.hidden` ended in a traceback; one
    giving a dataclass (not a dict) was refused ("Cannot put a tensor back into a Gate
    output"). Both now give the figures the plain model gives."""
    cli, _ = run_cli
    (tmp_path / "kinds.py").write_text(OUTPUT_KINDS_MODEL)
    labels = tmp_path / "labels.npy"
    np.save(labels, np.arange(300) % 8)
    args = (
        "--sae",
        outputs.sae,
        "--acts",
        outputs.store,
        "--inputs",
        outputs.inputs,
        "--labels",
        labels,
    )
    plain = cli("evaluate", *args, "--model", outputs.model)
    kinds = cli("evaluate", *args, "--model", f"{tmp_path / 'kinds.py'}:build")
    assert plain.exit_code == 0 and kinds.exit_code == 0, kinds.output

    def figures(r):
        return [s for s in r.output.splitlines() if s.startswith(("│ loss_", "│ fraction_r"))]

    assert figures(kinds) == figures(plain) and len(figures(plain)) == 5, kinds.output


def test_a_rotary_model_with_a_vocabulary_as_large_as_its_positions_runs_longer_ids(tmp_path):
    """A Llama (rotary positions, no table) whose vocabulary had as many entries as its
    `max_position_embeddings` had its token embedding taken for a table of positions, so
    sequences longer than that were refused, although the model runs them."""
    from saeatlas.capture import capture_activations

    torch.manual_seed(0)
    cfg = _small(
        transformers.LlamaConfig, vocab_size=16, num_key_value_heads=1, max_position_embeddings=16
    )
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 16, (2, 20))
    store = capture_activations(model, ids, ["model.layers.0"], tmp_path / "s", progress=False)
    assert store.n_rows == 40


def test_an_offset_table_of_positions_is_found(tmp_path, run_cli):
    """OPT's (and BART's) learned positions start at row 2 of a table of
    `max_position_embeddings` + 2 rows, which was not found: longer sequences were not
    refused naming --max-length but ended in the model's "index out of range"."""
    cli, one_line = run_cli
    torch.manual_seed(0)
    cfg = transformers.OPTConfig(
        vocab_size=40,
        hidden_size=16,
        ffn_dim=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        word_embed_proj_dim=16,
    )
    path = _quiet_save(transformers.OPTForCausalLM(cfg).eval(), tmp_path / "opt")
    np.save(tmp_path / "ids.npy", np.random.default_rng(0).integers(0, 40, size=(2, 17)))
    one_line(
        cli(
            "capture",
            "--model",
            path,
            "--inputs",
            tmp_path / "ids.npy",
            "--layers",
            "model.decoder.layers.0",
            "--out",
            tmp_path / "s",
            "-q",
        ),
        "sequences of 17 tokens",
        "has 16 positions",
        "--max-length 16",
    )


def test_roberta_texts_are_cut_to_the_positions_its_table_holds(tmp_path, make_char_tokenizer):
    """RoBERTa's positions start after its `padding_idx`, so a table of
    `max_position_embeddings` rows holds that less `padding_idx` + 1: texts cut to the
    config's number (its tokenizer set no limit) ended in "index 16 is out of bounds",
    and token ids as long passed the check of positions."""
    from saeatlas.capture import capture_activations
    from saeatlas.errors import InputsError

    torch.manual_seed(0)
    cfg = _small(
        transformers.RobertaConfig, vocab_size=40, max_position_embeddings=16, pad_token_id=1
    )
    model = transformers.RobertaModel(cfg, add_pooling_layer=False).eval()
    texts = ["abcdefghijklmnopqrstuvwxyz", "abc"]
    with pytest.warns(UserWarning, match="cut to their first 14"):
        store = capture_activations(
            model,
            texts,
            ["encoder.layer.0"],
            tmp_path / "s",
            tokenizer=make_char_tokenizer(),
            progress=False,
        )
    assert store.n_rows == 14 + 3  # 16 rows less padding_idx + 1: 14 positions
    with pytest.raises(InputsError, match="has 14 positions .*`max_position_embeddings` 16"):
        capture_activations(
            model,
            torch.randint(2, 40, (2, 15)),
            ["encoder.layer.0"],
            tmp_path / "t",
            progress=False,
        )


def _captured_and_trained(cli, tmp_path, source: str, x: np.ndarray, *flags: str) -> str:
    """The model file ``source`` (its factory `build`) captured at its layer '1' on ``x``
    with ``flags`` into ``tmp_path/s``, and an SAE trained on that in ``tmp_path/sae``;
    labels 0, 1, 2, ... in ``tmp_path/y.npy``. Returns the model SPEC."""
    (tmp_path / "model.py").write_text(source)
    model = f"{tmp_path / 'model.py'}:build"
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(len(x)) % 3)
    r = cli("capture", "--model", model, "--inputs", tmp_path / "x.npy", "--layers", "1",
            *flags, "--out", tmp_path / "s", "-q")  # fmt: skip
    assert r.exit_code == 0, r.output
    r = cli("train", "--acts", tmp_path / "s", "--out", tmp_path / "sae", "--d-sae", "8",
            "--k", "2", "--tokens", "400", "--seeds", "1", "-q")  # fmt: skip
    assert r.exit_code == 0, r.output
    return model


#: A model whose module '1' gives a pair: (its relu, width 12, which nothing reads;
#: its sigmoid, width 10, which the rest of the model reads).
PAIR_MODEL = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.wide = nn.Linear(6, 12)

        def forward(self, x):
            return torch.relu(self.wide(x)), torch.sigmoid(x @ torch.ones(6, 10) / 3)


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.add_module("0", nn.Linear(6, 6))
            self.add_module("1", Pair())
            self.add_module("2", nn.Linear(10, 3))

        def forward(self, x):
            return getattr(self, "2")(getattr(self, "1")(getattr(self, "0")(x))[1])


    def build():
        torch.manual_seed(0)
        return Net()
    """
)


def test_the_ablation_and_loss_recovered_splice_the_recorded_output_index(tmp_path, run_cli):
    """A store captured with `--output-index 1` (a module's second tensor) was spliced
    into the module's first tensor by `evaluate --model` (the loss recovered of another
    tensor than the SAE's, without a word) and checked there by the ablation, which
    refused the model as "not the one the store was captured from" (12 units, not 10)."""
    from saeatlas.capture import load_model
    from saeatlas.sae import SparseAutoencoder
    from saeatlas.sae.model import sae_layers
    from saeatlas.store import ActivationStore
    from saeatlas.structure.causal.ablation_inputs import check_ablation_inputs

    cli, _ = run_cli
    x = np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32)
    model = _captured_and_trained(cli, tmp_path, PAIR_MODEL, x, "--output-index", "1")
    r = cli(
        "evaluate",
        "--sae",
        tmp_path / "sae",
        "--acts",
        tmp_path / "s",
        "--model",
        model,
        "--inputs",
        tmp_path / "x.npy",
        "--labels",
        tmp_path / "y.npy",
    )
    assert r.exit_code == 0, r.output
    figures = {
        line.split()[1]: line.split()[3] for line in r.output.splitlines() if "│ loss_" in line
    }
    assert figures["loss_zero"] != figures["loss_clean"], r.output  # the element read on
    store = ActivationStore.open(tmp_path / "s")
    layers = sae_layers(SparseAutoencoder.load(tmp_path / "sae"), store)
    check_ablation_inputs(
        load_model(model).model,
        x,
        np.arange(200) % 3,
        layers=layers,
        output_index=store.output_index,
    )


def test_a_classifier_checkpoint_loads_with_its_head(tmp_path, run_cli):
    """A ViTForImageClassification directory loaded as its base ViTModel whatever
    --model-class said (auto takes only causal and masked LMs with their heads): its
    classifier, whose logits the labels' cross-entropy needs, could not be loaded from
    the command line. `--model-class checkpoint` loads the class `architectures` names."""
    import json

    cli, one_line = run_cli
    torch.manual_seed(0)
    cfg = _small(transformers.ViTConfig, image_size=8, patch_size=4, num_channels=3, num_labels=3)
    path = _quiet_save(transformers.ViTForImageClassification(cfg).eval(), tmp_path / "vit")
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 8, 8), np.float32))
    r = cli("layers", path, "--inputs", tmp_path / "x.npy", "--model-class", "checkpoint")
    assert r.exit_code == 0 and "classifier" in r.output and "[2, 3]" in r.output, r.output
    config = json.loads((tmp_path / "vit" / "config.json").read_text())
    config["architectures"] = ["NoSuchModel"]
    (tmp_path / "vit" / "config.json").write_text(json.dumps(config))
    one_line(
        cli("layers", path, "--inputs", tmp_path / "x.npy", "--model-class", "checkpoint"),
        "['NoSuchModel']",
        "--model-class checkpoint has none to load",
    )


class _Encoder(torch.nn.Module):
    """torch's own transformer encoder, given a padding mask in dict batches."""

    def __init__(self, nested: bool) -> None:
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.enc = torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=nested)

    def forward(self, src, src_key_padding_mask=None, attention_mask=None):
        return self.enc(src, src_key_padding_mask=src_key_padding_mask)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_a_nested_tensor_is_named_with_its_fix(tmp_path):
    """nn.TransformerEncoder in eval mode given a padding mask packs its layers' outputs
    as nested tensors: the capture ended in "Internal error: NestedTensorImpl doesn't
    support sizes. Please file an issue", called a failure of the model's forward pass."""
    from saeatlas.capture import capture_activations
    from saeatlas.errors import ShapeError

    torch.manual_seed(0)
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[0, 3:] = True
    batch = {"src": torch.randn(3, 5, 8), "src_key_padding_mask": pad}
    with pytest.raises(ShapeError, match="nested tensor .* enable_nested_tensor=False"):
        capture_activations(
            _Encoder(True).eval(), [batch], ["enc.layers.0"], tmp_path / "a", progress=False
        )
    batch["attention_mask"] = (~pad).long()  # the fix the error gives
    store = capture_activations(
        _Encoder(False).eval(), [batch], ["enc.layers.0"], tmp_path / "b", progress=False
    )
    assert store.n_rows == 3 + 5 + 5


def test_next_token_loss_names_the_text_too_short_to_predict():
    """`--loss next-token` of texts with a one-token line said only "2 input(s) of this
    batch have fewer than 2 tokens": no text named, in a file of thousands."""
    from saeatlas.capture.inputs import InputBatch
    from saeatlas.errors import ConfigError
    from saeatlas.losses import per_sample_next_token

    ids = torch.ones(2, 3, dtype=torch.long)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    batch = InputBatch((), {"input_ids": ids}, 2, mask, texts=["a cat", "z"])
    with pytest.raises(ConfigError, match="fewer than 2 tokens \\(the first, text 'z'\\)"):
        per_sample_next_token(torch.randn(2, 3, 4), batch)


def test_left_padded_dict_batches_are_warned_of(tiny_gpt2, tmp_path):
    """Dict batches a tokenizer padded on the left (for generation) were captured without a
    word: GPT-2 then sees a shorter text's tokens at later positions, so its rows differ
    from the text's own (saeatlas pads texts on the right for this reason), and the rows'
    `position` counted the padding."""
    import warnings

    from saeatlas.capture import capture_activations

    ids = torch.tensor([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7]])
    left = {"input_ids": ids, "attention_mask": (ids != 0).long()}
    with pytest.warns(UserWarning, match="padded on the left .*padding_side='right'"):
        capture_activations(tiny_gpt2, [left], ["transformer.h.0"], tmp_path / "a", progress=False)
    right = {"input_ids": ids.flip(1), "attention_mask": (ids != 0).long().flip(1)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        capture_activations(tiny_gpt2, [right], ["transformer.h.0"], tmp_path / "b", progress=False)


def test_layers_cuts_token_ids_to_the_model_positions(tmp_path, run_cli):
    """`saeatlas layers --inputs ids.npy` of ids longer than a model's table of positions
    ended in "index out of range in self" and advice of --max-length, a flag `layers`
    has not (its texts were cut as `capture` cuts them; token ids now are too)."""
    cli, _ = run_cli
    model, _ = _gpt2_base_and_ids()  # 8 positions
    path = _quiet_save(model, tmp_path / "gpt2")
    np.save(tmp_path / "ids.npy", np.ones((2, 12), np.int64))
    r = cli("layers", path, "--inputs", tmp_path / "ids.npy")
    assert r.exit_code == 0 and "[2, 8, 32]" in r.output, r.output


CONV_MODEL = textwrap.dedent(
    """
    import torch
    from torch import nn


    def build():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4, 3),
        )
    """
)


def test_loss_recovered_of_a_pooled_layer_is_refused_before_the_work(tmp_path, run_cli):
    """`evaluate --model` of a store captured with `--spatial mean` read the conv map per
    position (another number of rows than the SAE's) and ended in torch.cat's traceback
    "Sizes of tensors must match"; a pooled reconstruction has no map to put back."""
    cli, one_line = run_cli
    x = np.random.default_rng(0).normal(size=(40, 1, 4, 4))
    model = _captured_and_trained(cli, tmp_path, CONV_MODEL, x, "--spatial", "mean")
    one_line(cli("evaluate", "--sae", tmp_path / "sae", "--acts", tmp_path / "s", "--model", model,
                 "--inputs", tmp_path / "x.npy", "--labels", tmp_path / "y.npy"),
             "Layer '1' was stored pooled", "--spatial positions")  # fmt: skip
