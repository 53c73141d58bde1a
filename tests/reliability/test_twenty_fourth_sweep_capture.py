"""Twenty-fourth hostile sweep, capture and the activation store: labels of half
precision, the store writer used from Python, the store's own files edited by hand,
and inputs given the usual ways."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))


def _capture(out, inputs, **kwargs):
    from saeatlas.capture import CaptureConfig, capture_activations

    cfg = CaptureConfig(batch_size=8)
    return capture_activations(
        _tiny_model(), inputs, ["0", "2"], out, cfg, progress=False, **kwargs
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("given", ["labels", "pairs"])
def test_half_precision_labels_are_stored_as_float32(tmp_path, dtype, given):
    """A bfloat16 tensor of labels (given as `labels`, or as the `y` of `(x, y)` batches)
    ended the capture in NumPy's "Got unsupported ScalarType BFloat16"; float16 ones were
    stored as Arrow's halffloat, on which the analysis's label profiles ended, after the
    whole analysis, in pandas' "float16 indexes are not supported"."""
    x, y = torch.randn(24, 4), (torch.arange(24) % 3).to(dtype)
    if given == "labels":
        store = _capture(tmp_path / "s", x, labels=y)
    else:
        store = _capture(tmp_path / "s", [(x[i : i + 8], y[i : i + 8]) for i in range(0, 24, 8)])
    label = store.rows(["label"]).column("label")
    assert str(label.type) == "float" and label.to_pylist() == (np.arange(24) % 3).tolist()


def test_a_float16_labels_file_is_stored_as_float32(tmp_path, guarded, run_cli):
    cli, _ = run_cli
    np.save(tmp_path / "labels.npy", (np.arange(300) % 3).astype(np.float16))
    args = ["--model", guarded.model, "--inputs", guarded.inputs, "--layers", "1"]
    r = cli("capture", *args, "--labels", tmp_path / "labels.npy", "--out", tmp_path / "s", "-q")
    assert r.exit_code == 0, r.output
    assert str(pq.read_schema(tmp_path / "s" / "rows.parquet").field("label").type) == "float"


def _writer(path, **kwargs):
    from saeatlas.store import LayerSpec, StoreWriter

    writer = StoreWriter(path, shard_rows=8, **kwargs)
    writer.start([LayerSpec("a", 0, 3)])
    return writer


def _add(writer, n=4, value=1.0):
    writer.add(torch.full((n, 3), value), {"sample": np.arange(n)}, n_samples=n)


@pytest.mark.parametrize("after", ["close", "abort"])
def test_rows_added_to_a_closed_writer_are_refused(tmp_path, after):
    """Rows added after `close()` (or `abort()`) went into the buffer of a writer that
    writes nothing more: lost without a word, the store complete without them."""
    from saeatlas.errors import StoreError

    writer = _writer(tmp_path / "s")
    _add(writer)
    getattr(writer, after)()
    with pytest.raises(StoreError, match="is closed .* rows added now would be stored nowhere"):
        _add(writer)
    with pytest.raises(StoreError, match="is closed"):
        writer.finish()


def test_a_second_writer_of_one_store_in_one_thread_is_refused(tmp_path):
    """The store's lock is re-entrant within a thread, so a second StoreWriter of one
    store was made beside the first: both wrote into one partial directory, the first
    `close()` said 4 rows were stored, and the second one's completed the store with its
    own 6 rows instead, without `overwrite`."""
    from saeatlas.store import ActivationStore
    from saeatlas.store.lock import LockError

    first = _writer(tmp_path / "s")
    with pytest.raises(LockError, match="another StoreWriter of this thread, not closed yet"):
        _writer(tmp_path / "s")
    _add(first)
    with pytest.raises(LockError, match="another StoreWriter"):  # a capture too
        _capture(tmp_path / "s", torch.randn(8, 4))
    first.close()
    assert ActivationStore.open(tmp_path / "s").n_rows == 4
    # once closed (or aborted), the store may be written again
    again = _writer(tmp_path / "s", overwrite=True)
    again.abort()
    _capture(tmp_path / "s", torch.randn(8, 4), overwrite=True)


