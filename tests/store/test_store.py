import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from saeatlas.errors import ChecksumError, NonFiniteError, StoreError
from saeatlas.store import ActivationStore, LayerSpec, StoreWriter

LAYERS = [LayerSpec("a", 0, 4, (None, 4)), LayerSpec("b", 4, 10, (None, 6))]


def write_store(path, x, *, shard_rows=37, batch=25, dtype="float32", labels=None):
    w = StoreWriter(path, dtype=dtype, shard_rows=shard_rows)
    w.start(LAYERS)
    for s in range(0, len(x), batch):
        chunk = x[s : s + batch]
        meta = {"sample": np.arange(s, s + len(chunk)), "position": np.zeros(len(chunk), np.int64)}
        if labels is not None:
            meta["label"] = labels[s : s + len(chunk)]
        w.add(torch.from_numpy(chunk), meta, n_samples=len(chunk))
    w.close()
    return ActivationStore.open(path)


def test_round_trip_is_bit_exact(tmp_path, rows_array):
    store = write_store(tmp_path / "s", rows_array)
    assert store.n_rows == 203 and store.n_units == 10
    assert store.n_shards == 6  # 5 full shards of 37 rows and one of 18
    np.testing.assert_array_equal(store.read().numpy(), rows_array)
    np.testing.assert_array_equal(store.read(40, 80).numpy(), rows_array[40:80])
    rows = store.rows()
    assert rows.column("row").to_pylist() == list(range(203))
    assert rows.column("sample").to_pylist() == list(range(203))


def test_manifest_moments_match_numpy(tmp_path, rows_array):
    store = write_store(tmp_path / "s", rows_array)
    np.testing.assert_allclose(store.mean, rows_array.astype(np.float64).mean(0), rtol=1e-10)
    np.testing.assert_allclose(store.std, rows_array.astype(np.float64).std(0), rtol=1e-10)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert [s["rows"] for s in manifest["shards"]] == [37] * 5 + [18]
    assert all(len(s["sha256"]) == 64 for s in manifest["shards"])
    assert not (tmp_path / "s" / "progress.json").exists()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_round_trip(tmp_path, rows_array, dtype):
    store = write_store(tmp_path / "s", rows_array / 100, dtype=dtype)
    expected = torch.from_numpy(rows_array / 100).to(getattr(torch, dtype))
    assert torch.equal(store.read(dtype=None), expected)


def test_shuffled_epoch_visits_every_row_once(tmp_path, rows_array):
    store = write_store(tmp_path / "s", rows_array)
    seen = torch.cat(list(store.iter_batches(16, seed=3)))[:, 0].long()
    assert sorted(seen.tolist()) == list(range(203))
    assert seen.tolist() != list(range(203))  # it is shuffled
    again = torch.cat(list(store.iter_batches(16, seed=3)))[:, 0].long()
    assert torch.equal(seen, again)  # seeded
    other = torch.cat(list(store.iter_batches(16, seed=3, epoch=1)))[:, 0].long()
    assert not torch.equal(seen, other)
    # rows of different shards share batches (the pool mixes shards)
    first = next(iter(store.iter_batches(16, seed=3)))[:, 0].long() // 37
    assert len(set(first.tolist())) > 1


