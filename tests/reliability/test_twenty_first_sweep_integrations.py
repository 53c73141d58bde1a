"""The twenty-first hostile sweep's cases in the integrations (sparsify checkpoints,
TransformerLens and nnsight models, the Neuronpedia export) and in the labels a Python
caller gives a capture: each was refused wrongly, ended in a traceback, or wrote
something other than it said before its fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from saeatlas.capture import capture_activations
from saeatlas.errors import InputsError

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
    "src, out", [(".", "."), ("layers.1", "layers.1"), (".", "layers.1"), ("layers.1", "layers.1/x")]
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


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU())


@pytest.mark.parametrize(
    "labels, needle",
    [
        ([{"a": i % 2} for i in range(8)], "struct<a: int64>"),  # analyze: TypeError
        ((i for i in range(8)), "got generator"),  # was "Labels have shape []"
        ({"a": 1}, "got dict"),
        ("abcdefgh", "got str 'abcdefgh'"),
    ],
)
def test_capture_refuses_labels_that_are_no_labels(tmp_path, labels, needle):
    """Dict labels were stored (as a struct column), and the analysis of the store ended
    in "unhashable type: 'dict'"; a generator, a dict or a text were told "Labels have
    shape [] for 8 input samples"."""
    with pytest.raises(InputsError, match="abels") as e:
        capture_activations(_net(), torch.randn(8, 4), ["1"], tmp_path / "s", labels=labels, **QUIET)
    assert needle in str(e.value)
    assert not (tmp_path / "s").exists()


def _pairs(*ys):
    x = torch.randn(4 * len(ys), 4, generator=torch.Generator().manual_seed(0))
    return [(x[4 * i : 4 * i + 4], y) for i, y in enumerate(ys)]


@pytest.mark.parametrize(
    "ys, needle",
    [
        ((torch.arange(4), ["a", "b", "c", "d"]), "are strings (string), but those of the "),
        ((["a", "b", "c", "d"], torch.arange(4)), "are numbers (int64)"),
        ((["a", "b", "c", "d"], torch.ones(4, dtype=torch.bool)), "true/false values"),
        (([{"a": 1}] * 4, [{"a": 2}] * 4), "struct<a: int64>"),
        ((torch.arange(4), np.full(4, 2**63 + 5, np.uint64)), "beyond int64"),
    ],
)
def test_labels_of_batches_are_of_one_kind(tmp_path, ys, needle):
    """(x, y) batches whose y changed kind ended in pyarrow's ArrowInvalid ("Failed to
    parse string: 'd' as a scalar of type int64") once the shards' rows were joined,
    or, in one shard, stored every label as text ('0', 'a')."""
    from saeatlas.capture import CaptureConfig

    with pytest.raises(InputsError) as e:
        capture_activations(
            _net(), _pairs(*ys), ["1"], tmp_path / "s", CaptureConfig(shard_rows=4), **QUIET
        )
    assert needle in str(e.value)


@pytest.mark.parametrize(
    "ys, want",
    [
        (([None] * 4, [1, 2, 3, 4]), [None] * 4 + [1, 2, 3, 4]),  # ArrowNotImplementedError
        ((torch.arange(4), torch.full((4,), 0.5)), [0, 1, 2, 3] + [0.5] * 4),  # "truncated"
        ((np.arange(4, dtype=np.uint8), np.arange(300, 304)), [0, 1, 2, 3, 300, 301, 302, 303]),
    ],
)
def test_labels_of_one_kind_join_across_shards(tmp_path, ys, want):
    """Labels of one kind in other types (None first, then numbers; integers, then floats;
    uint8, then int64) were joined under the first shard's type: a traceback, or values
    cast to it."""
    from saeatlas.capture import CaptureConfig

    store = capture_activations(
        _net(), _pairs(*ys), ["1"], tmp_path / "s", CaptureConfig(shard_rows=4), **QUIET
    )
    assert store.rows(["label"]).column("label").to_pylist() == want
