"""The twenty-second hostile sweep's cases in the integrations and runs past one process
(the Neuronpedia export, sparsify checkpoints, the SAELens export, TransformerLens and
nnsight models, `saeatlas run` configs, `torchrun` ranks): each was refused wrongly,
ended in a traceback or a misleading message, or wrote something other than it said
before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def l2norm(one_layer_atlas):
    """An atlas of an SAE on one layer named `encoder.l2norm` (digits, but no block index)."""
    return one_layer_atlas("encoder.l2norm")


def test_neuronpedia_layer_is_not_the_digits_of_a_module_name(l2norm, run_cli):
    """A layer named `encoder.l2norm` was filed under Neuronpedia layer 2 (the first
    digits in its name); it has no block index, so --layer is asked for."""
    from saeatlas.export import read_batches

    cli, one_line = run_cli
    out = l2norm / "np"
    one_line(cli("export-neuronpedia", l2norm / "atlas", "--out", out),
             "'encoder.l2norm'", "no block index", "--layer")  # fmt: skip
    assert not out.exists()
    r = cli("export-neuronpedia", l2norm / "atlas", "--out", out, "--layer", "5")
    assert r.exit_code == 0, r.output
    assert {b["layer"] for b in read_batches(out)} == {5}


@pytest.mark.parametrize(
    "name, want",
    [
        ("blocks.3.hook_resid_post", 3),
        ("blocks.0.ln2", 0),
        ("transformer.h.11.mlp:input", 11),
        ("model.layers.12.mlp", 12),
        ("1", 1),
        ("encoder.l2norm", "no block index"),
        ("fc2", "no block index"),
        ("ln2.blocks.0", "a number in 'ln2'"),
        ("layer4.1.conv2", "a number in 'layer4'"),
        ("layers.3.experts.7.w1", "several block indices (3, 7)"),
        ("x.1234567890", "past 999,999,999"),
    ],
)
def test_neuronpedia_layer_is_the_block_index(name, want):
    """The layer number was the first digits anywhere in the name: `ln2.blocks.0` was 2,
    `layer4.1.conv2` 4 and `layers.3.experts.7` 3 without a word."""
    from saeatlas.errors import ConfigError
    from saeatlas.export.neuronpedia import _layer_number

    if isinstance(want, int):
        assert _layer_number(name, None) == want
    else:
        with pytest.raises(ConfigError, match="--layer") as e:
            _layer_number(name, None)
        assert want in str(e.value)


def _ranks_out_of_step(rank, world, port, root, store, model, inputs):
    """Calls that both ranks make, rank 1 with one flag other than rank 0's (the last
    one another command altogether); each call's outcome is written to r<rank>.json."""
    from spawned_ranks import join_gloo

    join_gloo(rank, world, port)
    from dataclasses import replace

    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.pipeline import RunConfig, run_pipeline
    from saeatlas.pipeline.check import check_run
    from saeatlas.train import TrainConfig, train_ensemble

    run = RunConfig(model=model, inputs=inputs, layers=("1", "3"))
    calls = {
        # every rank's dry run went into its own temporary folder: "Rank 1 finds no
        # partial directory '/tmp/saeatlas-check-.../.store.partial'"
        "check": lambda: check_run(run),
        # called valid (the dry run reads one batch); the run's capture refused it
        "check generator": lambda: check_run(replace(run, inputs=f"{root}/gen.py:gen")),
        # "The ranks of this training were given different --resume"
        "seeds": lambda: train_ensemble(
            store, TrainConfig(d_sae=8, k=2), root / "sae", 1 + rank, progress=False
        ),
        # rank 0 alone met the others to refuse changed outputs: the ranks met at other
        # steps until the --timeout ran out
        "overwrite": lambda: run_pipeline(
            run, root / "run", progress=False, timeout_s=20, overwrite=bool(rank)
        ),
        # a `capture` rank beside a `run` rank: "'NoneType' object is not iterable"
        "another command": lambda: capture_activations(
            _model(model), np.load(inputs), ["1"], root / "store",
            CaptureConfig(timeout_s=10), progress=False,
        ) if rank == 0 else run_pipeline(run, root / "run", progress=False, timeout_s=10),
    }  # fmt: skip
    results = {}
    for name, call in calls.items():
        try:
            got = call()
            results[name] = got if isinstance(got, str) else "no error"
        except Exception as e:
            results[name] = f"{type(e).__name__}: {e}"
    (root / f"r{rank}.json").write_text(json.dumps(results))
    torch.distributed.destroy_process_group()


