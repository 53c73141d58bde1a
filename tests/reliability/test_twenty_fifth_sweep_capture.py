"""Twenty-fifth hostile sweep, capture and the activation store: labels of `(x, y)`
batches, the store's own files edited by hand, and the store writer used from Python."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch


def _capture(out, inputs, **kwargs):
    """Layers 0 and 2 of a seeded two-layer network, in batches of 8."""
    from saeatlas.capture import CaptureConfig, capture_activations

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))
    cfg = CaptureConfig(8)
    return capture_activations(net, inputs, ["0", "2"], out, cfg, progress=False, **kwargs)


@pytest.mark.parametrize("given", ["pairs", "loader"])
def test_labels_given_as_a_column_of_one_per_sample_are_stored(tmp_path, given):
    """A `y` of shape [batch, 1] (`y[:, None]`, as a loss takes its targets) is one label
    per sample, but was taken for token-level targets: the store had no `label` column,
    without a word."""
    from torch.utils.data import DataLoader, TensorDataset

    x, y = torch.randn(24, 4), (torch.arange(24) % 3)[:, None]
    if given == "pairs":
        inputs = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 24, 8)]
    else:
        inputs = DataLoader(TensorDataset(x, y), batch_size=8)
    store = _capture(tmp_path / "s", inputs)
    assert store.rows(["label"]).column("label").to_pylist() == (np.arange(24) % 3).tolist()


def _copy(guarded, tmp_path, edit):
    store = tmp_path / "store"
    shutil.copytree(guarded.store, store)
    manifest = json.loads((store / "manifest.json").read_text())
    edit(manifest)
    (store / "manifest.json").write_text(json.dumps(manifest))
    return store


def _swap_names(m):
    m["layers"][0]["name"], m["layers"][1]["name"] = m["layers"][1]["name"], m["layers"][0]["name"]


def _rename(m):
    m["layers"][1]["name"] = "other"


@pytest.mark.parametrize("edit", [_swap_names, _rename])
def test_layer_names_edited_in_the_manifest_are_refused(tmp_path, guarded, run_cli, edit):
    """Two layers' names swapped by hand in manifest.json (or one renamed) passed `info
    --verify`: every later stage read each layer's columns as the other's, although the
    capture's job in the same manifest records the layers in column order."""
    from saeatlas.errors import StoreError
    from saeatlas.store import ActivationStore

    cli, assert_one_line_error = run_cli
    store = _copy(guarded, tmp_path, edit)
    assert_one_line_error(cli("info", "--verify", store), "`job.layers`", "in its layer map")
    with pytest.raises(StoreError, match="each layer's columns would be read as another's"):
        ActivationStore.open(store)


def test_the_store_writer_refuses_layers_its_job_names_otherwise(tmp_path):
    """A writer given a capture's job naming the layers `a, b` took `b, a` and wrote a
    store that every reader then refused."""
    from saeatlas.errors import ConfigError
    from saeatlas.store import LayerSpec, StoreWriter

    writer = StoreWriter(tmp_path / "s", job={"model": "m", "layers": ["a", "b"]})
    with pytest.raises(ConfigError, match="would record the layers \\['b', 'a'\\]"):
        writer.start([LayerSpec("b", 0, 2), LayerSpec("a", 2, 3)])
    writer.start([LayerSpec("a", 0, 2), LayerSpec("b", 2, 3)])
    writer.abort()


def _ranks_with_a_distributed_sampler(rank, world, port, root):
    """Both ranks capture one DataLoader that a DistributedSampler deals among them."""
    from spawned_ranks import join_gloo

    join_gloo(rank, world, port)
    from torch.utils.data import DataLoader, TensorDataset
    from torch.utils.data.distributed import DistributedSampler

    data = TensorDataset(torch.arange(160.0).reshape(40, 4) / 100, torch.arange(40))
    loader = DataLoader(data, batch_size=4, sampler=DistributedSampler(data, shuffle=False))
    try:
        store = _capture(root / "s", loader)
        result = f"{store.n_rows} rows"
    except Exception as e:
        result = f"{type(e).__name__}: {e}"
    (root / f"r{rank}.txt").write_text(result)
    torch.distributed.destroy_process_group()


def test_ranks_whose_inputs_differ_are_refused(tmp_path, spawn_ranks):
    """Each rank iterates every batch and takes its own share of them, so a DataLoader with
    a DistributedSampler (each rank dealt other samples) made a store of 20 of the 40
    samples, numbered as if they were the first 20, without a word."""
    spawn_ranks(_ranks_with_a_distributed_sampler, (tmp_path,), 120)
    results = [(tmp_path / f"r{r}.txt").read_text() for r in range(2)]
    line = "ConfigError: The ranks of this capture were given different first input batch"
    assert all(r.startswith(line) and "DistributedSampler" in r for r in results), results
    assert not [p for p in os.listdir(tmp_path) if "s" in p.split(".")], os.listdir(tmp_path)


@pytest.mark.parametrize("kind", ["array", "tensor", "batch"])
def test_the_fingerprint_of_the_inputs_copies_none_of_them(kind):
    """The fingerprint a resume compares was taken of a copy of every input value
    (`tobytes`): a capture needed twice the memory of its inputs before its first batch,
    and one of inputs over half the machine's memory was killed for it, without a word."""
    import tracemalloc

    from saeatlas.capture.job import batch_fingerprint, inputs_fingerprint

    x = np.zeros((1 << 20, 4), np.float32)  # 16 MiB
    given = torch.from_numpy(x) if kind != "array" else x
    tracemalloc.start()
    try:
        if kind == "batch":
            batch_fingerprint((given,), {"mask": x})
        else:
            inputs_fingerprint(given)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak


def test_verify_of_a_npy_says_what_it_checked(tmp_path, run_cli):
    """`info ACTS.npy --verify` said "All 1 shards match their sha256 and the manifest's
    per-unit mean and std": a .npy has neither, and nothing was matched."""
    cli, _ = run_cli
    np.save(tmp_path / "a.npy", np.ones((5, 3), np.float32))
    r = cli("info", tmp_path / "a.npy", "--verify")
    said = " ".join(r.output.split())  # the console wraps long lines
    assert r.exit_code == 0 and "was read and checked for NaN/Inf" in said, said
    assert "sha256 and the manifest" not in said


def test_the_working_folder_of_an_interrupted_capture_names_its_output(tmp_path, run_cli, guarded):
    """`info .a.partial` (the folder an interrupted capture of `a` left) advised
    `saeatlas capture ... --resume`, and `capture --out .a.partial --resume` was refused
    with "Choose another name": neither said that the output to give is `a`."""
    from saeatlas.store import LayerSpec, StoreWriter

    cli, assert_one_line_error = run_cli
    writer = StoreWriter(tmp_path / "w" / "a", shard_rows=4)
    writer.start([LayerSpec("x", 0, 3)])
    writer.add(torch.ones(8, 3), {"sample": np.arange(8)}, n_samples=8)
    writer.drain()  # two shards committed, as a kill leaves them
    shutil.copytree(tmp_path / "w" / ".a.partial", tmp_path / ".a.partial")
    writer.abort()
    work = tmp_path / ".a.partial"
    assert_one_line_error(
        cli("info", work), f"`saeatlas capture ... --out {tmp_path / 'a'} --resume`"
    )
    flags = ["--model", guarded.model, "--inputs", guarded.inputs, "--layers", "1", "--resume"]
    line = assert_one_line_error(cli("capture", *flags, "--out", work), "Choose another name")
    assert f"give '{tmp_path / 'a'}' with --resume" in line


def test_provenance_that_json_reads_back_otherwise_is_refused_first(tmp_path):
    """A `provenance` of the keys 1 and "1" (one key in JSON) went into the manifest as a
    key given twice: the capture ended, after its work, in "manifest.json is not valid
    JSON ... the store is corrupt", with that store in place and every reader refusing
    it; one nested past Python's stack ended in a RecursionError traceback."""
    from saeatlas.errors import ConfigError

    deep: dict = {}
    for _ in range(10_000):
        deep = {"a": deep}
    for given, needle in (({1: "a", "1": "b"}, "the key '1' is given twice"), (deep, "deeply")):
        with pytest.raises(ConfigError, match=needle):
            _capture(tmp_path / "s", torch.randn(8, 4), provenance=given)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("path", [5, None, "a\0b"])
def test_the_store_writer_and_readers_name_a_path_they_cannot_take(tmp_path, path):
    """`StoreWriter(5)` (or None) ended in pathlib's TypeError, and a path holding a NUL in
    Python's "embedded null byte" ValueError, in the writer, `ActivationStore.open` and
    `capture_activations` alike."""
    from saeatlas.errors import ConfigError
    from saeatlas.store import ActivationStore, StoreWriter

    with pytest.raises(ConfigError, match="`path` (must be a path|holds a NUL)"):
        StoreWriter(path)
    if isinstance(path, str):
        with pytest.raises(ConfigError, match="`store` holds a NUL character"):
            ActivationStore.open(path)
        with pytest.raises(ConfigError, match="`out` holds a NUL character"):
            _capture(path, torch.randn(8, 4))
