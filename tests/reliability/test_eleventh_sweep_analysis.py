"""The eleventh hostile sweep's cases in analysis, atlas files, report, interop and
export: each failed (a wrong result or a traceback) before its fix."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

from saeatlas.errors import ConfigError
from saeatlas.sae import SparseAutoencoder


def test_a_sweep_member_trained_on_other_rows_is_refused(tmp_path, outputs):
    """The report hid such a sweep, but `analyze --sweep` compared its modules with the
    atlas's without a word."""
    from saeatlas.structure import AtlasConfig, analyze

    sae = SparseAutoencoder.load(outputs.sae)
    mine = sae.cfg.metadata["rows_digest"]
    meta = {**sae.cfg.metadata, "rows_digest": "0123456789abcdef"}
    SparseAutoencoder(replace(sae.cfg, metadata=meta)).save(tmp_path / "k-2")
    with pytest.raises(ConfigError, match=rf"member 2 .*rows digest 0123456789abcdef.*{mine}"):
        analyze(outputs.sae, outputs.store, AtlasConfig(), sweep=("k", [(2.0, tmp_path / "k-2")]))


def _named_net():
    import torch

    net = torch.nn.Sequential()
    for name in ("re:x", "x", "a\ud800b", "y"):
        net.add_module(name, torch.nn.Linear(4, 4))
    return net


def test_a_module_named_like_a_regex_is_selected_by_its_exact_name():
    """'re:x' was read as the regex 'x' only: a module of that name could not be picked."""
    from saeatlas.capture.hookpoints import resolve_hookpoints
    from saeatlas.capture.patterns import matches

    net = _named_net()
    assert [h.name for h in resolve_hookpoints(net, ["re:x"])] == ["re:x"]
    assert [h.name for h in resolve_hookpoints(net, ["re:[xy]"])] == ["x", "y"]
    assert matches("re:x", "re:x") and matches("x", "re:x")