def _model(spec):
    from saeatlas.capture import load_model

    return load_model(spec).model


def test_ranks_out_of_step_are_told_so(tmp_path, outputs, spawn_ranks):
    """`torchrun ... saeatlas run --check` refused itself; ranks given another
    `train --seeds` were told of "different --resume", ranks given another `run
    --overwrite` waited out the --timeout, and a rank whose peer ran another command
    ended in a TypeError traceback."""
    (tmp_path / "gen.py").write_text(
        f"import numpy as np\ndef gen():\n    x = np.load({str(outputs.inputs)!r})\n"
        "    return (x[i : i + 32] for i in range(0, len(x), 32))\n"
    )
    args = (tmp_path, outputs.store, outputs.model, str(outputs.inputs))
    spawn_ranks(_ranks_out_of_step, args, 90)
    results = [json.loads((tmp_path / f"r{r}.json").read_text()) for r in range(2)]
    for rank in range(2):
        assert results[rank]["check"].startswith("dry run: layers ['1', '3']"), results
        assert results[rank]["check generator"].startswith(
            "ConfigError: Inputs of type generator have no length"
        ), results
        assert results[rank]["seeds"].startswith(
            "ConfigError: The ranks of this training were given different --seeds"
        ), results
        assert results[rank]["overwrite"].startswith(
            "ConfigError: The ranks of this run were given different --overwrite"
        ), results
    assert results[0]["another command"].startswith(
        "ConfigError: The ranks of this capture did not reach it together: ranks [1]"
    ), results
    assert not list(tmp_path.glob("run/*")), "nothing of the run is written"


def _run_config(tmp_path, outputs, line, inputs=None):
    """A run config of the protected model and inputs (or ``inputs``), layer '1', and
    ``line``; its path."""
    config = tmp_path / "run.yaml"
    inputs = inputs or outputs.inputs
    config.write_text(f"model: {outputs.model}\ninputs: {inputs}\nlayers: ['1']\n{line}\n")
    return config


def test_a_run_config_reads_a_home_folder_as_a_shell_does(outputs, tmp_path, monkeypatch):
    """`inputs: ~/x.npy` in a run config was "Inputs file '~/x.npy' does not exist" (it
    did), and `out: ~/runs/a` made a folder named '~' beside the config."""
    from saeatlas.pipeline import load_run_config

    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    np.save(home / "data" / "x.npy", np.load(outputs.inputs))
    monkeypatch.setenv("HOME", str(home))
    cfg = load_run_config(_run_config(tmp_path, outputs, "out: ~/runs/a", "~/data/x.npy"))
    assert (cfg.inputs, cfg.out) == (str(home / "data" / "x.npy"), str(home / "runs" / "a"))


@pytest.mark.parametrize(
    "line, needle",
    [
        ("model_args: {scale: .nan}", "`model_args.scale` holds nan"),
        ("inputs_args: {sizes: [1, -.inf]}", "`inputs_args.sizes` holds -inf"),
    ],
)
def test_a_run_config_refuses_arguments_that_json_cannot_hold(
    outputs, tmp_path, run_cli, line, needle
):
    """`run --check` called the config valid; the run wrote config.yaml and run.json and
    then stopped at its capture: "`provenance` must be a dict of JSON values", a setting
    no config has."""
    cli, one_line = run_cli
    config = _run_config(tmp_path, outputs, line)
    one_line(cli("run", config, "--check"), needle, "finite numbers")
    one_line(cli("run", config, "--out", tmp_path / "run"), needle)
    assert not (tmp_path / "run").exists()


FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.mark.parametrize(
    "command, src, needles",
    [
        # "it has no sae_weights.safetensors", with no word of what it is
        ("import-saelens", "sparsify/run/layers.1", ["a sparsify SAE", "import-sparsify"]),
        ("import-saelens", "sparsify/run", ["a sparsify run", "import-sparsify"]),
        # "holds no sparsify SAE", with no word of what it is
        ("import-sparsify", "saelens/topk", ["saeatlas or SAELens", "import-saelens"]),
        # "'saelens/jumprelu' in the sparsify run 'saelens' has no sae.safetensors: that
        # hookpoint's SAE is incomplete. Copy it again from the checkpoint"
        ("import-sparsify", "saelens", ["holds no sparsify SAE", "folder of 5 SAE directories"]),
    ],
)
def test_an_sae_of_the_other_format_is_named_with_its_import(
    tmp_path, run_cli, command, src, needles
):
    cli, one_line = run_cli
    line = one_line(cli(command, FIXTURES / src, "--out", tmp_path / "out"), *needles)
    assert "incomplete" not in line
    assert not (tmp_path / "out").exists()


def test_import_sparsify_passes_over_an_sae_of_another_format_in_the_run(tmp_path, run_cli):
    """An SAE of saeatlas's format kept in a sparsify run folder (an earlier import into
    RUN/imported) was taken for a hookpoint copied half-way, and the run refused."""
    import shutil

    cli, _ = run_cli
    run = shutil.copytree(FIXTURES / "sparsify" / "run", tmp_path / "run")
    shutil.copytree(FIXTURES / "saelens" / "topk", run / "imported")
    r = cli("import-sparsify", run, "--out", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["layers.0.mlp", "layers.1"]


def test_a_run_config_shows_a_swept_value_as_given(outputs, tmp_path, run_cli):
    """`sweep.values: [8, 16.0000001]` was refused as "`sweep.values` of k must be whole
    numbers, got [8, 16]": the value shown rounded to the whole number it is not."""
    cli, one_line = run_cli
    config = _run_config(tmp_path, outputs, "sweep: {values: [8, 16.0000001]}")
    one_line(cli("run", config, "--check"), "must be whole numbers, got [8, 16.0000001].")


def test_the_next_token_loss_refuses_hidden_states(minilm, tmp_path):
    """The next-token loss of a model without its language-modelling head (MiniLM's
    `AutoModel`, whose first output is its hidden states [batch, seq, 384]) ended
    `run --check`, the ablation and `evaluate --model` in torch's traceback "IndexError:
    Target 1996 is out of bounds"."""
    from saeatlas.capture.inputs import InputBatch
    from saeatlas.errors import ShapeError
    from saeatlas.losses import per_sample_next_token

    model, tokenizer = minilm
    texts = ["the cat sat on the mat", "modules fire together"]
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    batch = InputBatch((), dict(enc), 2, enc["attention_mask"])
    with torch.no_grad():
        output = model(**enc)
    with pytest.raises(ShapeError, match="gives hidden states .* no `logits`"):
        per_sample_next_token(output, batch)


def test_a_joint_batchtopk_sae_splits_by_layer_as_a_relu_one_does(tmp_path, run_cli):
    """A joint batchtopk SAE whose latents each stay in one layer was refused by
    `export-saelens` as one that "picks its active latents across all layers at once":
    at inference it fires each latent by its one threshold, and splits exactly."""
    from saeatlas.sae import SAEConfig, SparseAutoencoder
    from saeatlas.sae.saelens import load_saelens
    from saeatlas.store import LayerSpec

    layers = (LayerSpec("a", 0, 4, (None, 4), "sample"), LayerSpec("b", 4, 10, (None, 6), "sample"))
    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig("batchtopk", d_in=10, d_sae=8, k=2, layers=layers))
    with torch.no_grad():  # latents 0-3 read and write layer a, latents 4-7 layer b
        sae.W_enc[:4, 4:] = sae.W_enc[4:, :4] = sae.W_dec[:4, 4:] = sae.W_dec[4:, :4] = 0
        sae.threshold.fill_(0.05)
    sae.eval().save(tmp_path / "sae")
    cli, _ = run_cli
    r = cli("export-saelens", tmp_path / "sae", "--out", tmp_path / "x")
    assert r.exit_code == 0, r.output
    x = torch.randn(50, 10)
    with torch.no_grad():
        want = sae.encode(x).acts
        for name, cols, latents in (
            ("a", slice(0, 4), slice(0, 4)),
            ("b", slice(4, 10), slice(4, 8)),
        ):
            got = load_saelens(tmp_path / "x" / name).encode(x[:, cols]).acts
            torch.testing.assert_close(got, want[:, latents])
    assert bool((want != 0).any()) and bool((want == 0).any())
