"""Twenty-second hostile sweep, capture and the activation store: label files whose
labels' column is missing, and the capture's other inputs, resumes and store files."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import pytest
import torch


def _capture(cli, outputs, out, *flags, inputs=None):
    """`saeatlas capture` of the protected model's layer '1' on its inputs (or ``inputs``)
    into ``out``."""
    args = ["--model", outputs.model, "--inputs", inputs or outputs.inputs, "--layers", "1"]
    return cli("capture", *args, "--out", out, "-q", *flags)


@pytest.mark.parametrize(
    "name, text, needles",
    [
        # a header of columns without `label`: "record 1 holds ['id', 'y'] where one field
        # is expected", which named neither the missing column nor the columns there are
        (
            "labels.csv",
            "id,y\n" + "\n".join(f"{i},{i % 3}" for i in range(300)),
            ["has no column `label`", "the columns 'id', 'y'", "name the labels' column"],
        ),
        (
            "labels.csv",
            "id,Label\n" + "\n".join(f"{i},{i % 3}" for i in range(300)),
            ["has no column `label`", "'id', 'Label'"],
        ),
        # objects without "label": "each line must be ... an object with a number or
        # string "label"", not saying which keys the lines have
        (
            "labels.jsonl",
            "\n".join(json.dumps({"y": i % 3, "id": i}) for i in range(300)),
            ["line 1 holds an object without \"label\" (its keys: 'y', 'id')"],
        ),
    ],
)
def test_a_label_file_without_the_label_column_names_the_columns(
    tmp_path, guarded, run_cli, name, text, needles
):
    cli, assert_one_line_error = run_cli
    (tmp_path / name).write_text(text)
    r = _capture(cli, guarded, tmp_path / "store", "--labels", tmp_path / name)
    assert_one_line_error(r, *needles)
    assert not (tmp_path / "store").exists()


def test_texts_without_the_text_key_name_the_keys(tmp_path):
    from saeatlas.capture import load_inputs
    from saeatlas.errors import InputsError

    (tmp_path / "t.jsonl").write_text('{"body": "abc"}\n')
    with pytest.raises(InputsError, match=r"without \"text\" \(its keys: 'body'\)"):
        load_inputs(tmp_path / "t.jsonl")


@pytest.fixture(scope="module")
def short_gpt2(tmp_path_factory, make_gpt2, make_char_tokenizer):
    """A Hugging Face directory of a GPT-2 of 16 positions with a character tokenizer
    that sets no limit of its own (a text of 17 characters is 17 tokens)."""
    folder = tmp_path_factory.mktemp("short") / "gpt"
    make_gpt2(16).save_pretrained(folder)
    make_char_tokenizer(folder)
    return folder


@pytest.mark.parametrize("given", [False, True])
def test_layers_cuts_texts_to_the_models_positions(tmp_path, short_gpt2, run_cli, given):
    """`saeatlas layers` of a model of 16 positions ended in "index out of range" (and
    advised --max-length, which it has not): its own example sentence (44 characters)
    and a --inputs text of 31 were not cut, where `capture` cuts the same texts."""
    cli, _ = run_cli
    (tmp_path / "t.txt").write_text("a" * 31 + "\nb\n")
    args = ["--inputs", tmp_path / "t.txt"] if given else []
    r = cli("layers", short_gpt2, *args)
    assert r.exit_code == 0, r.output
    assert "transformer.h.1" in r.output and ", 16, 32]" in r.output, r.output


@pytest.mark.parametrize("others", [["attention_mask"], ["labels", "attention_mask"], []])
def test_a_safetensors_file_of_several_tensors_is_refused(tmp_path, guarded, run_cli, others):
    """`inputs` beside an `attention_mask` (a tokenized data set saved whole) was captured
    with the mask dropped without a word, padding stored as rows (and labels beside it
    not stored); a file of no tensors was told "holds tensors []"."""
    import torch
    from safetensors.torch import save_file

    cli, assert_one_line_error = run_cli
    tensors = {"inputs": torch.randn(300, 6)} if others else {}
    tensors.update({k: torch.ones(300, dtype=torch.long) for k in others})
    save_file(tensors, tmp_path / "in.safetensors")
    r = _capture(cli, guarded, tmp_path / "store", inputs=tmp_path / "in.safetensors")
    needles = ["only 'inputs' is read", "attention mask not applied"] if others else ["no tensors"]
    assert_one_line_error(r, *needles)
    assert not (tmp_path / "store").exists()


def _datasets_inputs():
    """What a `datasets.Dataset` of texts gives: its text column (a `Column` in datasets
    4 and later, a Sequence but no list), the data set itself (one example per item) and
    its examples of token ids as tensors (one example's `[seq]` each)."""
    datasets = pytest.importorskip("datasets")
    import torch

    texts = ["ab ba", "abc", "hello", "zz"] * 2
    ds = datasets.Dataset.from_dict({"text": texts, "label": [0, 1, 2, 3] * 2})
    ids = [torch.tensor([3, 4, 5][: 1 + i % 3]) for i in range(8)]
    tokens = [{"input_ids": t, "attention_mask": torch.ones_like(t)} for t in ids]

    class Column(Sequence):  # as `datasets.Column`: a Sequence of texts that is no list
        def __init__(self, items):
            self.items = items

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    return {
        "column": (Column(texts), {}, "hold texts, which are read as texts only from a list"),
        "column+labels": (Column(texts), {"labels": [0] * 8}, "pass `list(inputs)`"),
        "dataset": (ds, {}, "A dict batch ({'text': str, 'label': int}) holds no tensor"),
        "examples": (tokens, {}, "`attention_mask` has shape [1]; a batch's mask is [batch, seq]"),
    }


@pytest.mark.parametrize("case", ["column", "column+labels", "dataset", "examples"])
def test_a_data_sets_texts_and_examples_are_named_as_such(
    tmp_path, make_gpt2, make_char_tokenizer, case
):
    """A `datasets` text column (a `Column`, no list) was taken for an iterable of batches:
    "A batch of type str is not supported" (with labels: "`labels` applies to array or
    text inputs", where they were texts); a data set iterated, one example at a time:
    "Cannot tell the batch size of a dict batch"; and examples of token ids `[seq]`
    ran the model on the sequence as a batch and were refused as a layer whose shape
    "(1, 5, 32)" disagreed with the attention mask."""
    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.errors import InputsError

    inputs, kwargs, needle = _datasets_inputs()[case]
    with pytest.raises(InputsError, match=re.escape(needle)):
        capture_activations(
            make_gpt2(16),
            inputs,
            ["transformer.h.0"],
            tmp_path / "store",
            CaptureConfig(batch_size=4),
            tokenizer=make_char_tokenizer(),
            progress=False,
            **kwargs,
        )
    assert not (tmp_path / "store").exists()


def _write(path, rows, meta, dtype="float32"):
    """Rows given to a `StoreWriter` of one layer 'a' as they are; the writer is aborted
    (its lock given back) when it fails, as the capture does."""

    from saeatlas.store import LayerSpec, StoreWriter

    writer = StoreWriter(path, shard_rows=8, dtype=dtype)
    try:
        writer.start([LayerSpec("a", 0, 3)])
        writer.add(rows, meta, n_samples=len(rows))
        writer.close()
    except BaseException:
        writer.abort()
        raise


def _meta(n):
    import numpy as np

    return {"sample": np.arange(n), "position": np.zeros(n, dtype=np.int64)}


@pytest.mark.parametrize("dtype, value", [("float32", float("nan")), ("float16", 1e5)])
def test_the_store_writer_refuses_rows_it_cannot_hold(tmp_path, dtype, value):
    """Rows of NaN (or of values beyond a float16 store, Inf once stored) given to a
    `StoreWriter` made a complete store at its path whose manifest no reader accepts
    ("`mean` and `std` must be lists of numbers; recapture the store")."""
    import torch

    from saeatlas.errors import StoreError

    rows = torch.randn(20, 3)
    rows[11, 2] = value
    with pytest.raises(StoreError, match=r"Rows 8-15 given to the store writer .* column 2;"):
        _write(tmp_path / "store", rows, _meta(20), dtype)
    assert not (tmp_path / "store").exists()


def test_the_store_writer_refuses_metadata_of_other_rows_and_takes_numpy(tmp_path):
    """Metadata columns of another length than the rows ended the shard's write in
    pyarrow's ArrowInvalid ("Column 1 named position expected length 8 but got length
    5"); a NumPy array of rows was taken for a list of column blocks, one per row
    ("Rows have shapes [(3,), (3,), ...]")."""
    import numpy as np

    from saeatlas.errors import StoreError
    from saeatlas.store import ActivationStore

    with pytest.raises(StoreError, match=r"columns \{'sample': 5, 'position': 5\} .* 10 rows"):
        _write(tmp_path / "short", np.ones((10, 3), np.float32), _meta(5))
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    _write(tmp_path / "store", x, _meta(10))
    assert ActivationStore.open(tmp_path / "store").read().numpy().tolist() == x.tolist()


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("meta", "a tensor on the meta device"),  # NotImplementedError traceback
        ("sparse", "a sparse tensor (torch.sparse_coo)"),  # RuntimeError traceback
        ("masked", "a masked array with 2 masked values"),  # captured as if unmasked
    ],
)
def test_inputs_without_plain_values_are_refused(tmp_path, kind, needle):
    """Inputs on the meta device or sparse ended the capture in torch's traceback (from
    the inputs' fingerprint); a NumPy masked array was captured with the values under
    its mask read as data, without a word."""
    import numpy as np
    import torch

    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.errors import InputsError

    x = torch.randn(20, 6)
    inputs = {
        "meta": lambda: torch.empty(20, 6, device="meta"),
        "sparse": lambda: x.to_sparse(),
        "masked": lambda: np.ma.masked_array(x.numpy(), mask=np.arange(120).reshape(20, 6) < 2),
    }[kind]()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU())
    with pytest.raises(InputsError, match=re.escape(needle)):
        capture_activations(
            model, inputs, ["1"], tmp_path / "store", CaptureConfig(), progress=False
        )
    assert not (tmp_path / "store").exists()


