"""``saeatlas analyze`` with a model (ablation) and with --seeds (SAEs trained per seed)."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from saeatlas.capture import CaptureConfig, capture_activations
from saeatlas.cli import app
from saeatlas.demo.digits import DIGITS_LAYERS, digits_data, train_digits
from saeatlas.structure import Atlas
from saeatlas.train import TrainConfig, train_sae


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """The digits MLP saved with safetensors and a factory file that loads it (the
    model SPEC), its store and an SAE."""
    root = tmp_path_factory.mktemp("digits")
    x, y = digits_data()
    np.save(root / "x.npy", x)
    np.save(root / "y.npy", y)
    model = train_digits(epochs=20).model
    save_file(model.state_dict(), root / "mlp.safetensors")
    (root / "mlp.py").write_text(
        "from safetensors.torch import load_file\n"
        "from saeatlas.demo.digits import DigitsMLP\n\n"
        "def load():\n"
        "    model = DigitsMLP()\n"
        f"    model.load_state_dict(load_file({str(root / 'mlp.safetensors')!r}))\n"
        "    return model\n"
    )
    store = capture_activations(
        model, x, list(DIGITS_LAYERS), root / "store", CaptureConfig(), progress=False
    )
    cfg = TrainConfig(d_sae=128, k=8, tokens=30_000, batch_size=256, seed=0)
    train_sae(store, cfg, root / "sae", progress=False)
    return root


#: A network built of three modules: each group of 8 inputs follows its own factor and
#: feeds its own 16 and 8 hidden units (block-diagonal weights); the class is the
#: largest factor. The test needs modules to ablate, which such a network has by
#: construction (the digits MLP's two weak modules of correlated units depend on the
#: analysis).
BLOCKS_MODEL = """
import torch
from safetensors.torch import load_file
from torch import nn

class Blocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(24, 48), nn.Linear(48, 24), nn.Linear(24, 3)
        self.act1, self.act2 = nn.ReLU(), nn.ReLU()
        mask1 = torch.block_diag(*[torch.ones(16, 8)] * 3)
        mask2 = torch.block_diag(*[torch.ones(8, 16)] * 3)
        self.register_buffer("mask1", mask1)
        self.register_buffer("mask2", mask2)

    def forward(self, x):
        h = self.act1(nn.functional.linear(x, self.fc1.weight * self.mask1, self.fc1.bias))
        h = self.act2(nn.functional.linear(h, self.fc2.weight * self.mask2, self.fc2.bias))
        return self.head(h)

def load(path=None):
    model = Blocks()
    if path is not None:
        model.load_state_dict(load_file(path))
    return model.eval()
