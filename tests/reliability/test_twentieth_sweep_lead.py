"""Twentieth sweep (the lead's): a default layout that every recorded layer's own
layout overrides."""

import os

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
