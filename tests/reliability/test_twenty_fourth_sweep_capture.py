"""Twenty-fourth hostile sweep, capture and the activation store: labels of half
precision, the store writer used from Python, the store's own files edited by hand,
and inputs given the usual ways."""

from __future__ import annotations

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
