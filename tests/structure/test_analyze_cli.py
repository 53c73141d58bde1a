"""``saeatlas analyze`` with a model (ablation) and with --seeds (SAEs trained per seed)."""

import numpy as np
import pytest
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


@pytest.mark.slow
def test_analyze_with_a_model_ablates_modules_and_trains_seed_saes(digits_run):
    root = digits_run
    args = [
        "analyze",
        "--sae", str(root / "sae"),
        "--acts", str(root / "store"),
        "--out", str(root / "atlas"),
        "--model", f"{root / 'mlp.py'}:load",
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
    assert atlas.n_modules >= 2
    m = atlas.modules
    for col in ("ablation_effect", "ablation_z", "ablation_p", "stability"):
        assert col in m and m[col].notna().all(), col
    # removing a module's units costs loss on the digits it serves
    assert (m["ablation_effect"] > 0).any()
    assert set(atlas.ablation["label"]) == {str(c) for c in range(10)}
    assert atlas.summary["ablation"]["n_random"] == 20
    assert atlas.summary["stability"]["n_seeds"] == 1
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