def test_rows_parquet_as_a_folder_is_named(tmp_path, guarded, run_cli, snapshot):
    """A folder in place of rows.parquet was read by pyarrow as a data set: "holds 0
    rows", and `info --verify` answered "No match for FieldRef.Name(row) in
    __fragment_index: int32 ..."."""
    import shutil

    from saeatlas.errors import StoreError
    from saeatlas.store import ActivationStore

    cli, assert_one_line_error = run_cli
    store = tmp_path / "store"
    shutil.copytree(guarded.store, store)
    (store / "rows.parquet").unlink()
    (store / "rows.parquet").mkdir()
    before = snapshot(tmp_path)
    assert_one_line_error(cli("info", "--verify", store), "is a folder, not a Parquet file")
    with pytest.raises(StoreError, match="is a folder, not a Parquet file"):
        ActivationStore.open(store).rows()
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "header, needle",
    [
        # nested past Python's stack: a RecursionError traceback
        (b"[" * 100_000, "its header is not JSON (it is nested too deeply)"),
        # Python's words: "unreadable header (KeyError('activations'))"
        (b'{"x": {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]}}', "its tensors: ['x']"),
        (b'{"activations": {"dtype": "F8_E4M3"}}', "not by a float `dtype` (F64, F32, F16, BF16)"),
        (b'{"activations": 1, "activations": 2}', "the key 'activations' is given twice"),
    ],
)
def test_a_shard_header_edited_by_hand_is_named_in_plain_words(
    tmp_path, guarded, run_cli, header, needle
):
    import shutil

    cli, assert_one_line_error = run_cli
    store = tmp_path / "store"
    shutil.copytree(guarded.store, store)
    (store / "shard-00001.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    line = assert_one_line_error(cli("info", store), "shard-00001.safetensors", needle)
    assert "Error(" not in line and "KeyError" not in line


def test_a_npy_store_with_an_upper_case_suffix_is_read(tmp_path, guarded, run_cli):
    """`info ACTS.NPY` (and `train --acts ACTS.NPY`) was refused as "neither a store
    directory nor a .npy file of shape [rows, units]"; `--labels LAB.NPY` is read so."""
    from saeatlas.store import ActivationStore

    cli, _ = run_cli
    (tmp_path / "ACTS.NPY").write_bytes(guarded.npy.read_bytes())
    r = cli("info", tmp_path / "ACTS.NPY")
    assert r.exit_code == 0 and "300 rows x 18 units" in r.output, r.output
    assert ActivationStore.open(tmp_path / "ACTS.NPY").n_rows == 300


def test_a_data_loader_of_a_tensor_data_set_of_inputs_alone_is_captured(tmp_path):
    """A DataLoader over `TensorDataset(x)` gives each batch as `[x]`, which was refused
    as "A batch of type list is not supported"; `[x, y]` was read."""
    from torch.utils.data import DataLoader, TensorDataset

    x = torch.randn(24, 4)
    store = _capture(tmp_path / "a", DataLoader(TensorDataset(x), batch_size=8))
    plain = _capture(tmp_path / "b", x)
    assert torch.equal(store.read(), plain.read())
    from saeatlas.errors import InputsError

    with pytest.raises(InputsError, match="A batch of type list is not supported"):
        _capture(tmp_path / "c", [[x[:8].tolist()]])


@pytest.fixture(scope="module")
def char_gpt2(tmp_path_factory, make_gpt2, make_char_tokenizer):
    """A Hugging Face directory of a GPT-2 with a character tokenizer."""
    folder = tmp_path_factory.mktemp("chars") / "gpt"
    make_gpt2(16).save_pretrained(folder)
    make_char_tokenizer(folder)
    return folder


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_labels_of_every_line_of_a_text_file_with_blank_lines_say_why(
    tmp_path, char_gpt2, run_cli, suffix
):
    """Six lines of texts, one blank (skipped), and six labels, one per line: "Labels have
    shape [6] for 5 input samples", which did not say why six lines gave five texts."""
    cli, assert_one_line_error = run_cli
    texts = ["ab", "cd", "", "ef", "gh", "ij"]
    lines = texts if suffix == ".txt" else [f'"{t}"' if t else "" for t in texts]
    (tmp_path / f"t{suffix}").write_text("\n".join(lines) + "\n")
    (tmp_path / "labels.txt").write_text("0\n1\n2\n0\n1\n2\n")
    args = [
        "--model",
        char_gpt2,
        "--inputs",
        tmp_path / f"t{suffix}",
        "--layers",
        "transformer.h.0",
    ]
    r = cli("capture", *args, "--labels", tmp_path / "labels.txt", "--out", tmp_path / "s", "-q")
    assert_one_line_error(
        r, "holds 6 labels", "holds 5 texts: its 6 lines less 1 blank one(s), which are skipped"
    )
    assert not (tmp_path / "s").exists()
    if suffix == ".txt":  # a run config's `inputs` and `labels` files alike
        config = tmp_path / "run.yaml"
        config.write_text(
            f"model: {char_gpt2}\ninputs: {tmp_path / 't.txt'}\n"
            f"labels: {tmp_path / 'labels.txt'}\nlayers: [transformer.h.0]\n"
        )
        assert_one_line_error(cli("run", config, "--check"), "its 6 lines less 1 blank one(s)")


#: Where :class:`_Dropper` drops a file (None: nowhere), kept off the model: a resume
#: compares the model's own number attributes.
_DROP: dict[str, Path | None] = {"into": None}


class _Dropper(torch.nn.Module):
    """Drops a file into the folder of the store being captured: what another output
    written there while the capture runs does."""

    def forward(self, x):
        folder = _DROP["into"]
        if folder is not None and not folder.exists():
            folder.mkdir()
            (folder / "keep.txt").write_text("mine")
        return x


def test_a_store_is_not_put_in_place_over_files_put_there_while_it_was_captured(tmp_path):
    """A capture into `out` replaced the folder `out` whole when it put its store there:
    a store captured into `out/b` by another process meanwhile (or files copied into
    `out`) was deleted without a word, with no `overwrite`. It is now refused, keeping
    every row for `resume`, which then ends with the store an uninterrupted capture
    writes."""
    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.errors import StoreError

    out, x = tmp_path / "out", torch.randn(40, 4)
    model = torch.nn.Sequential(_tiny_model(), _Dropper())
    cfg = CaptureConfig(batch_size=8, shard_rows=16, early_stop=False)
    _DROP["into"] = out
    with pytest.raises(StoreError, match=r"'.*out' now holds other files \(\['keep.txt'\]\)"):
        capture_activations(model, x, ["0.0", "0.2"], out, cfg, progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    _DROP["into"] = None
    (out / "keep.txt").rename(tmp_path / "keep.txt")
    out.rmdir()
    store = capture_activations(model, x, ["0.0", "0.2"], out, cfg, progress=False, resume=True)
    clean = capture_activations(model, x, ["0.0", "0.2"], tmp_path / "c", cfg, progress=False)
    assert torch.equal(store.read(), clean.read()) and store.n_rows == 40
    np.testing.assert_array_equal(store.mean, clean.mean)
    np.testing.assert_array_equal(store.std, clean.std)
    assert store.rows().equals(clean.rows())


def test_an_output_inside_one_being_written_is_refused(tmp_path, run_cli, guarded):
    """`capture --out out/b` while another process captured `out` (into `.out.partial`)
    was written, and deleted with the folder when that capture put its store in place."""
    import threading

    cli, assert_one_line_error = run_cli
    first = _writer(tmp_path / "out")
    result = {}

    def second() -> None:  # another thread is refused as another process is
        args = ["--model", guarded.model, "--inputs", guarded.inputs, "--layers", "1"]
        result["r"] = cli("capture", *args, "--out", tmp_path / "out" / "b", "-q")

    thread = threading.Thread(target=second)
    thread.start()
    thread.join()
    first.abort()
    assert_one_line_error(result["r"], "is inside the output being written", "out'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "rows, needle",
    [
        # torch's NotImplementedError traceback ("Cannot copy out of meta tensor")
        (lambda: torch.empty(4, 3, device="meta"), "a tensor of torch.float32 on meta"),
        # stored as its real part, with only torch's warning
        (lambda: torch.ones(4, 3, dtype=torch.complex64), "a tensor of torch.complex64"),
        # an AttributeError traceback ("'list' object has no attribute 'ndim'")
        (lambda: [[1.0, 2.0, 3.0]] * 4, "got a list"),
        (lambda: np.ones((4, 3), dtype=object), "an array of object"),
    ],
)
def test_the_store_writer_refuses_rows_without_real_values(tmp_path, rows, needle):
    from saeatlas.errors import StoreError

    writer = _writer(tmp_path / "s")
    with pytest.raises(StoreError, match=rf"must be tensors or arrays of real numbers .*{needle}"):
        writer.add(rows(), {"sample": np.arange(4)}, n_samples=4)
    writer.abort()
    assert not (tmp_path / "s").exists()


def test_the_store_writer_stores_a_sparse_tensor_as_its_values(tmp_path):
    """A sparse tensor (a layer's output can be one) ended the write in torch's
    NotImplementedError; a capture stores the values it stands for, and so does the
    writer now."""
    from saeatlas.store import ActivationStore

    x = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]])
    writer = _writer(tmp_path / "s")
    writer.add(x.to_sparse(), {"sample": np.arange(2)}, n_samples=2)
    writer.close()
    assert torch.equal(ActivationStore.open(tmp_path / "s").read(), x)


