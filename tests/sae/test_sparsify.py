"""sparsify checkpoints (tests/fixtures/sparsify, written by eai-sparsify 1.3.3 through
bench/make_sparsify_fixture.py) read as the same SAEs."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from saeatlas.cli import app
from saeatlas.sae import SparseAutoencoder
from saeatlas.sae.files import SAEFileError

FIXTURE = Path(__file__).parents[1] / "fixtures" / "sparsify"
RUN = FIXTURE / "run"
HOOKPOINTS = ["layers.0.mlp", "layers.1"]


@pytest.mark.parametrize("hookpoint", HOOKPOINTS)
def test_encode_and_decode_match_sparsify(hookpoint):
    expected = load_file(str(FIXTURE / "expected.safetensors"))
    sae = SparseAutoencoder.load(RUN / hookpoint)
    x = expected[f"{hookpoint}/x"]
    with torch.no_grad():
        acts = sae.encode(x).acts
        x_hat = sae.decode(acts)
    torch.testing.assert_close(acts, expected[f"{hookpoint}/acts"], atol=1e-5, rtol=0)
    torch.testing.assert_close(x_hat, expected[f"{hookpoint}/x_hat"], atol=1e-5, rtol=0)
    assert (acts > 0).sum(dim=1).max() <= sae.cfg.k
    assert sae.cfg.layers[0].name == hookpoint and sae.cfg.metadata["imported_from"] == "sparsify"


def test_import_sparsify_run_writes_one_sae_per_hookpoint(tmp_path):
    result = CliRunner().invoke(app, ["import-sparsify", str(RUN), "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == HOOKPOINTS
    expected = load_file(str(FIXTURE / "expected.safetensors"))
    sae = SparseAutoencoder.load(tmp_path / "s" / "layers.1")  # now a saeatlas directory
    x = expected["layers.1/x"]
    torch.testing.assert_close(sae(x).x_hat, expected["layers.1/x_hat"], atol=1e-5, rtol=0)
    one = CliRunner().invoke(
        app, ["import-sparsify", str(RUN / "layers.1"), "--out", str(tmp_path / "one")]
    )
    assert one.exit_code == 0 and (tmp_path / "one" / "cfg.json").is_file(), one.output


def test_a_run_folder_and_unsupported_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(SAEFileError, match=r"sparsify run with 2 SAEs.*import-sparsify"):
        SparseAutoencoder.load(RUN)
    bad = tmp_path / "layers.1"
    shutil.copytree(RUN / "layers.1", bad)
    cfg = json.loads((bad / "cfg.json").read_text())
    (bad / "cfg.json").write_text(json.dumps({**cfg, "transcode": True}))
    with pytest.raises(SAEFileError, match="transcoder"):
        SparseAutoencoder.load(bad)
    (bad / "cfg.json").write_text(json.dumps({**cfg, "activation": "groupmax"}))
    with pytest.raises(SAEFileError, match="'groupmax'"):
        SparseAutoencoder.load(bad)
    # EleutherAI's `sae` library (mid-2024) wrote `signed`: false is a plain TopK coder,
    # true keeps no ReLU and the k latents of largest |pre-activation|
    (bad / "cfg.json").write_text(json.dumps({**cfg, "signed": False}))
    assert SparseAutoencoder.load(bad).cfg.k == cfg["k"]
    (bad / "cfg.json").write_text(json.dumps({**cfg, "signed": True}))
    with pytest.raises(SAEFileError, match="signed sparse coder"):
        SparseAutoencoder.load(bad)
