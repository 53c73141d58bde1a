"""The nineteenth hostile sweep's cases in the integrations (SAELens and sparsify
directories, the exports, TransformerLens and nnsight models): each was refused
wrongly, lost data, or gave another SAE than its source before its fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parents[1] / "fixtures"

#: What SAELens 6's trainer writes into a JumpReLU checkpoint's cfg.json
#: (`JumpReLUTrainingSAEConfig.to_dict`, saved by `TrainingSAE.save_model`).
JUMPRELU_TRAINING = {
    "decoder_init_norm": 0.1,
    "jumprelu_init_threshold": 0.01,
    "jumprelu_bandwidth": 0.05,
    "l0_coefficient": 1.0,
    "l0_warm_up_steps": 0,
}
#: What a SAELens 5 training checkpoint's cfg.json holds (every architecture).
SAELENS5_TRAINING = {
    "sae_lens_training_version": "5.9.1",
    "hook_name": "blocks.0.hook_resid_post",
    "activation_fn_str": "relu",
    "l1_coefficient": 5.0,
    "lp_norm": 1.0,
    "jumprelu_init_threshold": 0.001,
    "jumprelu_bandwidth": 0.001,
}


def _checkpoint(tmp_path, fixture: str, version: int) -> Path:
    src = tmp_path / f"ckpt-{fixture}"
    shutil.copytree(FIXTURES / "saelens" / fixture, src)
    cfg = json.loads((src / "cfg.json").read_text())
    if version == 6:
        cfg |= JUMPRELU_TRAINING
        cfg["metadata"]["hook_name"] = "blocks.0.hook_resid_post"
    else:
        del cfg["metadata"]
        cfg |= SAELENS5_TRAINING
    (src / "cfg.json").write_text(json.dumps(cfg))
    return src


@pytest.mark.parametrize("fixture, version", [("jumprelu", 6), ("standard", 5)])
def test_a_saelens_training_checkpoint_is_read_as_saelens(tmp_path, run_cli, fixture, version):
    """SAELens's trainer saves its checkpoints with the training config: a JumpReLU one
    holds `l0_coefficient` and `jumprelu_bandwidth` (every SAELens 5 one the latter),
    the keys by which saeatlas knew its own cfg.json. `import-saelens` refused it as
    "a saeatlas SAE directory", and `--sae` read it as one without its hook name
    (SAELens's `metadata.hook_name`), so it was matched to a store's layers blind and
    exported with no hook. SAELens's version in the file now says whose it is."""
    from saeatlas.sae import SparseAutoencoder
    from saeatlas.sae.formats import saelens_hook_name

    cli, _ = run_cli
    src = _checkpoint(tmp_path, fixture, version)
    r = cli("import-saelens", src, "--out", tmp_path / "sae")
    assert r.exit_code == 0, r.output
    ref = load_file(str(FIXTURES / "saelens" / fixture / "reference.safetensors"))
    for sae in (SparseAutoencoder.load(tmp_path / "sae"), SparseAutoencoder.load(src)):
        assert saelens_hook_name(sae.cfg) == "blocks.0.hook_resid_post"
        torch.testing.assert_close(sae.encode(ref["x"]).acts, ref["feature_acts"])


def test_a_reexport_to_neuronpedia_keeps_files_that_are_no_batch(tmp_path, analysed, run_cli):
    """An export's folder took every name that starts with "batch-" for its own: a
    `batch-0.json.orig` kept beside the batches before editing them, or a `batch-notes`
    folder, was deleted without a word by the next export, which replaces the folder
    whole. Only `batch-<number>.json` is a batch now; the export refuses the others."""
    cli, one_line = run_cli
    out = tmp_path / "np"
    args = ("export-neuronpedia", analysed, "--out", out, "--n-examples", "2")
    assert cli(*args).exit_code == 0
    (out / "batch-0.json.orig").write_text("kept by hand")
    (out / "batch-notes").mkdir()
    one_line(cli(*args), "not a Neuronpedia export's", "batch-0.json.orig", "batch-notes")
    assert (out / "batch-0.json.orig").read_text() == "kept by hand"
    assert (out / "batch-notes").is_dir()


@pytest.mark.filterwarnings("ignore:The SAE reads 2 layers")
def test_read_batches_passes_over_files_that_are_no_batch(tmp_path, analysed):
    """`read_batches` ended in int()'s ValueError on a `batch-old.json` beside the
    batches; it reads the numbered ones, in their order."""
    from saeatlas.export import export_neuronpedia, read_batches
    from saeatlas.export.neuronpedia import NeuronpediaConfig

    out = tmp_path / "np"
    export_neuronpedia(analysed, out, config=NeuronpediaConfig(n_examples=2, features_per_batch=8))
    n = len(list(out.glob("batch-*.json")))
    (out / "batch-old.json").write_text("{}")
    batches = read_batches(out)
    assert len(batches) == n > 1
    starts = [b["features"][0]["feature_index"] for b in batches]
    assert starts == sorted(starts)


def _joint_export(tmp_path, cli) -> Path:
    """A joint ReLU SAE over the layers '1' and '3' whose latents stay within one layer,
    exported for SAELens: a folder of two SAELens SAEs, `1/` and `3/`."""
    from saeatlas.sae import SAEConfig, SparseAutoencoder
    from saeatlas.store import LayerSpec

    layers = (LayerSpec("1", 0, 10, (None, 10), "sample"), LayerSpec("3", 10, 18, (None, 8)))
    sae = SparseAutoencoder(SAEConfig("relu", d_in=18, d_sae=8, layers=layers))
    with torch.no_grad():
        sae.W_enc[10:, :4] = sae.W_enc[:10, 4:] = sae.W_dec[:4, 10:] = sae.W_dec[4:, :10] = 0
    sae.save(tmp_path / "joint")
    assert cli("export-saelens", tmp_path / "joint", "--out", tmp_path / "exp").exit_code == 0
    return tmp_path / "exp"


@pytest.mark.parametrize("command", ["import-saelens", "evaluate", "export-saelens"])
def test_a_folder_of_saes_is_named_as_one(tmp_path, outputs, run_cli, command):
    """A joint SAE's SAELens export is a folder of one SAE per layer (as SAELens releases
    keep one per hook). Given where one SAE goes, `import-saelens` said only that it has
    no cfg.json, and `--sae` told the user to import it with `import-saelens`, which
    refuses it. Both now name the SAEs inside and how to give one."""
    cli, one_line = run_cli
    exp = _joint_export(tmp_path, cli)
    args = {
        "import-saelens": (exp, "--out", tmp_path / "imp"),
        "evaluate": ("--sae", exp, "--acts", outputs.store),
        "export-saelens": (exp, "--out", tmp_path / "again"),
    }[command]
    one_line(cli(command, *args), "folder of 2 SAE directories ('1', '3')", str(exp / "1"))


#: command -> (an SAE's file given for its folder, that folder)
FILES_FOR_FOLDERS = {
    "evaluate": ("sae/cfg.json", "sae"),
    "import-saelens": ("saelens/topk/sae_weights.safetensors", "saelens/topk"),
    "import-sparsify": ("sparsify/run/layers.1/sae.safetensors", "sparsify/run/layers.1"),
}


@pytest.mark.parametrize("command", list(FILES_FOR_FOLDERS))
def test_a_file_of_an_sae_given_for_its_folder_is_named_so(tmp_path, outputs, run_cli, command):
    """An SAE's own file given for its folder was told that it "has no cfg.json" (of the
    cfg.json itself) or "is not a directory"; the error now names the folder to give."""
    given, folder = FILES_FOR_FOLDERS[command]
    cli, one_line = run_cli
    root = outputs.root if given.startswith("sae/") else FIXTURES
    args = {
        "evaluate": ("--sae", root / given, "--acts", outputs.store),
        "import-saelens": (root / given, "--out", tmp_path / "imp"),
        "import-sparsify": (root / given, "--out", tmp_path / "imp"),
    }[command]
    one_line(cli(command, *args), f"give its folder ('{root / folder}')")


def test_the_sparsify_entry_points_check_their_paths(tmp_path):
    """`import_sparsify` and `load_sparsify` given a number or None ended in pathlib's
    TypeError (the sixteenth sweep checked every other SAE reader and writer), and
    `load_sparsify` of a run folder said its cfg.json "cannot be read (No such file or
    directory)"."""
    from saeatlas.errors import ConfigError
    from saeatlas.sae.files import SAEFileError
    from saeatlas.sae.sparsify import import_sparsify, load_sparsify

    run = FIXTURES / "sparsify" / "run"
    for call, words in [
        (lambda: import_sparsify(5, tmp_path / "a"), "`src` must be a path"),
        (lambda: import_sparsify(None, tmp_path / "a"), "`src` must be a path"),
        (lambda: import_sparsify(run, 5), "`out` must be a path"),
        (lambda: load_sparsify(None), "`path` must be a path"),
    ]:
        with pytest.raises(ConfigError, match=words):
            call()
    with pytest.raises(SAEFileError, match="is a sparsify run with 2 SAEs"):
        load_sparsify(run)
    assert not (tmp_path / "a").exists()


def test_a_saelens_sae_is_spliced_at_its_hook(tmp_path):
    """`evaluate --model` (`loss_recovered`) refused an SAE from SAELens, which names its
    hook point (`hook_name`) instead of a layer map, as "no layer map; it must have been
    trained on a store", though `evaluate` and `analyze` read it against the store by
    that hook. It is now spliced at the hook: an SAE of a bridge's `hook_z` (SAELens's
    `hook_z` reshape) that keeps heads 0, 2 and 3 gives the loss of TransformerLens's own
    edit that zeroes head 1."""
    pytest.importorskip("transformer_lens")
    from safetensors.torch import save_file
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    from saeatlas.evaluate import loss_recovered
    from saeatlas.losses import per_sample_next_token
    from saeatlas.sae.saelens import load_saelens

    cfg = TransformerBridgeConfig(
        d_model=16, d_head=4, n_heads=4, n_layers=1, n_ctx=8, d_vocab=20, d_mlp=16,
        act_fn="gelu", normalization_type="LN", seed=0,
    )  # fmt: skip
    bridge = TransformerBridge.boot_native(cfg).eval()
    keep = torch.diag(torch.tensor([1.0] * 4 + [0.0] * 4 + [1.0] * 8))
    eye = torch.eye(16)
    src = tmp_path / "sl"
    src.mkdir()
    save_file(
        {
            "W_enc": torch.cat([eye, -eye], 1),
            "b_enc": torch.zeros(32),
            "W_dec": torch.cat([keep, -keep], 0),
            "b_dec": torch.zeros(16),
        },
        str(src / "sae_weights.safetensors"),
    )
    meta = {"hook_name": "blocks.0.attn.hook_z", "sae_lens_version": "6.54.12"}
    (src / "cfg.json").write_text(
        json.dumps(
            {
                "architecture": "standard",
                "d_in": 16,
                "d_sae": 32,
                "apply_b_dec_to_input": False,
                "reshape_activations": "hook_z",
                "metadata": meta,
            }
        )  # fmt: skip
    )
    ids = torch.randint(0, 20, (4, 6), generator=torch.Generator().manual_seed(0))
    res = loss_recovered(load_saelens(src), bridge, ids, per_sample_next_token, batch_size=2)

    def drop_head_1(z, hook):
        z = z.clone()
        z[:, :, 1] = 0
        return z

    logits = bridge.run_with_hooks(ids, fwd_hooks=[("blocks.0.attn.hook_z", drop_head_1)])
    want = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 20), ids[:, 1:].reshape(-1))
    assert res.loss_sae == pytest.approx(float(want), abs=1e-5)
    assert res.loss_sae != pytest.approx(res.loss_clean, abs=1e-4)