def test_batch_sizes_and_drop_last(tmp_path, rows_array):
    store = write_store(tmp_path / "s", rows_array)
    sizes = [len(b) for b in store.iter_batches(16)]
    assert sum(sizes) == 203 and all(s == 16 for s in sizes[:-1])
    sizes = [len(b) for b in store.iter_batches(16, drop_last=True)]
    assert sizes == [16] * (203 // 16)
    # a batch size beyond the rows is one batch of them all, without buffers of that size
    for reuse in (False, True):
        assert [len(b) for b in store.iter_batches(10**12, reuse_memory=reuse)] == [203]


def test_sequential_reading_keeps_storage_order(tmp_path, rows_array):
    store = write_store(tmp_path / "s", rows_array)
    batches = list(store.iter_batches(50, shuffle=False))
    assert [len(b) for b in batches] == [50, 50, 50, 50, 3]
    np.testing.assert_array_equal(torch.cat(batches).numpy(), rows_array)


def test_layer_column_selection(tmp_path, rows_array):
    store = write_store(tmp_path / "s", rows_array)
    b = torch.cat(list(store.iter_batches(64, shuffle=False, layers=["b"])))
    np.testing.assert_array_equal(b.numpy(), rows_array[:, 4:10])
    b = torch.cat(list(store.iter_batches(64, layers=["b", "a"])))
    assert b.shape == (203, 10)
    with pytest.raises(StoreError, match="no layer 'c'.*'a', 'b'"):
        store.read(layers=["c"])


def test_corrupted_shard_is_detected(tmp_path, rows_array):
    write_store(tmp_path / "s", rows_array)
    shard = tmp_path / "s" / "shard-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    store = ActivationStore.open(tmp_path / "s")
    with pytest.raises(ChecksumError, match="shard-00002.safetensors.*corrupt") as e:
        list(store.iter_batches(16))
    assert "--no-verify" not in str(e.value)  # no command has that flag
    # the damage is visible when verification is turned off
    unverified = ActivationStore.open(tmp_path / "s", verify=False).read().numpy()
    assert (unverified != rows_array).sum() == 1


def test_truncated_shard_and_bad_manifest(tmp_path, rows_array):
    write_store(tmp_path / "s", rows_array)
    shard = tmp_path / "s" / "shard-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(StoreError, match="shard-00000"):
        ActivationStore.open(tmp_path / "s", verify=False).read()
    (tmp_path / "s" / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        ActivationStore.open(tmp_path / "s")


def test_a_link_to_a_store_writes_the_store_it_names(tmp_path, rows_array):
    """Not a directory in place of the link, with a lock of its own beside it."""
    write_store(tmp_path / "s", rows_array)
    (tmp_path / "link").symlink_to("s")
    w = StoreWriter(tmp_path / "link", overwrite=True)
    assert w.work == tmp_path / ".s.partial" and (tmp_path / ".s.lock").exists()
    w.abort()
    w = StoreWriter(tmp_path / "link", overwrite=True, shard_rows=50)
    w.start(LAYERS)
    w.add(torch.from_numpy(rows_array[:10]), {"sample": np.arange(10)}, n_samples=10)
    w.close()
    assert (tmp_path / "link").is_symlink() and ActivationStore.open(tmp_path / "s").n_rows == 10


def test_existing_stores_are_never_clobbered(tmp_path, rows_array):
    write_store(tmp_path / "s", rows_array)
    before = (tmp_path / "s" / "manifest.json").read_bytes()
    with pytest.raises(StoreError, match="already holds a complete store.*--overwrite"):
        StoreWriter(tmp_path / "s")
    with pytest.raises(StoreError, match="no interrupted capture of it is left to resume"):
        StoreWriter(tmp_path / "s", resume=True)
    assert (tmp_path / "s" / "manifest.json").read_bytes() == before
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(StoreError, match="not a saeatlas store"):
        StoreWriter(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_missing_or_incomplete_store_messages(tmp_path):
    with pytest.raises(StoreError, match="No activation store"):
        ActivationStore.open(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="no manifest.json"):
        ActivationStore.open(tmp_path / "empty")


def test_directory_holding_one_npy_names_it(tmp_path, rows_array):
    np.save(tmp_path / "activations.npy", rows_array)
    with pytest.raises(StoreError, match=r"no manifest\.json.*pass '.*activations\.npy' itself"):
        ActivationStore.open(tmp_path)


def test_labels_column(tmp_path, rows_array):
    labels = np.arange(203) % 7
    store = write_store(tmp_path / "s", rows_array, labels=labels)
    table = pq.read_table(tmp_path / "s" / "rows.parquet")
    assert table.column("label").to_pylist() == labels.tolist()
    assert store.rows(["label"]).num_columns == 1


def test_npy_opens_as_read_only_store(tmp_path, rows_array):
    np.save(tmp_path / "acts.npy", rows_array)
    store = ActivationStore.open(tmp_path / "acts.npy")
    assert (store.n_rows, store.n_units) == (203, 10)
    assert [layer.name for layer in store.layers] == ["acts"]
    np.testing.assert_allclose(store.mean, rows_array.mean(0), rtol=1e-6)
    seen = torch.cat(list(store.iter_batches(32)))[:, 0].long()
    assert sorted(seen.tolist()) == list(range(203))


def test_npy_with_layers_json(tmp_path, rows_array):
    np.save(tmp_path / "acts.npy", rows_array)
    (tmp_path / "layers.json").write_text(
        json.dumps([{"name": "a", "start": 0, "stop": 4}, {"name": "b", "start": 4, "stop": 10}])
    )
    store = ActivationStore.open(tmp_path / "acts.npy")
    np.testing.assert_array_equal(store.read(layers=["b"]).numpy(), rows_array[:, 4:])
    (tmp_path / "layers.json").write_text(json.dumps([{"name": "a", "start": 0, "stop": 4}]))
    with pytest.raises(StoreError, match="cover 4 columns but the activations have 10"):
        ActivationStore.open(tmp_path / "acts.npy")


@pytest.mark.parametrize(
    "entry", [{"shape": [None, 2, 2]}, {"layout": "head", "shape": [None, 5, 2, 7]}]
)
def test_layers_json_whose_shape_does_not_fit_is_named(tmp_path, rows_array, entry):
    """A manifest's layer shapes are checked against their widths; a layers.json's were
    not, and its errors did not say which file to fix."""
    np.save(tmp_path / "acts.npy", rows_array)
    layers = tmp_path / "acts.layers.json"
    layers.write_text(
        json.dumps(
            [{"name": "a", "start": 0, "stop": 4}, {"name": "b", "start": 4, "stop": 10, **entry}]
        )
    )
    with pytest.raises(StoreError, match=f"'{layers}' does not describe the 10 columns.*'b'"):
        ActivationStore.open(tmp_path / "acts.npy")


def test_layers_json_without_shapes_gives_each_layer_its_width(tmp_path, rows_array):
    np.save(tmp_path / "acts.npy", rows_array)
    (tmp_path / "acts.layers.json").write_text(
        json.dumps(
            [
                {"name": "a", "start": 0, "stop": 4},
                {"name": "b", "start": 4, "stop": 10, "shape": [None, 2, 3]},
            ]
        )
    )
    store = ActivationStore.open(tmp_path / "acts.npy")
    assert [layer.shape for layer in store.layers] == [(None, 4), (None, 2, 3)]


def test_layers_json_that_is_not_a_list_shows_the_format(tmp_path, rows_array):
    np.save(tmp_path / "acts.npy", rows_array)
    (tmp_path / "layers.json").write_text(json.dumps({"a": [0, 4], "b": [4, 10]}))
    with pytest.raises(
        StoreError,
        match=r'must be a JSON list of \{"name", "start", "stop"\} objects, for example \[\{"name"',
    ):
        ActivationStore.open(tmp_path / "acts.npy")


@pytest.mark.parametrize("content", [b"[]", b"\xe9\xe9", None])
def test_layers_json_empty_not_utf8_or_a_folder_shows_the_format(tmp_path, rows_array, content):
    np.save(tmp_path / "acts.npy", rows_array)
    layers = tmp_path / "layers.json"
    layers.mkdir() if content is None else layers.write_bytes(content)
    with pytest.raises(StoreError, match="must be a JSON list"):
        ActivationStore.open(tmp_path / "acts.npy")


def test_bad_npy_inputs(tmp_path):
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4), np.float32))
    with pytest.raises(StoreError, match=r"\(2, 3, 4\).*\[rows, units\]"):
        ActivationStore.open(tmp_path / "cube.npy")
    np.save(tmp_path / "ints.npy", np.ones((4, 3), np.int64))
    with pytest.raises(
        StoreError,
        match=r"int64.*floats.*np\.save\('.*ints\.npy', np\.load\(.*\)\.astype\(np\.float32\)\)",
    ):
        ActivationStore.open(tmp_path / "ints.npy")
    x = np.ones((10, 3), np.float32)
    x[7, 2] = np.nan
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(NonFiniteError, match="row 7, column 2"):
        _ = ActivationStore.open(tmp_path / "nan.npy").mean


