"""Options that would do nothing, and `--out -`, are refused with one line (ninth sweep)."""

from __future__ import annotations

import os

import numpy as np
import pytest

MODEL = "import torch\n\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(3, 4))\n"


@pytest.fixture
def flat(tmp_path):
    """A model whose only layer gives [batch, 4], and 20 inputs for it."""
    (tmp_path / "m.py").write_text(MODEL)
    np.save(tmp_path / "x.npy", np.ones((40, 3), dtype=np.float32))
    return ["--model", f"{tmp_path / 'm.py'}:build", "--inputs", tmp_path / "x.npy"]


@pytest.mark.parametrize(
    "option,needles",
    [
        (["--layout", "image"], ["--layout (`layout`) 'image' picks nothing", "no recorded layer"]),
        (["--layout", "heads"], ["--layout (`layout`) 'heads' picks nothing", "4-D"]),
        (["--spatial", "mean"], ["--spatial (`spatial`) 'mean' picks nothing", "conv map"]),
    ],
)
def test_a_layout_or_pooling_that_applies_to_no_layer_is_refused(
    tmp_path, run_cli, flat, option, needles
):
    """`--layout image` with no 4-D layer and `--spatial mean` with no conv map were
    accepted and did nothing: the user believed the maps pooled, or the layout set."""
    cli, one_line = run_cli
    args = ["capture", *flat, "--layers", "0", *option, "--out", tmp_path / "s", "-q"]
    one_line(cli(*args), *needles)
    assert sorted(os.listdir(tmp_path)) == ["m.py", "x.npy"]


def test_pooling_and_a_layout_that_apply_are_kept(tmp_path):
    """The same options on a layer that has conv maps still work (and pool)."""
    import torch

    from saeatlas.capture import CaptureConfig, capture_activations

    class Maps(torch.nn.Module):
        def forward(self, x):
            return x.reshape(len(x), 2, 2, 2) * 1.0

    model = torch.nn.Sequential(torch.nn.Linear(3, 8), Maps())
    x = torch.randn(6, 3)
    cfg = CaptureConfig(layout="image", spatial="mean")
    store = capture_activations(model, x, ["0", "1"], tmp_path / "s", cfg, progress=False)
    assert store.n_rows == 6 and store.n_units == 8 + 2


@pytest.mark.parametrize("verb", ["capture", "train", "run"])
def test_out_dash_is_refused_not_made_a_folder_named_dash(tmp_path, run_cli, flat, verb):
    """`--out -` (standard output, by the usual convention) made a folder named '-'."""
    cli, one_line = run_cli
    args = {
        "capture": ["capture", *flat, "--layers", "0"],
        "train": ["train", "--acts", tmp_path / "x.npy", "--d-sae", "8", "--k", "2"],
        "run": ["run", tmp_path / "run.yaml"],
    }[verb]
    (tmp_path / "run.yaml").write_text(
        f"model: {tmp_path / 'm.py'}:build\ninputs: {tmp_path / 'x.npy'}\nlayers: ['0']\n"
    )
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        one_line(cli(*args, "--out", "-", "-q"), "'-'", "not standard output", "./-")
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "-").exists() and not (tmp_path / ".-.lock").exists()


def test_sweep_refuses_heldout_rows_which_it_does_not_read(tmp_path, run_cli):
    """Every member holds out --heldout-fraction of the store: --heldout-rows 50 was
    dropped without a word (the sweep held out 200 of 2,000 rows)."""
    cli, one_line = run_cli
    np.save(tmp_path / "a.npy", np.random.default_rng(0).normal(size=(200, 4)).astype("f4"))
    args = ["sweep", "--acts", tmp_path / "a.npy", "--out", tmp_path / "sw", "--values", "2",
            "4", "--heldout-rows", "50", "-q"]  # fmt: skip
    one_line(cli(*args), "--heldout-rows is not read by sweep", "--heldout-fraction")
    assert sorted(os.listdir(tmp_path)) == ["a.npy"]