class _Stop(torch.nn.Module):
    """Stops the capture (Ctrl-C) at its fourth forward pass: a partial store is left."""

    def forward(self, x):
        _STOP["calls"] += 1
        if _STOP["calls"] == 4:
            raise KeyboardInterrupt
        return x


_STOP = {"calls": 0}


def test_a_progress_file_that_is_a_folder_is_named_not_taken_for_none(tmp_path, snapshot):
    """A folder in place of the partial store's progress file was taken for no progress:
    its committed shards were dropped, the capture started again and failed at its first
    commit ('Is a directory'), advising the same `--resume` again."""
    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.errors import StoreError

    out, x = tmp_path / "out", torch.randn(40, 4)
    model = torch.nn.Sequential(_tiny_model(), _Stop())
    cfg = CaptureConfig(batch_size=8, shard_rows=8, early_stop=False)
    _STOP["calls"] = 0
    with pytest.raises(KeyboardInterrupt):
        capture_activations(model, x, ["0.0"], out, cfg, progress=False)
    work = tmp_path / ".out.partial"
    (work / "progress.safetensors").unlink()
    (work / "progress.safetensors").mkdir()
    before = snapshot(work)
    assert "shard-00000.safetensors" in before
    with pytest.raises(StoreError, match="its progress file .* is not a file. Start again"):
        capture_activations(model, x, ["0.0"], out, cfg, progress=False, resume=True)
    assert snapshot(work) == before