def test_bytes_labels_that_differ_after_a_nul_stay_apart(tmp_path, guarded, run_cli):
    """Labels of a NumPy bytes array (`.npy` of dtype S) were stored as C strings, cut at
    their first NUL: b'a\\x00b' and b'a\\x00c', two classes, became one, b'a' (the
    thirteenth sweep mended this for unicode labels only)."""
    import numpy as np
    import pyarrow.parquet as pq

    cli, _ = run_cli
    labels = np.array([b"a\x00b", b"a\x00c", b"x"] * 100)
    np.save(tmp_path / "labels.npy", labels)
    r = _capture(cli, guarded, tmp_path / "store", "--labels", tmp_path / "labels.npy")
    assert r.exit_code == 0, r.output
    stored = pq.read_table(tmp_path / "store" / "rows.parquet").column("label").to_pylist()
    assert stored == labels.tolist()


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def test_a_resume_that_cuts_texts_from_the_other_end_is_refused(
    tmp_path, monkeypatch, make_gpt2, make_char_tokenizer
):
    """A tokenizer whose `truncation_side` was set to 'left' between a kill and `capture
    --resume` was taken for the same one (its fingerprint leaves truncation out): the
    store held the first texts' first 8 tokens and the later texts' last 8, without a
    word (the first batch, of short texts, was the same)."""
    import saeatlas.store.merge as merge_module
    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.errors import ConfigError

    texts = ["ab", "cd"] + ["abcdefghijklmnopqrstuvwxyz", "hello world and more"] * 2
    out, cfg = tmp_path / "store", CaptureConfig(batch_size=2, shard_rows=8, max_length=8)

    def run(side, **kw):
        tokenizer = make_char_tokenizer()
        tokenizer.truncation_side = side
        return capture_activations(
            make_gpt2(16),
            texts,
            ["transformer.h.0"],
            out,
            cfg,
            tokenizer=tokenizer,
            progress=False,
            **kw,
        )

    def killed(*args, **kw):
        raise Killed

    with monkeypatch.context() as m:  # every shard committed, as after a late kill -9
        m.setattr(merge_module, "atomic_write", killed)
        with pytest.raises(Killed):
            run("right")
    with pytest.raises(ConfigError, match=r"truncation_side was 'right', now 'left'"):
        run("left", resume=True)
    assert run("right", resume=True).n_rows == 4 + 4 * 8


