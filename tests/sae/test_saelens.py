"""SAE directories written by SAELens itself (tests/fixtures/saelens, made by
bench/make_saelens_fixture.py) load and give SAELens's own outputs."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from saeatlas.sae import SAEConfig, SAEFileError, SparseAutoencoder
from saeatlas.sae.saelens import export_saelens, load_saelens

FIXTURES = Path(__file__).parents[1] / "fixtures" / "saelens"
KINDS = ["standard", "topk", "topk_rescale", "jumprelu", "batchtopk"]


@pytest.mark.parametrize("kind", KINDS)
def test_saelens_directories_match_saelens_outputs(kind):
    ref = load_file(str(FIXTURES / kind / "reference.safetensors"))
    sae = SparseAutoencoder.load(FIXTURES / kind)
    with torch.no_grad():
        acts = sae.encode(ref["x"]).acts
        torch.testing.assert_close(acts, ref["feature_acts"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            sae.decode(ref["feature_acts"]), ref["reconstruction"], atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(sae(ref["x"]).x_hat, ref["reconstruction"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu"])
def test_export_then_import_is_identity(tmp_path, arch):
    sae = SparseAutoencoder(
        SAEConfig(arch, d_in=8, d_sae=16, k=3), torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(std=0.1)
        if arch == "batchtopk":
            sae.threshold.fill_(0.2)
    sae.eval()
    export_saelens(sae, tmp_path / "lens")
    back = load_saelens(tmp_path / "lens")
    x = torch.randn(10, 8)
    with torch.no_grad():
        torch.testing.assert_close(back(x).x_hat, sae(x).x_hat, atol=1e-5, rtol=1e-5)


def test_row_dependent_normalisation_is_refused(tmp_path):
    import shutil

    shutil.copytree(FIXTURES / "topk", tmp_path / "t")
    cfg = (
        (tmp_path / "t" / "cfg.json")
        .read_text()
        .replace('"normalize_activations": "none"', '"normalize_activations": "layer_norm"')
    )
    (tmp_path / "t" / "cfg.json").write_text(cfg)
    with pytest.raises(SAEFileError, match="layer_norm.*cannot be folded"):
        SparseAutoencoder.load(tmp_path / "t")