def test_a_second_start_of_other_layers_is_not_called_a_resume(tmp_path):
    """`start()` called again with other layers was told of "the interrupted capture in
    'PATH'" and advised `--resume` or `--overwrite`, on a writer that resumed nothing."""
    from saeatlas.errors import StoreError
    from saeatlas.store import LayerSpec

    writer = _writer(tmp_path / "s")
    with pytest.raises(StoreError, match=r"start\(\) was called already .* \[\('a', 0, 3\)\]"):
        writer.start([LayerSpec("b", 0, 4)])
    writer.start([LayerSpec("a", 0, 3)])  # the same layers again: nothing to refuse
    writer.abort()


def _in_time(call, seconds=30):
    """``call()``'s result, failing the test (not hanging it) when it does not end."""
    import threading

    done = {}
    thread = threading.Thread(target=lambda: done.setdefault("r", call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert "r" in done, f"still reading after {seconds} s"
    return done["r"]


@pytest.mark.parametrize(
    "name", ["manifest.json", "shard-00001.safetensors", "rows.parquet", "acts.layers.json"]
)
def test_a_store_file_that_is_a_named_pipe_is_named_not_waited_on(tmp_path, guarded, run_cli, name):
    """A named pipe in place of a store's manifest.json, a shard or rows.parquet (or a
    `.npy`'s layers.json) made `info` (and every reader) wait for a writer, forever."""
    import os
    import shutil

    cli, assert_one_line_error = run_cli
    store = tmp_path / "store"
    if name == "acts.layers.json":
        store.mkdir()
        shutil.copy(guarded.npy, store / "acts.npy")
        target = store / "acts.npy"
    else:
        shutil.copytree(guarded.store, store)
        (store / name).unlink()
        target = store
    os.mkfifo(store / name)
    r = _in_time(lambda: cli("info", "--verify", target))
    assert_one_line_error(r, f"{name}' is a named pipe, not a file")


def test_float16_labels_in_a_store_are_read_as_float32(tmp_path):
    """A store holding float16 labels (a capture before they were widened, or a
    StoreWriter given them) gave the analysis a column pandas cannot index ("float16
    indexes are not supported", after the whole analysis)."""
    import pandas as pd

    from saeatlas.store import ActivationStore

    writer = _writer(tmp_path / "s")
    labels = np.arange(4).astype(np.float16)
    writer.add(torch.ones(4, 3), {"sample": np.arange(4), "label": labels}, n_samples=4)
    writer.close()
    assert str(pq.read_schema(tmp_path / "s" / "rows.parquet").field("label").type) == "halffloat"
    label = ActivationStore.open(tmp_path / "s").rows(["label"]).column("label")
    assert str(label.type) == "float"
    assert list(pd.Index(label.to_pandas()).get_indexer([0.0, 2.0])) == [0, 2]
