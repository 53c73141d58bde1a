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


@pytest.mark.parametrize("kind", ["standard", "jumprelu"])
def test_a_rescale_flag_outside_topk_is_ignored_as_saelens_does(tmp_path, kind):
    """`rescale_acts_by_decoder_norm` is a field of SAELens's TopK config alone; its loader
    drops it from other configs. Folded in, it scaled the standard SAE's latents and
    changed which JumpReLU latents pass their thresholds."""
    import json
    import shutil

    shutil.copytree(FIXTURES / kind, tmp_path / kind)
    cfg_file = tmp_path / kind / "cfg.json"
    cfg_file.write_text(
        json.dumps({**json.loads(cfg_file.read_text()), "rescale_acts_by_decoder_norm": True})
    )
    ref = load_file(str(FIXTURES / kind / "reference.safetensors"))
    with torch.no_grad():
        acts = SparseAutoencoder.load(tmp_path / kind).encode(ref["x"]).acts
    torch.testing.assert_close(acts, ref["feature_acts"], atol=1e-5, rtol=1e-5)


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


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_half_precision_export_reads_back_in_its_dtype(tmp_path, dtype):
    """SAELens computes in its cfg.json's `dtype` (it casts the input to it); the import
    read every SAE as float32, so an exported bfloat16 TopK SAE chose other latents than
    itself on about 1% of rows."""
    sae = SparseAutoencoder(
        SAEConfig("topk", d_in=16, d_sae=64, k=4, dtype=dtype), torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        sae.b_dec.normal_()
    export_saelens(sae.eval(), tmp_path / "lens")
    back = load_saelens(tmp_path / "lens")
    assert back.cfg.dtype == dtype
    x = torch.randn(2000, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(back.encode(x).acts, sae.encode(x).acts)


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


def _store_and_sae(tmp_path, arch, block_diagonal):
    """A store of two layers ('a': 3 units, 'b': 2) captured by the CLI-like provenance,
    and a joint SAE over it whose latents stay in one layer when ``block_diagonal``."""
    from saeatlas.capture import capture_activations

    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    store = capture_activations(
        net,
        torch.randn(20, 4),
        ["0", "1"],
        tmp_path / "store",
        progress=False,
        provenance={"model": "mypkg.nets:build", "inputs": "data/x.npy", "max_length": 16},
    )
    layers = store.layers
    sae = SparseAutoencoder(
        SAEConfig(arch, d_in=5, d_sae=6, k=2, layers=layers), torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(std=0.1)
        if block_diagonal:  # latents 0-3 on layer '0', 4-5 on layer '1'
            sae.W_enc[3:, :4] = 0
            sae.W_enc[:3, 4:] = 0
            sae.W_dec[:4, 3:] = 0
            sae.W_dec[4:, :3] = 0
    return store, sae.eval()


def test_export_writes_metadata_from_the_store_provenance(tmp_path):
    import json

    store, joint = _store_and_sae(tmp_path, "relu", True)
    single = SparseAutoencoder(
        SAEConfig("topk", d_in=3, d_sae=4, k=2, layers=store.layers[:1]),
        torch.Generator().manual_seed(1),
    )
    export_saelens(single, tmp_path / "one", store=store.path)
    meta = json.loads((tmp_path / "one" / "cfg.json").read_text())["metadata"]
    assert meta["hook_name"] == "0" and meta["model_name"] == "mypkg.nets:build"
    assert meta["context_size"] == 16 and meta["dataset_path"] == "data/x.npy"
    assert "prepend_bos" not in meta  # not known, so not guessed


@pytest.mark.parametrize("arch", ["relu", "jumprelu"])
def test_joint_sae_exports_one_exact_saelens_sae_per_layer(tmp_path, arch):
    store, joint = _store_and_sae(tmp_path, arch, True)
    written = export_saelens(joint, tmp_path / "lens", store=store)
    assert sorted(written) == ["0", "1"]
    x = store.read()
    with torch.no_grad():
        acts, x_hat = joint.encode(x).acts, joint(x).x_hat
        for name, latents, cols in (
            ("0", slice(0, 4), slice(0, 3)),
            ("1", slice(4, 6), slice(3, 5)),
        ):
            part = load_saelens(written[name])
            torch.testing.assert_close(part.encode(x[:, cols]).acts, acts[:, latents])
            torch.testing.assert_close(part(x[:, cols]).x_hat, x_hat[:, cols])


@pytest.mark.parametrize("name", ["..", "ABSOLUTE", "a/b"])
def test_a_layer_name_that_is_no_folder_name_is_refused_before_writing(tmp_path, name):
    """A layers.json may name a layer anything: '..' wrote a layer's SAELens SAE over
    the folder holding --out (the SAE's own files when --out lies inside it), an
    absolute name wrote it there."""
    from dataclasses import replace

    name = str(tmp_path / "elsewhere") if name == "ABSOLUTE" else name
    _, joint = _store_and_sae(tmp_path, "relu", True)
    renamed = replace(joint.cfg.layers[0], name=name)
    joint.cfg = replace(joint.cfg, layers=(renamed, *joint.cfg.layers[1:]))
    (tmp_path / "work").mkdir()
    with pytest.raises(SAEFileError, match="cannot name a folder"):
        export_saelens(joint, tmp_path / "work" / "lens")
    assert list((tmp_path / "work").iterdir()) == [] and not (tmp_path / "elsewhere").exists()


def test_joint_sae_that_mixes_layers_is_refused_with_the_reason(tmp_path):
    store, mixed = _store_and_sae(tmp_path, "relu", False)
    with pytest.raises(SAEFileError, match="Latent 0 .* several layers \\('0', '1'\\)"):
        export_saelens(mixed, tmp_path / "lens", store=store)
    _, topk = _store_and_sae(tmp_path / "t", "topk", True)
    with pytest.raises(SAEFileError, match="joint topk SAE .* picks its active latents"):
        export_saelens(topk, tmp_path / "lens2", store=store)


def test_a_per_head_hook_z_sae_exports_with_saelens_hook_z_reshaping(tmp_path):
    import json

    from saeatlas.store import LayerSpec

    z = LayerSpec("blocks.0.attn.hook_z", 0, 8, (None, 5, 2, 4), "head")
    sae = SparseAutoencoder(
        SAEConfig("topk", d_in=8, d_sae=16, k=2, layers=(z,)), torch.Generator().manual_seed(0)
    )
    export_saelens(sae, tmp_path / "z")
    cfg = json.loads((tmp_path / "z" / "cfg.json").read_text())
    assert cfg["reshape_activations"] == "hook_z"
    assert cfg["metadata"]["hook_name"] == "blocks.0.attn.hook_z"
    back = load_saelens(tmp_path / "z")  # reads it back: the rows are already flat
    x = torch.randn(6, 8)
    torch.testing.assert_close(back(x).x_hat, sae.eval()(x).x_hat)


def test_an_export_replaces_an_earlier_one_whole_and_never_foreign_files(tmp_path):
    from saeatlas.errors import ConfigError

    sae = SparseAutoencoder(SAEConfig("relu", d_in=8, d_sae=16), torch.Generator().manual_seed(0))
    out = tmp_path / "lens"
    export_saelens(sae, out)
    (out / "sae_weights.safetensors").write_bytes(b"stale")  # an earlier export's file
    export_saelens(sae, out)  # replaced whole: nothing of the old one survives
    load_saelens(out)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".partial", ".old"))]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not a SAELens export's"):
        export_saelens(sae, mine)
    assert (mine / "notes.txt").read_text() == "keep" and len(list(mine.iterdir())) == 1
