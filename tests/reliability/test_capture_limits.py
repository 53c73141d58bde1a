"""Capture settings and inputs of the eighth hostile sweep: each is refused in one line
before anything is stored, or stored as it is."""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest
import torch


def test_shard_rows_too_large_for_memory_is_one_line(tmp_path, outputs, run_cli):
    """--shard-rows 10**12 allocated its shard buffer up front: "Out of memory" on a
    capture of 300 rows, naming no setting to change."""
    cli, one_line = run_cli
    args = ["capture", "--model", outputs.model, "--inputs", outputs.inputs, "--layers", "1",
            "3", "--out", tmp_path / "s", "--shard-rows", str(10**12), "-q"]  # fmt: skip
    one_line(cli(*args), "`shard_rows` (--shard-rows) 1,000,000,000,000", "Give at most")
    assert os.listdir(tmp_path) == []


ODD_MODELS = textwrap.dedent(
    """
    import sys
    import torch
    from torch import nn

    class Exits(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 4)

        def forward(self, x):
            self.lin(x)
            sys.exit(0)

    def exits():
        sys.exit(0)

    def exits_in_forward():
        return Exits()

    def on_meta():
        return nn.Sequential(nn.Linear(6, 4).to("meta"), nn.ReLU())
    """
)


@pytest.mark.parametrize(
    "factory,layer,needle",
    [
        ("exits", "0", "called sys.exit(0)"),
        ("exits_in_forward", "lin", "called sys.exit(0)"),
        ("on_meta", "0", "on the meta device"),
    ],
)
def test_a_model_that_exits_or_has_no_values_is_one_line(
    tmp_path, outputs, run_cli, factory, layer, needle
):
    """sys.exit(0) in a model's factory or forward (argparse's --help in a training
    script used as the model file) ended the capture with exit code 0 and no store; a
    model on the meta device ended in torch's NotImplementedError traceback."""
    cli, one_line = run_cli
    (tmp_path / "odd.py").write_text(ODD_MODELS)
    args = ["capture", "--model", f"{tmp_path / 'odd.py'}:{factory}", "--inputs",
            outputs.inputs, "--layers", layer, "--out", tmp_path / "s", "--no-early-stop",
            "-q"]  # fmt: skip
    one_line(cli(*args), needle)
    assert sorted(os.listdir(tmp_path)) == ["odd.py"]


def test_a_model_file_that_exits_when_imported_is_one_line(tmp_path, outputs, run_cli):
    cli, one_line = run_cli
    (tmp_path / "script.py").write_text("import sys\nsys.exit(0)\n")
    args = ["capture", "--model", f"{tmp_path / 'script.py'}:build", "--inputs", outputs.inputs,
            "--layers", "0", "--out", tmp_path / "s", "-q"]  # fmt: skip
    one_line(cli(*args), "Running", "called sys.exit(0)")


@pytest.mark.parametrize("rank,layout", [(2, "image"), (3, "heads"), (3, "pattern")])
def test_a_layout_named_for_a_layer_that_cannot_have_it_is_one_line(
    tmp_path, run_cli, rank, layout
):
    """--layout 1=image on a [batch, d] output was dropped without a word, and 1=heads on
    a 3-D one stored it as [batch, seq, d]: not the layout the user declared."""
    cli, one_line = run_cli
    (tmp_path / "m.py").write_text(
        "import torch\n\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(3, 4))\n"
    )
    shape = (20, 3) if rank == 2 else (20, 5, 3)
    np.save(tmp_path / "x.npy", np.ones(shape, dtype=np.float32))
    args = ["capture", "--model", f"{tmp_path / 'm.py'}:build", "--inputs", tmp_path / "x.npy",
            "--layers", "0", "--layout", f"0={layout}", "--out", tmp_path / "s", "-q"]  # fmt: skip
    one_line(cli(*args), f"names '{layout}'", f"its output is {rank}-D")
    assert not (tmp_path / "s").exists()


def test_token_ids_outside_the_vocabulary_are_named_before_the_pass(tmp_path, tiny_gpt2):
    """Ids past a Hugging Face model's vocabulary ended in 'index out of range in self'
    (on a GPU: CUDA's 'device-side assert triggered', naming nothing)."""
    from saeatlas.capture import capture_activations
    from saeatlas.errors import InputsError

    ids = torch.arange(48).reshape(6, 8) + 20  # up to 67, vocabulary 64
    with pytest.raises(InputsError, match=r"run from 20 to 67.*64 entries \(ids 0 to 63\)"):
        capture_activations(tiny_gpt2, ids, ["transformer.h.0"], tmp_path / "s", progress=False)
    assert os.listdir(tmp_path) == []
    store = capture_activations(
        tiny_gpt2, ids - 20, ["transformer.h.0"], tmp_path / "s", progress=False
    )
    assert store.n_rows == 48