UNEMBED_FILE = """
import torch


class Tiny(torch.nn.Module):
    # what the Neuronpedia export reads of a TransformerLens model: its unembedding W_U
    def __init__(self):
        super().__init__()
        self.W_U = torch.nn.Parameter(torch.randn(16, 20))

    def forward(self, x):
        return x @ self.W_U


def build():
    torch.manual_seed(0)
    return Tiny()
"""


def test_neuronpedia_logits_refuse_an_sae_of_per_head_values(tmp_path, run_cli):
    """The logits of a Neuronpedia export (`--model`) read each feature's decoder row
    through the unembedding when the SAE was as wide as the residual stream: an SAE of
    TransformerLens's `hook_z` (n_heads x d_head = d_model units, as in GPT-2) passed, and
    its per-head values were read as residual directions, top tokens and all. A layer of
    per-head values is now refused before the export's passes."""
    import numpy as np

    from saeatlas.sae import SAEConfig, SparseAutoencoder
    from saeatlas.store import LayerSpec
    from saeatlas.structure.atlas import Atlas

    cli, one_line = run_cli
    spec = LayerSpec("blocks.0.attn.hook_z", 0, 16, (None, 8, 4, 4), "head")
    np.save(tmp_path / "acts.npy", np.random.default_rng(0).normal(size=(40, 16)).astype("f4"))
    (tmp_path / "acts.layers.json").write_text(json.dumps([spec.to_json()]))
    SparseAutoencoder(SAEConfig("relu", d_in=16, d_sae=8, layers=(spec,))).save(tmp_path / "sae")
    Atlas(
        units=pd.DataFrame({"unit": range(16), "layer": [spec.name] * 16, "index": range(16),
                            "module": [-1] * 16}),
        features=pd.DataFrame({"feature": range(8), "module": [-1] * 8, "density": [0.1] * 8}),
        modules=pd.DataFrame({"module": pd.Series([], dtype=int)}),
        summary={"n_modules": 0, "message": "none"},
    ).save(tmp_path / "atlas")  # fmt: skip
    (tmp_path / "model.py").write_text(UNEMBED_FILE)
    args = ("--sae", tmp_path / "sae", "--acts", tmp_path / "acts.npy", "--out", tmp_path / "np")
    model = ("--model", f"{tmp_path / 'model.py'}:build")
    one_line(cli("export-neuronpedia", tmp_path / "atlas", *args, *model), "per-head values")
    assert not (tmp_path / "np").exists()
    assert cli("export-neuronpedia", tmp_path / "atlas", *args).exit_code == 0  # no logits


