"""nnsight wrappers (NNsight, LanguageModel): capture through the wrapped module, with
nnsight's module paths; rows equal what nnsight's own trace saves."""

import numpy as np
import pytest
import torch

nnsight = pytest.importorskip("nnsight", reason="pip install 'saeatlas[nnsight]'")
transformers = pytest.importorskip("transformers")

from saeatlas.capture import capture_activations, load_model, resolve_hookpoints  # noqa: E402
from saeatlas.demo.digits import digits_data, digits_model  # noqa: E402
from saeatlas.evaluate import loss_recovered  # noqa: E402
from saeatlas.losses import per_sample_next_token  # noqa: E402
from saeatlas.sae import SAEConfig, SparseAutoencoder  # noqa: E402

QUIET = {"progress": False}
TEXTS = ["the cat sat on the mat", "a dog", "it was the best of times"]


@pytest.fixture(scope="module")
def digits():
    x, _ = digits_data()
    return nnsight.NNsight(digits_model(epochs=3)), x[:40].astype(np.float32)


@pytest.fixture(scope="module")
def language_model(make_gpt2, make_char_tokenizer):
    return nnsight.LanguageModel(make_gpt2(40), tokenizer=make_char_tokenizer())


def test_nnsight_wrapper_around_the_digits_mlp(tmp_path, digits):
    wrapped, x = digits
    hps = resolve_hookpoints(wrapped, ["model.act1", "act3"])  # nnsight's path, and the module's
    assert [hp.name for hp in hps] == ["act1", "act3"]
    store = capture_activations(wrapped, x, ["model.act1", "act3"], tmp_path / "s", **QUIET)
    with wrapped.trace(torch.from_numpy(x)):
        act1 = wrapped.act1.output.save()
        act3 = wrapped.act3.output.save()
    torch.testing.assert_close(store.read(), torch.cat([act1, act3], dim=1))


def test_language_model_texts_and_splicing(tmp_path, language_model):
    lm = language_model
    store = capture_activations(lm, TEXTS, ["model.transformer.h.0.mlp"], tmp_path / "t", **QUIET)
    got, start, worst = store.read(), 0, 0.0
    for text in TEXTS:
        with lm.trace(text):
            mlp = lm.transformer.h[0].mlp.output.save()
        n = mlp.shape[1]
        worst = max(worst, float((got[start : start + n] - mlp[0]).abs().max()))
        start += n
    assert start == store.n_rows and worst < 1e-5
    # a perfect SAE spliced at the same module leaves the loss as it is
    d = store.n_units
    sae = SparseAutoencoder(SAEConfig("relu", d_in=d, d_sae=2 * d, layers=store.layers))
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([torch.eye(d), -torch.eye(d)], dim=1))
        sae.W_dec.copy_(torch.cat([torch.eye(d), -torch.eye(d)], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    res = loss_recovered(sae.eval(), lm, TEXTS, per_sample_next_token, batch_size=2)
    assert res.loss_sae == pytest.approx(res.loss_clean, abs=1e-5)
    assert res.loss_zero > res.loss_clean


def test_a_factory_may_return_an_nnsight_wrapper(tmp_path):
    (tmp_path / "wrapped.py").write_text(
        "import nnsight, torch\n"
        "def build():\n"
        "    return nnsight.NNsight(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU()))\n"
    )
    loaded = load_model(f"{tmp_path / 'wrapped.py'}:build")
    assert isinstance(loaded.model, torch.nn.Sequential)


WRAPPED_FILE = """
import nnsight
import torch


def build():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(5, 12), torch.nn.ReLU(), torch.nn.Linear(12, 8), torch.nn.ReLU(),
        torch.nn.Linear(8, 2),
    )
    return nnsight.NNsight(net)
"""


def test_pipeline_on_a_factory_that_returns_an_nnsight_wrapper(tmp_path):
    """capture -> train -> analyze (with ablation) -> report, the model given as NNsight."""
    import yaml
    from typer.testing import CliRunner

    from saeatlas.cli import app
    from saeatlas.structure import Atlas

    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(300, 5)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.integers(0, 2, 300))
    (tmp_path / "wrapped.py").write_text(WRAPPED_FILE)
    config = {
        "model": "wrapped.py:build",
        "inputs": "x.npy",
        "labels": "y.npy",
        "layers": ["1", "3"],  # the wrapped module's paths (nnsight's are model.1, model.3)
        "out": "run",
        "sweep": {"enabled": False},
        "train": {"d_sae": 32, "k": 4, "batch_size": 64, "tokens": 2000},
        "analyze": {"n_null": 2, "n_examples": 2},
        "ablation": {"enabled": True, "n_random": 4},
        "report": {"enabled": True},
    }
    (tmp_path / "conf.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "conf.yaml"), "-q"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    assert "ablation" in Atlas.load(run / "atlas").summary and list(run.rglob("report.html"))
