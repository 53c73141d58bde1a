"""Tenth hostile sweep, store half: rows.parquet checked once per opened store, ranks
of a torchrun capture compared by a digest of their .npy inputs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest


def test_rows_parquet_is_hashed_once_per_opened_store_and_again_when_it_changes(
    tmp_path, make_store, monkeypatch
):
    """`store.rows()` hashed the whole rows.parquet on every call (an analysis asks for
    its columns several times); an edit after the first check must still be found."""
    import saeatlas.store.integrity as integrity
    from saeatlas.errors import ChecksumError
    from saeatlas.store import ActivationStore

    path = make_store(tmp_path / "s")
    real, hashed = integrity.file_sha256, []
    monkeypatch.setattr(integrity, "file_sha256", lambda p: hashed.append(p) or real(p))
    store = ActivationStore.open(path)
    for columns in (None, ["sample"], ["position"]):
        assert store.rows(columns).num_rows == store.n_rows
    assert len(hashed) == 1
    rows = path / "rows.parquet"
    table = pq.read_table(rows)
    i = table.schema.get_field_index("sample")
    pq.write_table(table.set_column(i, "sample", pa.array(np.arange(table.num_rows)[::-1])), rows)
    with pytest.raises(ChecksumError, match="not the one its capture wrote"):
        store.rows(["sample"])


def test_ranks_compare_every_value_of_a_npy_store_not_only_its_first_rows(tmp_path):
    """The ranks of a torchrun analysis compared a .npy store by its size and first 64
    rows: a copy that differed after them on one node was merged into the atlas."""
    from saeatlas.sae import SAEConfig, SparseAutoencoder
    from saeatlas.store import ActivationStore
    from saeatlas.structure import AtlasConfig
    from saeatlas.structure.inputs import _facts

    x = np.random.default_rng(0).normal(size=(96, 6)).astype(np.float32)
    for name in "ab":  # one file name: a .npy's layer is named after it
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "acts.npy", x)
        x[80:] += 1.0  # rows past the fingerprint's first 64
    sae = SparseAutoencoder(SAEConfig(architecture="relu", d_in=6, d_sae=8))
    facts = [
        _facts(sae, ActivationStore.open(tmp_path / n / "acts.npy"), AtlasConfig(), {}, None)
        for n in "ab"
    ]
    assert facts[0]["store"] == facts[1]["store"]  # the first rows alone agree
    assert facts[0]["store's shards"] != facts[1]["store's shards"]


@pytest.mark.parametrize("flag", ["--inputs", "--acts", "--labels"])
def test_a_npz_archive_named_npy_is_one_line_not_a_traceback(tmp_path, outputs, run_cli, flag):
    """np.load opens a zip archive whatever its name: `train --acts x.npy` of an archive
    ended in AttributeError ('NpzFile' object has no attribute 'ndim'), and capture said
    'A batch of type str is not supported'."""
    cli, one_line = run_cli
    x = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
    archive = tmp_path / "x.npy"
    with open(archive, "wb") as f:
        np.savez(f, a=x, b=x)
    if flag == "--acts":
        args = ["train", "--acts", archive, "--out", tmp_path / "sae", "--seeds", "1"]
    else:
        inputs = archive if flag == "--inputs" else outputs.inputs
        args = ["capture", "--model", outputs.model, "--inputs", inputs, "--layers", "1"]
        args += ["--out", tmp_path / "s", "-q"] + (
            ["--labels", archive] if flag == "--labels" else []
        )
    one_line(cli(*args), str(archive), ".npz archive of 2 arrays ['a', 'b']")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


@pytest.mark.parametrize("scale", [10, 10**9])
def test_integer_outputs_are_stored_only_when_float32_holds_them_exactly(tmp_path, scale):
    """A layer that gives int64 values beyond 2**24 was stored rounded to float32 without
    a word (123456789 as 123456792)."""
    import torch

    from saeatlas.capture import capture_activations
    from saeatlas.errors import ShapeError

    class Ints(torch.nn.Module):
        def forward(self, x):
            return (x * scale).round().long() + 3

    model = torch.nn.Sequential(Ints(), torch.nn.Identity())
    x = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    if scale > 2**24:
        with pytest.raises(ShapeError, match=r"Layer '0' gives int64 values that float32 cannot"):
            capture_activations(model, x, ["0"], tmp_path / "s", progress=False)
        assert not (tmp_path / "s").exists()
    else:
        store = capture_activations(model, x, ["0"], tmp_path / "s", progress=False)
        assert torch.equal(store.read().long(), (x * scale).round().long() + 3)


def test_info_gives_a_layers_std_of_values_with_a_large_mean_as_numpy_does(tmp_path, run_cli):
    """`info` pooled a layer's std as E[x^2] - E[x]^2, which cancels for values near 3e7:
    2.958 for numpy's 2.936."""
    from saeatlas.store import ActivationStore

    cli, _ = run_cli
    rng = np.random.default_rng(0)
    x = (np.array([3e7, 3e7 + 4]) + rng.normal(0, 2, (300, 2))).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    values = x.astype(np.float64)
    store = ActivationStore.open(tmp_path / "x.npy")
    np.testing.assert_allclose(store.std, values.std(0), rtol=1e-9)
    r = cli("info", tmp_path / "x.npy")
    assert r.exit_code == 0, r.output
    assert f"{values.std():.4g}" in r.output, r.output


@pytest.mark.parametrize("batch_size", [1, 3])
def test_a_store_records_how_many_texts_were_cut_to_the_models_length(
    tmp_path, tiny_gpt2, make_char_tokenizer, run_cli, batch_size
):
    """Texts longer than the model takes were cut with a warning only: the store said
    `max_length` but not that any text had lost its later tokens."""
    from saeatlas.capture import CaptureConfig, capture_activations

    cli, _ = run_cli
    texts = ["abcdefghijklmnopqrstuvwxyz", "a dog", "abcdefghijklmnop", "abcdefghijklmnopq"]
    with pytest.warns(UserWarning, match="2 of 4 texts"):
        store = capture_activations(
            tiny_gpt2,
            texts,
            ["transformer.h.0"],
            tmp_path / "s",
            CaptureConfig(batch_size=batch_size),
            tokenizer=make_char_tokenizer(),
            progress=False,
        )
    assert store.manifest.provenance["n_texts_cut"] == 2
    assert store.manifest.provenance["max_length"] == 16
    r = cli("info", tmp_path / "s")
    assert "2 texts were cut to 16 tokens" in r.output, r.output


@pytest.mark.parametrize("store_dtype", ["float16", "float32"])
def test_units_a_half_precision_store_rounds_to_constants_are_named(tmp_path, store_dtype):
    """A unit of 1e4 +- 3 captured into a float16 store became 10000 in every row (std
    0, which training treats as constant) without a word."""
    import warnings

    import torch

    from saeatlas.capture import CaptureConfig, capture_activations

    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 3, generator=g)
    x[:, 1] += 1e4
    model = torch.nn.Sequential(torch.nn.Identity())
    cfg = CaptureConfig(batch_size=16, store_dtype=store_dtype)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        store = capture_activations(model, x, ["0"], tmp_path / "s", cfg, progress=False)
    said = [str(w.message) for w in seen if "constant in the" in str(w.message)]
    if store_dtype == "float16":
        assert store.std[1] == 0 and store.std[0] > 0
        assert len(said) == 1 and "unit 1 of layer '0'" in said[0], said
        assert "--store-dtype float32" in said[0]
    else:
        assert store.std[1] > 0 and not said