def test_each_shard_is_hashed_once_per_open(tmp_path, rows_array, monkeypatch):
    import saeatlas.store.sources as store_module

    write_store(tmp_path / "s", rows_array)
    store = ActivationStore.open(tmp_path / "s")
    calls = []
    real = store_module.read_shard
    monkeypatch.setattr(
        store_module,
        "read_shard",
        lambda p, sha=None, buf=None: calls.append(sha) or real(p, sha, buf),
    )
    for epoch in range(2):
        list(store.iter_batches(50, epoch=epoch))
    assert sum(c is not None for c in calls) == store.n_shards and len(calls) == 2 * store.n_shards


def test_reused_batch_memory_gives_the_same_batches(tmp_path, rows_array):
    store = write_store(tmp_path / "s", rows_array)
    fresh = [b.clone() for b in store.iter_batches(16, seed=5)]
    reused = [b.clone() for b in store.iter_batches(16, seed=5, reuse_memory=True)]
    assert len(fresh) == len(reused)
    assert all(torch.equal(a, b) for a, b in zip(fresh, reused))
    it = store.iter_batches(16, seed=5, reuse_memory=True)
    first = next(it)
    kept = first.clone()
    next(it), next(it)
    assert not torch.equal(first, kept)  # overwritten two batches later, as documented


