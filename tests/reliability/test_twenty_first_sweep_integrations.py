"""The twenty-first hostile sweep's cases in the integrations (sparsify checkpoints,
TransformerLens and nnsight models, the Neuronpedia export): each was refused wrongly,
ended in a traceback or a misleading message, or wrote something other than it said
before its fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from saeatlas.capture import capture_activations
from saeatlas.errors import ConfigError, HookpointError, InputsError, ShapeError

FIXTURES = Path(__file__).parents[1] / "fixtures"
QUIET = {"progress": False}


@pytest.fixture
def sparsify_run(tmp_path, snapshot):
    """A copy of the sparsify fixture run, and a check that it was left as it was."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "sparsify" / "run", run)
    before = snapshot(run)
    yield run
    assert snapshot(run) == before


@pytest.mark.parametrize(
    "src, out",
    [(".", "."), ("layers.1", "layers.1"), (".", "layers.1"), ("layers.1", "layers.1/x")],
)
def test_import_sparsify_refuses_an_out_inside_the_checkpoint(sparsify_run, run_cli, src, out):
    """`import-sparsify RUN --out RUN` (or a hookpoint folder onto itself) said "Imported
    sparsify SAE 'layers.1' to RUN/layers.1" and wrote nothing: the sparsify folder in
    the SAE's place was taken for this import done already. An --out in a hookpoint
    folder wrote the SAEs into the checkpoint."""
    cli, one_line = run_cli
    r = cli("import-sparsify", sparsify_run / src, "--out", sparsify_run / out)
    one_line(r, "inside the sparsify checkpoint being imported")


def test_import_sparsify_does_not_keep_a_sparsify_folder_as_its_import(tmp_path, run_cli):
    """A copy of a hookpoint folder already at `--out/<hookpoint>` was kept as its import
    (it reads as the same SAE), so --out held no saeatlas SAE after "Imported"."""
    cli, one_line = run_cli
    out = tmp_path / "out"
    shutil.copytree(FIXTURES / "sparsify" / "run" / "layers.1", out / "layers.1")
    r = cli("import-sparsify", FIXTURES / "sparsify" / "run", "--out", out)
    one_line(r, "not an SAE's", "sae.safetensors")
    assert not (out / "layers.0.mlp").exists()


@pytest.fixture(scope="module")
def bridge_factory(make_gpt2, make_char_tokenizer, tmp_path_factory):
    """``bridge_factory()``: a new TransformerLens 4 bridge around a tiny GPT-2 (its
    settings are changed by the tests)."""
    pytest.importorskip("transformer_lens", reason="pip install 'saeatlas[tl]'")
    from transformer_lens.model_bridge import TransformerBridge

    tokenizer = make_char_tokenizer(tmp_path_factory.mktemp("tok"))
    return lambda: TransformerBridge.boot_transformers(
        "gpt2", hf_model=make_gpt2(40), tokenizer=tokenizer
    ).eval()


IDS = torch.randint(0, 30, (3, 6), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "hook, setting",
    [
        ("blocks.0.attn.hook_result", "set_use_attn_result"),
        ("blocks.0.hook_attn_in", "set_use_attn_in"),
        ("blocks.1.hook_k_input", "set_use_split_qkv_input"),
        ("blocks.0.hook_mlp_in", "set_use_hook_mlp_in"),
    ],
)
def test_a_transformer_lens_hook_that_needs_a_setting_names_it(
    tmp_path, bridge_factory, hook, setting
):
    """TransformerLens runs these hooks only once a setting is on; they were refused as
    modules that "did not run during the forward pass" and the user told to "choose
    modules that the model's forward uses"."""
    with pytest.raises(ShapeError, match=rf"`model\.{setting}\(True\)` is called"):
        capture_activations(bridge_factory(), IDS, [hook], tmp_path / "s", **QUIET)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "setting, hooks",
    [
        ("set_use_attn_in", ["blocks.0.hook_attn_in"]),
        ("set_use_split_qkv_input", ["blocks.0.hook_q_input", "blocks.1.hook_v_input"]),
    ],
)
def test_transformer_lens_per_head_inputs_are_recorded_per_head(
    tmp_path, bridge_factory, setting, hooks
):
    """`hook_attn_in` and `hook_q/k/v_input` give the residual stream per head, [batch,
    pos, head, d_model]; they were refused as a 4-D output "whose layout saeatlas cannot
    tell from its module or hook name" (told to name --layout)."""
    model = bridge_factory()
    getattr(model, setting)(True)
    store = capture_activations(model, IDS, hooks, tmp_path / "s", **QUIET)
    _, cache = model.run_with_cache(IDS)
    assert [(l.layout, l.shape[2:]) for l in store.layers] == [("head", (2, 32))] * len(hooks)
    want = torch.cat([cache[h].reshape(18, -1) for h in hooks], dim=1)
    torch.testing.assert_close(store.read(), want)