@pytest.mark.parametrize("how", ["same path", "with --overwrite", "through a link"])
def test_import_saelens_never_replaces_the_sae_it_imports(tmp_path, run_cli, snapshot, how):
    """`import-saelens SRC --out SRC` said the folder "already holds an SAE" and to pass
    --overwrite, which replaced the SAELens SAE being imported with its conversion (a
    `topk` with `rescale_acts_by_decoder_norm` folded into other weights: the source files
    were gone). `export-saelens` and `import-sparsify` refuse their own source; so does
    `import-saelens` now, before reading it."""
    cli, one_line = run_cli
    src = tmp_path / "sl"
    shutil.copytree(FIXTURES / "saelens" / "topk_rescale", src)
    (src / "reference.safetensors").unlink()
    out = src
    if how == "through a link":
        (tmp_path / "link").symlink_to(src)
        out = tmp_path / "link"
    before = snapshot(src)
    flags = ("--overwrite",) if how != "same path" else ()
    one_line(cli("import-saelens", src, "--out", out, *flags), "is the SAELens SAE being imported")
    assert snapshot(src) == before


@pytest.mark.parametrize("kind", ["saelens", "saeatlas"])
def test_weights_beyond_the_range_of_the_saes_dtype_are_refused(tmp_path, outputs, run_cli, kind):
    """An SAE whose cfg.json computes in float16 (SAELens casts the weights to its `dtype`,
    and saeatlas keeps it) with a weight of 1e5 stored in float32 loaded as Inf without a
    word, and `import-saelens` wrote the broken SAE; weights were checked finite as float32
    only."""
    from safetensors.torch import save_file

    cli, one_line = run_cli
    src = tmp_path / "sae"
    shutil.copytree(FIXTURES / "saelens" / "standard" if kind == "saelens" else outputs.sae, src)
    (src / "reference.safetensors").unlink(missing_ok=True)
    cfg = json.loads((src / "cfg.json").read_text())
    (src / "cfg.json").write_text(json.dumps(cfg | {"dtype": "float16"}))
    weights = load_file(str(src / "sae_weights.safetensors"))
    weights["b_dec"][0] = 1e5
    save_file(weights, str(src / "sae_weights.safetensors"))
    if kind == "saelens":
        result = cli("import-saelens", src, "--out", tmp_path / "imp")
    else:
        result = cli("evaluate", "--sae", src, "--acts", outputs.store)
    one_line(result, "`b_dec` has 1 values beyond the range of float16")
    assert not (tmp_path / "imp").exists()