def test_a_module_name_that_is_no_text_is_one_clear_error(tmp_path):
    """A lone surrogate in a module's name ended the capture in a UnicodeEncodeError
    traceback, even when that module was not recorded."""
    import torch

    from saeatlas.capture import capture_activations
    from saeatlas.errors import HookpointError

    net, x = _named_net(), torch.randn(8, 4)
    store = capture_activations(net, x, ["y"], tmp_path / "ok", progress=False)
    assert [l.name for l in store.layers] == ["y"]
    with pytest.raises(HookpointError, match=r"'a\\ud800b'.*half of a surrogate pair.*rename"):
        capture_activations(net, x, ["a*"], tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_a_seed_sae_trained_on_other_rows_is_refused(tmp_path, guarded, run_cli):
    """A --seed-sae of another store with the same layers joined the ensemble (and was
    the dictionary null's source) without a word: only `<sae>-seedN` found by analyze
    itself was compared by its rows."""
    cli, one_line = run_cli
    sae = SparseAutoencoder.load(guarded.sae)
    meta = {**sae.cfg.metadata, "rows_digest": "fedcba9876543210"}
    SparseAutoencoder(replace(sae.cfg, metadata=meta)).save(tmp_path / "seed")
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", tmp_path / "a"]
    mine = sae.cfg.metadata["rows_digest"]
    line = one_line(cli(*args, "--seeds", "2", "--seed-sae", tmp_path / "seed"), "other rows")
    assert "fedcba9876543210" in line and mine in line
    assert not (tmp_path / "a").exists()


def test_an_ablation_of_another_model_than_the_captured_one_is_refused(
    tmp_path, guarded, run_cli, forbid
):
    """A model of the same layers and widths but other weights (the same code trained
    or seeded otherwise) was ablated with this store's means and its loss reported as
    the atlas's modules' effect, without a word."""
    import saeatlas.structure

    forbid(saeatlas.structure, "analyze")
    cli, one_line = run_cli
    (tmp_path / "m.py").write_text(
        "import torch\nfrom torch import nn\n\ndef build():\n    torch.manual_seed(1)\n"
        "    return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU())\n"
    )
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", tmp_path / "a"]
    np.save(tmp_path / "y.npy", np.arange(300) % 8)
    args += ["--model", f"{tmp_path / 'm.py'}:build", "--inputs", guarded.inputs]
    args += ["--labels", tmp_path / "y.npy"]
    one_line(cli(*args), "not the one the store", "was captured from", "--model")
    assert not (tmp_path / "a").exists()


def test_a_seed_sae_through_a_loop_of_links_is_one_line(tmp_path, guarded, run_cli):
    """It ended in a RuntimeError traceback ('Symlink loop from ...')."""
    cli, one_line = run_cli
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    args = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", tmp_path / "o"]
    one_line(cli(*args, "--seeds", "2", "--seed-sae", tmp_path / "a"), "loop of symbolic links")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "name,column,value,needle",
    [
        # a TypeError from the verdict's count of modules that hurt the loss
        ("modules", "ablation_p", "x", "`ablation_p` of modules.parquet"),
        ("modules", "ablation_p", 3.0, "such as 3.0"),
        # each a traceback half-way through the report (its figures and cards)
        ("modules", "ablation_effect", None, "`ablation_effect` of modules.parquet"),
        ("modules", "ablation_z", "x", "`ablation_z` of modules.parquet"),
        ("modules", "z_permutation", "x", "`z_permutation` of modules.parquet"),
        ("modules", "p_permutation", 2.0, "`p_permutation` of modules.parquet"),
        ("ablation", "effect", "x", "`effect` of ablation.parquet"),
    ],
)
def test_hand_edited_ablation_and_null_columns_are_refused(tmp_path, name, column, value, needle):
    import pandas as pd

    from saeatlas.structure.atlas import Atlas
    from saeatlas.structure.atlas_format import AtlasFileError
    from saeatlas.structure.inference.outcome import decide

    atlas = Atlas(
        units=pd.DataFrame(dict(unit=[0, 1], layer=["a", "a"], index=[0, 1], module=[0, -1])),
        features=pd.DataFrame(dict(feature=[0], module=[0], top_units=[[0, 1]])),
        modules=pd.DataFrame(
            dict(module=[0], n_units=[1], n_features=[1], significant=[True], z=[3.0], p=[0.01])
        ),
        summary={"layers": ["a"]},
    )
    atlas.modules = atlas.modules.assign(
        ablation_effect=[0.5], ablation_z=[2.0], ablation_p=[0.01], ablation_random_mean=[0.1]
    )
    atlas.modules["z_permutation"], atlas.modules["p_permutation"] = [3.0], [0.01]
    atlas.ablation = pd.DataFrame(
        dict(module=[0], label=["0"], effect=[0.5], random_effect=[0.1], specialisation=[1.0])
    )
    decide(atlas)
    path = atlas.save(tmp_path / "atlas")
    Atlas.load(path)  # as written, it agrees with itself
    table = getattr(atlas, name).copy()
    table[column] = pd.Series([value] * len(table), dtype=object if value is None else None)
    table.to_parquet(path / f"{name}.parquet")  # edited by hand (Atlas.save refuses it)
    with pytest.raises(AtlasFileError, match=re.escape(needle)):
        Atlas.load(path)


def test_layers_lists_a_module_name_that_is_no_text_escaped(tmp_path, run_cli):
    """`saeatlas layers` ended in a UnicodeEncodeError traceback writing the table."""
    cli, _ = run_cli
    (tmp_path / "m.py").write_text(
        "import torch\n\ndef build():\n    net = torch.nn.Sequential()\n"
        "    net.add_module('a\\ud800b', torch.nn.Linear(4, 4))\n    return net\n"
    )
    result = cli("layers", f"{tmp_path / 'm.py'}:build")
    assert result.exit_code == 0, result.output
    assert "a\\ud800b" in result.output
