"""Hugging Face directories load as the class asked for (--model-class), by default the
one their config's architectures name, so --loss next-token needs no factory."""

import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from saeatlas.capture import capture_activations, load_model
from saeatlas.capture.hf_dir import hf_model_class
from saeatlas.cli import app
from saeatlas.errors import ModelSpecError
from saeatlas.sae import SAEConfig, SparseAutoencoder


@pytest.fixture
def gpt2_dir(tmp_path, tiny_gpt2):
    tiny_gpt2.save_pretrained(tmp_path / "gpt2")  # safetensors, architectures GPT2LMHeadModel
    return tmp_path / "gpt2"


def test_auto_follows_the_architectures_and_layer_names_follow_the_class(gpt2_dir):
    auto = load_model(str(gpt2_dir))
    assert type(auto.model).__name__ == "GPT2LMHeadModel"
    assert "transformer.h.0.mlp" in dict(auto.model.named_modules())
    base = load_model(str(gpt2_dir), model_class="base")
    assert type(base.model).__name__ == "GPT2Model" and "h.0.mlp" in dict(
        base.model.named_modules()
    )
    assert hf_model_class({"architectures": ["BertForMaskedLM"]}) == "masked-lm"
    assert hf_model_class({"architectures": ["BertModel"]}) == "base"
    assert hf_model_class({}) == "base"


def test_bad_model_class_is_a_clear_error(gpt2_dir):
    with pytest.raises(ModelSpecError, match=r"Unknown --model-class 'lm'.*'causal-lm'"):
        load_model(str(gpt2_dir), model_class="lm")
    with pytest.raises(ModelSpecError, match="cannot be loaded as --model-class masked-lm"):
        load_model(str(gpt2_dir), model_class="masked-lm")
    with pytest.raises(ModelSpecError, match="applies to a Hugging Face model directory"):
        load_model("saeatlas.demo.digits:digits_model", model_class="base")


@pytest.mark.parametrize(
    "file,content,needle",
    [
        ("config.json", b'{"a": "\xe9"}', "not valid JSON.*utf-8"),
        ("config.json", b"[1]", "not a JSON object"),
        ("model.safetensors", b"garbage", "cannot be loaded: SafetensorError"),
    ],
)
def test_damaged_model_directories_are_one_error(gpt2_dir, file, content, needle):
    (gpt2_dir / file).write_bytes(content)
    with pytest.raises(ModelSpecError, match=needle):
        load_model(str(gpt2_dir))


def test_next_token_loss_from_a_directory_without_a_factory(tmp_path, gpt2_dir):
    ids = np.random.default_rng(0).integers(0, 64, (12, 10))
    np.save(tmp_path / "ids.npy", ids)
    model = load_model(str(gpt2_dir)).model
    store = capture_activations(model, ids, ["transformer.h.0"], tmp_path / "s", progress=False)
    d = store.n_units  # a ReLU SAE that reconstructs exactly: relu(x) - relu(-x) = x
    sae = SparseAutoencoder(SAEConfig("relu", d_in=d, d_sae=2 * d, layers=store.layers))
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([torch.eye(d), -torch.eye(d)], dim=1))
        sae.W_dec.copy_(torch.cat([torch.eye(d), -torch.eye(d)], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    sae.save(tmp_path / "sae")
    args = ["evaluate", "--sae", str(tmp_path / "sae"), "--acts", str(tmp_path / "s")]
    args += ["--model", str(gpt2_dir), "--inputs", str(tmp_path / "ids.npy")]
    args += ["--loss", "next-token", "--model-class", "causal-lm", "--start", "20"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    # an exact reconstruction recovers the whole loss
    assert re.search(r"fraction_recovered\W+1\.0000", result.output), result.output
    # which figures come from which data: store rows 20..120, every one of the 12 inputs
    assert re.search(r"n_rows\W+100\b", result.output) and re.search(
        r"loss_inputs\W+12\b", result.output
    )
    assert "rows 20..120 of the store; the loss on every input" in result.output