@pytest.mark.parametrize("d_in, head", [(18, None), (4, 2)])
def test_a_saelens_sae_of_another_width_than_its_hooks_layer_is_refused(
    tmp_path, outputs, run_cli, d_in, head
):
    """A SAELens SAE whose `hook_name` names a layer of the store of another width was
    told the store "has no layer of that name": with the store's width (the layers '1'
    and '3', 18 units, for an SAE of hook '1') it read both layers as the hook's units
    under that false warning; one of a single head (`hook_head_index`, d_head units) was
    told to give "the store only the layer it was trained on". Both now name the layer
    and its width (and the head)."""
    from safetensors.torch import save_file

    cli, one_line = run_cli
    src = tmp_path / "sl"
    src.mkdir()
    g = torch.Generator().manual_seed(0)
    save_file(
        {"W_enc": torch.randn(d_in, 8, generator=g), "b_enc": torch.zeros(8),
         "W_dec": torch.randn(8, d_in, generator=g), "b_dec": torch.zeros(d_in)},
        str(src / "sae_weights.safetensors"),
    )  # fmt: skip
    meta = {"hook_name": "1", "hook_head_index": head, "sae_lens_version": "6.54.12"}
    cfg = {"architecture": "standard", "d_in": d_in, "d_sae": 8, "metadata": meta}
    (src / "cfg.json").write_text(json.dumps(cfg))
    words = ["SAELens's `hook_name` '1'", "layer of that name has 10"]
    words += ["head 2 of it alone"] if head is not None else []
    one_line(cli("evaluate", "--sae", src, "--acts", outputs.store), *words)


