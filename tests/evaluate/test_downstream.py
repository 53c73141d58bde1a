import pytest
import torch

from saeatlas.capture import CaptureConfig, capture_activations
from saeatlas.evaluate import loss_recovered
from saeatlas.losses import per_sample_next_token
from saeatlas.sae import SAEConfig, SparseAutoencoder
from saeatlas.store import LayerSpec


def exact_sae(layers):
    """relu(x) - relu(-x) = x: a ReLU SAE that reconstructs perfectly."""
    d = layers[-1].stop
    sae = SparseAutoencoder(SAEConfig("relu", d_in=d, d_sae=2 * d, layers=tuple(layers)))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


def test_perfect_and_useless_reconstructions(tmp_path, mlp, mlp_inputs):
    labels = torch.arange(50) % 3
    store = capture_activations(mlp, mlp_inputs, ["act1", "act2"], tmp_path / "s", progress=False)
    perfect = exact_sae(store.layers)
    res = loss_recovered(perfect, mlp, mlp_inputs, labels=labels, batch_size=16)
    assert abs(res.loss_sae - res.loss_clean) < 1e-6 and abs(res.fraction_recovered - 1) < 1e-5
    useless = exact_sae(store.layers)
    with torch.no_grad():
        useless.W_dec.zero_()
    res = loss_recovered(useless, mlp, mlp_inputs, labels=labels, batch_size=16)
    assert abs(res.loss_sae - res.loss_zero) < 1e-6 and abs(res.fraction_recovered) < 1e-5
    assert res.n_samples == 50


def test_token_and_conv_layouts_are_put_back_in_place(tmp_path, minilm, cnn):
    model, tokenizer = minilm
    texts = ["a short one", "a considerably longer sentence with padding for the other"]
    layer = "encoder.layer.2"

    def last_state_loss(output, batch):
        return output.last_hidden_state.pow(2).mean()

    sae = exact_sae([LayerSpec(layer, 0, 384, (None, None, 384), "token")])
    res = loss_recovered(sae, model, texts, last_state_loss, tokenizer=tokenizer, batch_size=2)
    assert abs(res.loss_sae - res.loss_clean) < 1e-4 * abs(res.loss_clean)
    assert abs(res.loss_zero - res.loss_clean) > 1e-3

    x = torch.randn(6, 1, 6, 6)
    store = capture_activations(cnn, x, ["act"], tmp_path / "c", CaptureConfig(), progress=False)
    sae = exact_sae(store.layers)
    res = loss_recovered(sae, cnn, x, lambda out, b: out.pow(2).mean(), batch_size=3)
    assert abs(res.loss_sae - res.loss_clean) < 1e-6


def test_next_token_loss_recovered_on_a_causal_lm(tmp_path, tiny_gpt2):
    model = tiny_gpt2
    ids = torch.randint(0, 64, (10, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        hf_loss = float(model(ids, labels=ids).loss)
    layer = "transformer.h.1.mlp.act"
    store = capture_activations(model, ids.numpy(), [layer], tmp_path / "s", progress=False)
    sae = exact_sae(store.layers)
    res = loss_recovered(sae, model, ids.numpy(), per_sample_next_token, batch_size=4)
    assert res.loss_clean == pytest.approx(hf_loss, rel=1e-5)  # equal lengths: token mean
    assert res.fraction_recovered == pytest.approx(1.0, abs=1e-4)
    assert abs(res.loss_zero - res.loss_clean) > 1e-3


class _NonNegative(torch.nn.Module):
    """The model's own check on what its layer gives (as a log or a sqrt would need)."""

    def forward(self, x):
        if (x < 0).any():
            raise ValueError("this layer takes no negative values")
        return x


def test_a_model_that_refuses_the_reconstruction_is_named_in_one_line(tmp_path, mlp_inputs):
    """The clean pass ran through `model_error`; the passes with the reconstruction and
    with the layers zeroed did not, so a model whose own code refused the spliced values
    ended `evaluate --model` in its traceback."""
    from saeatlas.errors import ModelError

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 6), torch.nn.ReLU(), _NonNegative(), torch.nn.Linear(6, 3)
    ).eval()
    store = capture_activations(model, mlp_inputs, ["1"], tmp_path / "s", progress=False)
    sae = exact_sae(store.layers)
    with torch.no_grad():
        sae.W_dec.neg_()  # a reconstruction of -x: negative where the layer was positive
    labels = torch.arange(50) % 3
    with pytest.raises(ModelError) as e:
        loss_recovered(sae, model, mlp_inputs, labels=labels, batch_size=16)
    msg = str(e.value)
    assert "\n" not in msg and "inputs 0..15 with the SAE's reconstruction" in msg, msg
    assert "this layer takes no negative values" in msg
