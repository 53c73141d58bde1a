"""Twentieth sweep (the lead's): a default layout that every recorded layer's own
layout overrides."""

import os
import shutil

import numpy as np
import pytest

CONV = """import torch


def build():
    return torch.nn.Sequential(
        torch.nn.Linear(3, 8), torch.nn.Unflatten(1, (2, 2, 2)), torch.nn.Conv2d(2, 2, 1)
    )
"""


@pytest.fixture
def conv(tmp_path):
    """A model whose layer '2', a Conv2d, gives [batch, C, H, W] maps."""
    (tmp_path / "m.py").write_text(CONV)
    np.save(tmp_path / "x.npy", np.ones((6, 3), dtype=np.float32))
    return ["--model", f"{tmp_path / 'm.py'}:build", "--inputs", tmp_path / "x.npy"]


def test_a_default_layout_that_a_layers_own_module_overrides_is_refused(tmp_path, run_cli, conv):
    """`--layout heads` with a Conv2d alone (or `image` with TransformerLens's hook_z
    alone) was accepted and did nothing: the maps were read as images, while the user
    had said the 4-D outputs are heads."""
    cli, one_line = run_cli
    args = ["capture", *conv, "--layers", "2", "--layout", "heads"]
    one_line(
        cli(*args, "--out", tmp_path / "s", "-q"),
        "--layout (`layout`) 'heads' picks nothing",
        "'2' image",
        "LAYER=LAYOUT",
    )
    assert sorted(os.listdir(tmp_path)) == ["m.py", "x.npy"]


@pytest.mark.parametrize(("layout", "kind"), [("image", "position"), ("2=heads", "head")])
def test_a_layout_that_agrees_or_names_the_layer_is_kept(tmp_path, run_cli, conv, layout, kind):
    """The default that says what is known, and the layer's own override, still work."""
    from saeatlas.store import ActivationStore

    cli, _ = run_cli
    out = tmp_path / "s"
    r = cli("capture", *conv, "--layers", "2", "--layout", layout, "--out", out, "-q")
    assert r.exit_code == 0, r.output
    assert ActivationStore.open(out).layers[0].layout == kind


def test_a_capture_recorded_before_the_model_details_resumes_and_ablates(tmp_path):
    """The model's details (number and flag attributes, plain tensors, called code) and
    the tokenizer joined the capture's job in December 2026: a store captured before,
    whose job lacks them, is still the same job on resume and the same model for the
    ablation (compared on what it recorded); one that recorded them is compared on them."""
    import json

    import torch

    from saeatlas.capture import capture_activations
    from saeatlas.errors import ConfigError
    from saeatlas.store import ActivationStore
    from saeatlas.store.progress import check_job
    from saeatlas.structure.causal.ablation_inputs import check_captured_model

    class Scaled(torch.nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.lin, self.scale = torch.nn.Linear(3, 4), torch.tensor(scale)

        def forward(self, x):
            return self.lin(x) * self.scale

    def model(scale):
        torch.manual_seed(0)
        return torch.nn.Sequential(Scaled(scale))

    x = torch.randn(10, 3)
    store = capture_activations(model(2.0), x, ["0"], tmp_path / "s", progress=False)
    job = store.manifest.provenance["job"]
    assert {"model", "model_details"} <= set(job)
    with pytest.raises(ConfigError, match="captured from"):  # the details tell them apart
        check_captured_model(model(3.0), store)
    before = {k: v for k, v in job.items() if k != "model_details"}
    check_job(before, {**job, "tokenizer": "0123"}, "an older capture")  # not recorded
    with pytest.raises(ConfigError, match="model_details differ"):
        check_job(job, {**job, "model_details": "0123"}, "this capture")
    manifest = tmp_path / "s" / "manifest.json"
    data = json.loads(manifest.read_text())
    del data["provenance"]["job"]["model_details"]
    manifest.write_text(json.dumps(data))
    older = ActivationStore.open(tmp_path / "s")
    check_captured_model(model(2.0), older)  # its fingerprint, as recorded, still compares
    check_captured_model(model(3.0), older)  # what it did not record cannot be compared
    with pytest.raises(ConfigError, match="captured from"):
        check_captured_model(torch.nn.Sequential(torch.nn.Linear(3, 4)), older)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["sweep", "--over", "k", "--values", "4", "8", "--extend", "-1"], "--extend (`extend`)"),
        (
            ["sweep", "--over", "k", "--values", "4", "8", "--heldout-fraction", "1.5"],
            "--heldout-fraction (`heldout_fraction`) must be in (0, 0.5)",
        ),
        (["demo", "--seed", "-1"], "--seed must be in [0, 4294967295]"),
    ],
)
def test_a_value_out_of_range_names_the_flag_given(tmp_path, run_cli, args, needle):
    """`sweep --extend -1` and `--heldout-fraction 1.5` named `extend` and
    `heldout_fraction`, and `demo --seed -1` named `seed` of [0, 9223372036854775807]."""
    cli, one_line = run_cli
    np.save(tmp_path / "x.npy", np.ones((40, 3), dtype=np.float32))
    acts = ["--acts", tmp_path / "x.npy"] if args[0] == "sweep" else []
    one_line(cli(*args, *acts, "--out", tmp_path / "o", "-q"), needle)
    assert not (tmp_path / "o").exists()


def test_an_import_of_a_sparsify_run_killed_half_way_completes_when_run_again(tmp_path, run_cli):
    """`import-sparsify RUN --out OUT` killed after its first hookpoint, run again as
    typed, was refused: "already holds an SAE ... pass --overwrite". The hookpoints it
    imported are kept and the others written; an SAE there that is no import of its
    hookpoint is still refused."""
    from pathlib import Path

    import torch

    from saeatlas.sae import SparseAutoencoder

    cli, one_line = run_cli
    run = Path(__file__).parents[1] / "fixtures" / "sparsify" / "run"
    out = tmp_path / "out"
    assert cli("import-sparsify", run, "--out", out).exit_code == 0
    first = (out / "layers.0.mlp" / "sae_weights.safetensors").stat().st_mtime_ns
    shutil.rmtree(out / "layers.1")  # as if killed before it
    r = cli("import-sparsify", run, "--out", out)
    assert r.exit_code == 0, r.output
    assert (out / "layers.1" / "cfg.json").is_file()
    assert (out / "layers.0.mlp" / "sae_weights.safetensors").stat().st_mtime_ns == first
    other = SparseAutoencoder.load(out / "layers.1")
    with torch.no_grad():
        other.W_dec.mul_(2)
    other.save(out / "layers.1", overwrite=True)
    one_line(cli("import-sparsify", run, "--out", out), "already holds an SAE", "--overwrite")