def test_loss_recovered_checks_its_arguments():
    """`loss_recovered`, `evaluate --model`'s Python entry point, ended in an
    AttributeError for a path as the SAE, in TypeErrors for a loss's name or a batch size
    of "2" or 2.5, and in torch's RuntimeError for a device of 'bogus'; it read a batch
    size of True as 1, passed over an unknown `spatial`, and answered inputs of no
    sample with a loss of 0 and a fraction of NaN. A loss's name now works as `--loss`."""
    from saeatlas.errors import AtlasError
    from saeatlas.evaluate import loss_recovered
    from saeatlas.sae import SAEConfig, SparseAutoencoder
    from saeatlas.store import LayerSpec

    model = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    layer = LayerSpec("1", 0, 6, (None, 6), "sample")
    sae = SparseAutoencoder(SAEConfig("relu", d_in=6, d_sae=8, layers=(layer,))).eval()
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    for kwargs, words in [
        ({"sae": "sae"}, "`sae` must be a SparseAutoencoder"),
        ({"batch_size": "2"}, "`batch_size` must be a whole number"),
        ({"batch_size": 2.5}, "`batch_size` must be a whole number"),
        ({"batch_size": True}, "`batch_size` must be a whole number"),
        ({"spatial": "bogus"}, "Unknown `spatial` 'bogus'"),
        ({"device": "bogus"}, "Unknown `device` 'bogus'"),
        ({"loss_fn": None}, "`loss_fn` must be a per-sample loss"),
        ({"loss_fn": "bogus"}, "Unknown loss 'bogus'"),
        ({"inputs": x[:0], "labels": y[:0]}, "hold no samples"),
    ]:
        args = {"sae": sae, "model": model, "inputs": x, "labels": y} | kwargs
        with pytest.raises(AtlasError, match=words):
            loss_recovered(**args)
    by_name = loss_recovered(sae, model, x, "cross-entropy", labels=y)
    # the fraction is NaN where nothing is recovered (an untrained model and SAE): NaN
    # compares unequal to itself, so the fields are compared as text
    assert repr(by_name) == repr(loss_recovered(sae, model, x, labels=y))