def test_float64_npy_reads_as_float32(tmp_path, rows_array):
    np.save(tmp_path / "f64.npy", rows_array.astype(np.float64))
    store = ActivationStore.open(tmp_path / "f64.npy")
    batches = list(store.iter_batches(64, seed=0))
    assert all(b.dtype == torch.float32 for b in batches)
    assert sorted(torch.cat(batches)[:, 0].long().tolist()) == list(range(203))
    np.testing.assert_array_equal(store.read().numpy(), rows_array)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_shards_are_safetensors_files_with_their_sha256(tmp_path, rows_array, dtype):
    import hashlib

    from safetensors.torch import load_file

    store = write_store(tmp_path / "s", rows_array, dtype=dtype)
    for info in store.manifest.shards:
        path = tmp_path / "s" / info.file
        assert hashlib.sha256(path.read_bytes()).hexdigest() == info.sha256
        assert load_file(str(path))["activations"].shape == (info.rows, 10)
    first = load_file(str(tmp_path / "s" / "shard-00000.safetensors"))["activations"]
    assert torch.equal(first, store.read(0, 37, dtype=None))


@pytest.mark.parametrize("shuffle", [True, False])
def test_start_batch_resumes_the_same_order(tmp_path, rows_array, shuffle):
    store = write_store(tmp_path / "s", rows_array)
    full = list(store.iter_batches(16, seed=2, shuffle=shuffle))
    rest = list(store.iter_batches(16, seed=2, shuffle=shuffle, start_batch=5))
    assert len(rest) == len(full) - 5
    assert all(torch.equal(a, b) for a, b in zip(full[5:], rest))


def test_stop_row_holds_out_the_last_rows(tmp_path, rows_array):
    store = write_store(tmp_path / "s", rows_array)
    for shuffle in (True, False):
        seen = torch.cat(list(store.iter_batches(16, shuffle=shuffle, stop_row=150)))[:, 0].long()
        assert sorted(seen.tolist()) == list(range(150))
    full = torch.cat(list(store.iter_batches(16, seed=1)))
    again = torch.cat(list(store.iter_batches(16, seed=1, stop_row=10_000)))
    assert torch.equal(full, again)  # no stop_row effect when nothing is held out


@pytest.mark.parametrize("order", ["C", "F"])
def test_npy_chunks_read_the_same_rows_in_either_layout(tmp_path, rows_array, order, monkeypatch):
    # Several chunks: C-ordered files are read with file reads, Fortran ones via the map.
    import saeatlas.store.sources as store_module

    monkeypatch.setattr(store_module, "NPY_CHUNK_BYTES", rows_array.shape[1] * 4 * 50)
    np.save(tmp_path / "acts.npy", np.asarray(rows_array, order=order))
    store = ActivationStore.open(tmp_path / "acts.npy")
    assert store._source.direct == (order == "C") and store.n_shards == 5
    np.testing.assert_array_equal(store.read().numpy(), rows_array)
    served = torch.cat(list(store.iter_batches(64, seed=1)))
    assert sorted(served[:, 0].long().tolist()) == list(range(203))


def test_npy_truncated_after_opening_is_named(tmp_path, rows_array):
    path = tmp_path / "acts.npy"
    np.save(path, rows_array)
    store = ActivationStore.open(path)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 100)
    with pytest.raises(StoreError, match="ended early"):
        store.read()


def test_head_and_pattern_layers_fit_their_shapes(tmp_path):
    # head: [batch, pos, head=2, d_head=4] -> 8 units; pattern: [batch, head=2, q=5, k=3] -> 6
    layers = [
        LayerSpec("z", 0, 8, (None, 5, 2, 4), "head"),
        LayerSpec("p", 8, 14, (None, 2, 5, 3), "pattern"),
    ]
    w = StoreWriter(tmp_path / "s", shard_rows=16)
    w.start(layers)
    x = torch.randn(20, 14)
    w.add(x, {"sample": np.arange(20) // 5, "position": np.arange(20) % 5}, n_samples=4)
    w.close()
    assert [l.layout for l in ActivationStore.open(tmp_path / "s").layers] == ["head", "pattern"]
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    manifest["layers"][0]["shape"] = [None, 5, 3, 4]  # 12 values per token, not 8
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="Layer 'z' .* The layer map is corrupt"):
        ActivationStore.open(tmp_path / "s")