"""


@pytest.fixture(scope="module")
def blocks_run(tmp_path_factory):
    """The three-module network trained, saved with safetensors, with a factory file
    that loads it, its inputs, labels, store and an SAE."""
    import importlib.util

    from saeatlas.demo.fit import fit_small

    root = tmp_path_factory.mktemp("blocks")
    (root / "net.py").write_text(BLOCKS_MODEL)
    spec = importlib.util.spec_from_file_location("blocks_net", root / "net.py")
    net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(net)
    rng = np.random.default_rng(0)
    factors = rng.exponential(1.0, (1500, 3)) * (rng.random((1500, 3)) < 0.5)
    x = np.repeat(factors, 8, axis=1) * rng.uniform(0.5, 1.5, 24) + 0.3 * rng.normal(
        size=(1500, 24)
    )
    x, y = x.astype(np.float32), factors.argmax(1)
    torch.manual_seed(0)
    model = net.load()

    def loss(m, xb, yb):
        return torch.nn.functional.cross_entropy(m(xb), yb.long())

    fit_small(model, x, y, loss, epochs=15)
    np.save(root / "x.npy", x)
    np.save(root / "y.npy", y)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, root / "net.safetensors")
    (root / "factory.py").write_text(
        "import importlib.util\n\n"
        "def load():\n"
        f"    spec = importlib.util.spec_from_file_location('blocks_net', {str(root / 'net.py')!r})\n"
        "    net = importlib.util.module_from_spec(spec)\n"
        "    spec.loader.exec_module(net)\n"
        f"    return net.load({str(root / 'net.safetensors')!r})\n"
    )
    store = capture_activations(
        model, x, ["act1", "act2"], root / "store", CaptureConfig(), progress=False
    )
    cfg = TrainConfig(d_sae=96, k=8, tokens=30_000, batch_size=256, seed=0)
    train_sae(store, cfg, root / "sae", progress=False)
    return root


@pytest.mark.slow
def test_analyze_with_a_model_ablates_modules_and_trains_seed_saes(blocks_run):
    root = blocks_run
    args = [
        "analyze",
        "--sae", str(root / "sae"),
        "--acts", str(root / "store"),
        "--out", str(root / "atlas"),
        "--model", f"{root / 'factory.py'}:load",
        "--inputs", str(root / "x.npy"),
        "--labels", str(root / "y.npy"),
        "--ablation-draws", "20",
        "--seeds", "2",
        "--n-null", "2",
        "--quiet",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    atlas = Atlas.load(root / "atlas")
    assert atlas.n_modules >= 2, atlas.summary["message"]
    m = atlas.modules
    for col in ("ablation_effect", "ablation_z", "ablation_p", "stability"):
        assert col in m and m[col].notna().all(), col
    # removing a module's units costs loss on the classes it serves
    assert (m["ablation_effect"] > 0).any()
    assert set(atlas.ablation["label"]) == {"0", "1", "2"}
    assert atlas.summary["ablation"]["n_random"] == 20
    assert atlas.summary["ensemble"]["n_saes"] == 2
    # the seed SAE was trained beside --sae with the next seed, and is reused next time
    seed_dir = root / "sae-seed1"
    weights = seed_dir / "sae_weights.safetensors"
    assert weights.is_file()
    stamp = weights.stat().st_mtime_ns
    again = CliRunner().invoke(app, args + ["--overwrite"])
    assert again.exit_code == 0, again.output
    assert weights.stat().st_mtime_ns == stamp


def test_analyze_names_missing_ablation_inputs(digits_run):
    root = digits_run
    base = ["analyze", "--sae", str(root / "sae"), "--acts", str(root / "store")]
    out = ["--out", str(root / "never")]
    no_inputs = CliRunner().invoke(app, base + out + ["--model", "x.py:f"])
    assert no_inputs.exit_code != 0 and "--inputs" in no_inputs.output
    no_model = CliRunner().invoke(app, base + out + ["--labels", str(root / "y.npy")])
    assert no_model.exit_code != 0 and "--model" in no_model.output
    assert not (root / "never").exists()


def test_analyze_ablates_a_causal_lm_with_the_next_token_loss(tmp_path, tiny_gpt2):
    # The tiny GPT-2 saved with safetensors, a factory file, integer token ids as inputs:
    # no labels, the loss is the model's own next-token cross-entropy.
    state = {k: v for k, v in tiny_gpt2.state_dict().items() if k != "lm_head.weight"}  # tied
    save_file(state, tmp_path / "w.st")
    (tmp_path / "lm.py").write_text(
        "import transformers\n"
        "from safetensors.torch import load_file\n\n"
        "def load():\n"
        "    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64,\n"
        "                                  n_positions=16, bos_token_id=0, eos_token_id=0)\n"
        "    model = transformers.GPT2LMHeadModel(cfg)\n"
        f"    model.load_state_dict(load_file({str(tmp_path / 'w.st')!r}), strict=False)\n"
        "    return model.eval()\n"
    )
    ids = np.random.default_rng(0).integers(0, 64, (40, 12))
    np.save(tmp_path / "ids.npy", ids)
    layers = ["transformer.h.0.mlp.act", "transformer.h.1.mlp.act"]
    store = capture_activations(tiny_gpt2, ids, layers, tmp_path / "store", progress=False)
    cfg = TrainConfig(d_sae=64, k=8, tokens=20_000, batch_size=120, seed=0)
    train_sae(store, cfg, tmp_path / "sae", progress=False)
    base = ["analyze", "--sae", str(tmp_path / "sae"), "--acts", str(tmp_path / "store")]
    model = ["--model", f"{tmp_path / 'lm.py'}:load", "--inputs", str(tmp_path / "ids.npy")]
    needs = CliRunner().invoke(app, base + ["--out", str(tmp_path / "a0")] + model)
    assert needs.exit_code != 0 and "--loss next-token" in needs.output
    args = base + ["--out", str(tmp_path / "atlas")] + model
    args += ["--loss", "next-token", "--ablation-draws", "3", "--n-null", "2", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    atlas = Atlas.load(tmp_path / "atlas")
    clean = atlas.summary["ablation"]["clean_loss"]
    with torch.no_grad():
        ids_t = torch.as_tensor(ids)
        assert clean == pytest.approx(float(tiny_gpt2(ids_t, labels=ids_t).loss), rel=1e-4)
    assert atlas.summary["ablation"]["classes"] == []