@pytest.mark.parametrize("model", ["gpt2", 5, torch.nn.Linear])
def test_export_neuronpedia_names_a_model_that_is_no_module(tmp_path, analysed, model):
    """`export_neuronpedia(model="gpt2")` (a spec's text, or a class) was told the str
    "has no unembedding" and to "load the model with its head (--model-class
    causal-lm)"; it is told that a loaded model goes there."""
    from saeatlas.errors import ConfigError
    from saeatlas.export import export_neuronpedia

    with pytest.raises(ConfigError, match="must be a torch.nn.Module.*load_model"):
        export_neuronpedia(analysed, tmp_path / "np", model=model)
    assert not (tmp_path / "np").exists()


@pytest.mark.parametrize("where", ["a folder named as a layer", "an export's layer folder"])
def test_export_saelens_keeps_files_in_folders_named_as_its_layers(tmp_path, run_cli, where):
    """A joint SAE's export took any folder named as one of its layers for its own: a
    folder `1/` of the user's files in --out, or a file added to an earlier export's
    `3/`, was deleted without a word with the folder the export replaced. A layer's
    folder is the export's only when it holds a SAELens SAE's two files."""
    cli, one_line = run_cli
    exp = _joint_export(tmp_path, cli)
    if where == "a folder named as a layer":
        exp = tmp_path / "mine"
        (exp / "1").mkdir(parents=True)
        kept = exp / "1" / "notes.txt"
    else:
        kept = exp / "3" / "README.txt"
    kept.write_text("kept")
    one_line(cli("export-saelens", tmp_path / "joint", "--out", exp), "not a SAELens export's")
    assert kept.read_text() == "kept"


@pytest.mark.parametrize("layout", ["one SAE", "a joint SAE's layer"])
def test_export_saelens_never_replaces_a_saelens_sae_it_did_not_write(
    tmp_path, run_cli, snapshot, layout
):
    """`export-saelens` (which has no --overwrite: an earlier export is replaced) took any
    SAELens SAE at --out for an earlier export of its own: `--out` naming a SAELens SAE
    downloaded there (or a layer folder holding one) replaced it without a word. Only a
    SAELens SAE whose cfg.json says saeatlas exported it is replaced now."""
    from saeatlas.sae import SAEConfig, SparseAutoencoder
    from saeatlas.store import LayerSpec

    cli, one_line = run_cli
    theirs = tmp_path / "theirs"
    if layout == "one SAE":
        layer = LayerSpec("1", 0, 10, (None, 10), "sample")
        sae, target = tmp_path / "sae", theirs
        SparseAutoencoder(SAEConfig("relu", d_in=10, d_sae=8, layers=(layer,))).save(sae)
    else:
        _joint_export(tmp_path, cli)
        sae, target = tmp_path / "joint", theirs / "1"
    shutil.copytree(FIXTURES / "saelens" / "topk", target)
    (target / "reference.safetensors").unlink()
    before = snapshot(theirs)
    result = cli("export-saelens", sae, "--out", theirs)
    one_line(result, "did not export" if layout == "one SAE" else "not a SAELens export's")
    assert snapshot(theirs) == before
    mine = tmp_path / "mine"
    assert cli("export-saelens", sae, "--out", mine).exit_code == 0
    assert cli("export-saelens", sae, "--out", mine).exit_code == 0  # its own: replaced