def test_provenance_cannot_replace_the_captures_own_facts(tmp_path, make_gpt2, make_char_tokenizer):
    """`provenance={"max_length": 512}` on texts the capture cut to the model's 16
    positions replaced the manifest's `max_length` without a word, so the ablation and
    `evaluate --model` cut the texts to 512 tokens, not as the store's rows were."""
    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.errors import ConfigError

    def run(provenance, out):
        return capture_activations(
            make_gpt2(16),
            ["abcdefghijklmnopqrstuvwxyz", "ab"],
            ["transformer.h.0"],
            tmp_path / out,
            CaptureConfig(batch_size=2),
            tokenizer=make_char_tokenizer(),
            progress=False,
            provenance=provenance,
        )

    with pytest.raises(ConfigError, match=r"gives 'max_length' as 512, but the capture records 16"):
        run({"max_length": 512}, "refused")
    assert not (tmp_path / "refused").exists()
    store = run({"max_length": 16, "model": "tiny-gpt2"}, "store")  # the same fact is kept
    assert store.max_length == 16 and store.manifest.provenance["model"] == "tiny-gpt2"


class Squeeze(torch.nn.Module):
    def forward(self, x):
        return x.squeeze()


def test_a_last_batch_of_one_sample_squeezed_by_the_model_is_named(tmp_path):
    """301 samples in batches of 100 end in a batch of one, which a model's `x.squeeze()`
    gives as `[10]`: refused as a layer that is not batch-first, told to "choose a layer
    or `output_index` ... nn.LSTM/GRU's outputs", naming neither the batch nor the fix."""
    import torch

    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.errors import ShapeError

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 10), Squeeze())
    needle = (
        r"gives shape \[10\] for input batch 3 \(samples 300-300\), but the batch has 1 "
        r"sample; .* choose a --batch-size \(`batch_size`\) that leaves no batch of one"
    )
    with pytest.raises(ShapeError, match=needle):
        capture_activations(
            model,
            torch.randn(301, 6),
            ["1"],
            tmp_path / "s",
            CaptureConfig(batch_size=100),
            progress=False,
        )