@pytest.mark.parametrize(
    "path, write", [("model.1.output", "'model.1'."), ("model.1.input", "'model.1:input'.")]
)
def test_nnsight_output_and_input_are_named_as_layers_are(tmp_path, path, write):
    """nnsight's `model.layers[1].output` written as a layer, 'model.1.output', was
    offered "Its modules are '0', '1', ..." with no word of how to name its output."""
    nnsight = pytest.importorskip("nnsight")
    model = nnsight.NNsight(torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU()))
    with pytest.raises(
        HookpointError, match=f"not by nnsight's `.{path.rsplit('.', 1)[1]}`. Write {write}"
    ):
        capture_activations(model, torch.randn(4, 4), [path], tmp_path / "s", **QUIET)


def test_capture_names_a_module_output_written_as_a_path(outputs, run_cli, tmp_path):
    """The same from the command line, for any model: `--layers 1.output`."""
    cli, one_line = run_cli
    r = cli(
        "capture",
        "--model",
        outputs.model,
        "--inputs",
        outputs.inputs,
        "--layers",
        "1.output",
        "--out",
        tmp_path / "s",
    )
    one_line(r, "Write '1'.")


@pytest.mark.parametrize("n_bins", [1001, 10**10])
def test_neuronpedia_histograms_have_at_most_a_thousand_bars(n_bins):
    """`NeuronpediaConfig(n_bins=10**10)` ended the export in torch's "can't allocate
    memory" RuntimeError, and 10**5 wrote 80 MB of histograms for 32 features."""
    from saeatlas.export import NeuronpediaConfig

    with pytest.raises(ConfigError, match=r"`n_bins` must be in \[1, 1000\]"):
        NeuronpediaConfig(n_bins=n_bins)


@pytest.mark.parametrize("tokenizer", ["gpt2", 5])
def test_the_neuronpedia_export_refuses_a_tokenizer_that_is_none(tmp_path, tiny_gpt2, tokenizer):
    """A tokenizer given by its name ended the export with a model in "'str' object has
    no attribute 'convert_ids_to_tokens'"."""
    from saeatlas.export import export_neuronpedia

    # refused before the work: the atlas is not read (there is none)
    with pytest.raises(InputsError, match="`tokenizer` must be a Hugging Face tokenizer"):
        export_neuronpedia(
            tmp_path / "atlas", tmp_path / "np", model=tiny_gpt2, tokenizer=tokenizer
        )
    assert not (tmp_path / "np").exists()


def test_a_sparsify_hookpoint_of_the_base_model_names_the_capture_to_make(tmp_path, run_cli):
    """sparsify trains on transformers' AutoModel, so its hookpoint 'layers.1' is the
    store's 'model.layers.1' when the store was captured with the model's head: the
    SAE was refused with "Was the SAE trained on another store?"."""
    cli, one_line = run_cli
    np.save(tmp_path / "acts.npy", np.random.default_rng(0).normal(size=(40, 10)).astype("f4"))
    layers = [{"name": "model.layers.1", "start": 0, "stop": 10}]
    (tmp_path / "acts.layers.json").write_text(json.dumps(layers))
    sae = FIXTURES / "sparsify" / "run" / "layers.1"
    r = cli("evaluate", "--sae", sae, "--acts", tmp_path / "acts.npy")
    one_line(r, "The store's 'model.layers.1' ends with 'layers.1'", "--model-class base")


def test_saelens_metadata_takes_only_facts_of_their_kind():
    """A store's provenance (edited by hand, or a caller's `provenance=`) of
    `prepend_bos: "false"` was exported to SAELens as `prepend_bos: true`, and a `model`
    that is a list as its repr, "[1, 2]" (so was the Neuronpedia export's model_id)."""
    from saeatlas.sae.saelens import saelens_metadata
    from saeatlas.store.describe import model_name

    prov = {"prepend_bos": "false", "model_name": {"a": 1}, "model": [1, 2]}
    assert saelens_metadata(prov, "h") == {"hook_name": "h"}
    assert model_name(prov) is None
    assert model_name({"model_name": 5, "model": "GPT2Model"}) == "GPT2Model"
    assert saelens_metadata({"prepend_bos": False}, None) == {"prepend_bos": False}