@pytest.mark.parametrize("settings", [None, '{"n_prompts": 24576}', "not json"])
def test_export_neuronpedia_never_replaces_batches_it_did_not_write(
    tmp_path, analysed, run_cli, snapshot, settings
):
    """SAEDashboard's Neuronpedia runner writes the same `batch-<i>.json` and
    `run_settings.json`: a folder of them given as --out was taken for an earlier export
    and replaced whole without a word. Only a folder whose run_settings.json says saeatlas
    wrote it is replaced now."""
    cli, one_line = run_cli
    out = tmp_path / "dashboard"
    out.mkdir()
    (out / "batch-0.json").write_text('{"model_id": "gpt2", "layer": 0, "features": []}')
    if settings is not None:
        (out / "run_settings.json").write_text(settings)
    before = snapshot(out)
    args = ("export-neuronpedia", analysed, "--n-examples", "2", "--out")
    one_line(cli(*args, out), "saeatlas did not write", "batch-0.json")
    assert snapshot(out) == before


def _lazy_language_model(tmp_path, make_gpt2, make_char_tokenizer):
    """An `nnsight.LanguageModel` of a tiny GPT-2 folder, built the usual way: its weights
    on the meta device until its first trace."""
    nnsight = pytest.importorskip("nnsight")
    make_gpt2(40).save_pretrained(tmp_path / "gpt2")
    tokenizer = make_char_tokenizer(tmp_path / "gpt2")
    lm = nnsight.LanguageModel(str(tmp_path / "gpt2"), tokenizer=tokenizer)
    assert any(p.is_meta for p in lm._module.parameters())
    return lm


def test_a_lazily_loaded_nnsight_model_is_dispatched(tmp_path, make_gpt2, make_char_tokenizer):
    """`nnsight.LanguageModel(path)` keeps its weights on the meta device until its first
    trace loads them (`dispatch`), so every capture of one built the usual way was
    refused as "on the meta device" and told to `load_state_dict`. saeatlas dispatches
    it, as a trace would; the rows equal nnsight's own trace."""
    lm = _lazy_language_model(tmp_path, make_gpt2, make_char_tokenizer)
    from saeatlas.capture import capture_activations

    store = capture_activations(
        lm, ["a dog"], ["model.transformer.h.0"], tmp_path / "s", progress=False
    )
    with lm.trace("a dog"):
        h0 = lm.transformer.h[0].output.save()
    h0 = h0[0] if isinstance(h0, tuple) else h0
    torch.testing.assert_close(store.read(), h0[0])


def test_a_saelens_hook_z_sae_exported_again_keeps_its_reshape(tmp_path, run_cli):
    """An SAE imported from SAELens with `reshape_activations` "hook_z" (SAELens flattens
    hook_z's [..., head, d_head] before the SAE) was exported again with "none": SAELens
    would give it hook_z's heads unflattened. The import keeps it, as it keeps the hook."""
    from safetensors.torch import save_file

    cli, _ = run_cli
    src = tmp_path / "sl"
    src.mkdir()
    g = torch.Generator().manual_seed(0)
    weights = {"W_enc": torch.randn(16, 8, generator=g), "b_enc": torch.zeros(8)}
    weights |= {"W_dec": torch.randn(8, 16, generator=g), "b_dec": torch.zeros(16)}
    save_file(weights, str(src / "sae_weights.safetensors"))
    meta = {"hook_name": "blocks.0.attn.hook_z", "sae_lens_version": "6.54.12"}
    cfg = {"architecture": "standard", "d_in": 16, "d_sae": 8, "reshape_activations": "hook_z"}
    (src / "cfg.json").write_text(json.dumps(cfg | {"metadata": meta}))
    assert cli("import-saelens", src, "--out", tmp_path / "sae").exit_code == 0
    assert cli("export-saelens", tmp_path / "sae", "--out", tmp_path / "again").exit_code == 0
    again = json.loads((tmp_path / "again" / "cfg.json").read_text())
    assert again["reshape_activations"] == "hook_z"
    assert again["metadata"]["hook_name"] == "blocks.0.attn.hook_z"


def test_a_sparsify_hookpoint_given_as_the_current_folder(tmp_path, run_cli, monkeypatch):
    """sparsify names a hookpoint's folder after the hookpoint, and saeatlas names the
    SAE's layer after the folder: `--sae .` (or `import-sparsify .`) from inside it was
    refused as "'cfg.json' is not a valid SAE config: ... the name ''" (the name of '.').
    The folder's own name is read."""
    from saeatlas.sae import SparseAutoencoder

    cli, _ = run_cli
    hookpoint = tmp_path / "layers.1"
    shutil.copytree(FIXTURES / "sparsify" / "run" / "layers.1", hookpoint)
    monkeypatch.chdir(hookpoint)
    assert SparseAutoencoder.load(".").cfg.layers[0].name == "layers.1"
    r = cli("import-sparsify", ".", "--out", tmp_path / "sae")
    assert r.exit_code == 0 and "'layers.1'" in r.output, r.output
    assert SparseAutoencoder.load(tmp_path / "sae").cfg.layers[0].name == "layers.1"


WRAPPER_OBJECT = """
import nnsight
import torch

torch.manual_seed(0)
net = nnsight.NNsight(torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.ReLU()))
"""


def test_a_model_spec_naming_an_nnsight_wrapper_object(tmp_path, outputs, run_cli):
    """A SPEC naming a model object is the model (the fourteenth sweep), but one naming an
    nnsight wrapper (`file.py:net`, net = NNsight(...)), which is callable and no torch
    module, was called as a factory: "Calling ... failed: TypeError: Sequential.forward()
    missing 1 required positional argument". It is the model now."""
    pytest.importorskip("nnsight")
    cli, _ = run_cli
    (tmp_path / "wrapped.py").write_text(WRAPPER_OBJECT)
    model = f"{tmp_path / 'wrapped.py'}:net"
    args = ("--inputs", outputs.inputs, "--layers", "1", "--out", tmp_path / "s", "-q")
    r = cli("capture", "--model", model, *args)
    assert r.exit_code == 0, r.output


def test_neuronpedia_logits_of_a_lazily_loaded_nnsight_model(
    tmp_path, make_gpt2, make_char_tokenizer
):
    """`export_neuronpedia(model=LanguageModel(path))` read the unembedding of the wrapper
    before anything loaded its weights: torch's "Cannot copy out of meta tensor" traceback.
    The logits are those of the loaded model's own head."""
    import numpy as np

    from saeatlas.export import NeuronpediaConfig, export_neuronpedia, read_batches
    from saeatlas.sae import SAEConfig, SparseAutoencoder
    from saeatlas.store import LayerSpec
    from saeatlas.structure.atlas import Atlas

    lm = _lazy_language_model(tmp_path, make_gpt2, make_char_tokenizer)
    spec = LayerSpec("transformer.h.1", 0, 32, (None, None, 32), "token")
    np.save(tmp_path / "acts.npy", np.random.default_rng(0).normal(size=(40, 32)).astype("f4"))
    (tmp_path / "acts.layers.json").write_text(json.dumps([spec.to_json()]))
    sae = SparseAutoencoder(SAEConfig("relu", d_in=32, d_sae=8, layers=(spec,)))
    sae.save(tmp_path / "sae")
    Atlas(
        units=pd.DataFrame(
            {"unit": range(32), "layer": [spec.name] * 32, "index": range(32), "module": -1}
        ),
        features=pd.DataFrame({"feature": range(8), "module": -1, "density": 0.1}),
        modules=pd.DataFrame({"module": pd.Series([], dtype=int)}),
        summary={"n_modules": 0, "message": "none"},
    ).save(tmp_path / "atlas")
    export_neuronpedia(
        tmp_path / "atlas", tmp_path / "np", sae=tmp_path / "sae",
        store=tmp_path / "acts.npy", model=lm, config=NeuronpediaConfig(n_examples=2),
    )  # fmt: skip
    feature = read_batches(tmp_path / "np")[0]["features"][0]
    head = lm._module.lm_head.weight.detach()  # [vocab, d_model], loaded
    best = int((sae.W_dec.detach()[feature["feature_index"]] @ head.T).argmax())
    name = lm.tokenizer.convert_ids_to_tokens([best])[0]  # None past the tokenizer's vocabulary
    assert feature["pos_str"][0] == (name if name is not None else "<|outofrange|>")
