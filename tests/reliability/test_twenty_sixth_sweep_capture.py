"""Twenty-sixth hostile sweep, capture and the activation store: labels in a .jsonl
of records, a float16 store's top edge, integer rows given to the store writer and
`(dict, y)` batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

TEXT_MODEL = """
import torch


class Tok:
    def encode_texts(self, texts, max_length):
        n = max(len(t) for t in texts)
        ids = torch.zeros(len(texts), n, dtype=torch.long)
        mask = torch.zeros(len(texts), n, dtype=torch.long)
        for i, t in enumerate(texts):
            ids[i, : len(t)] = torch.tensor([ord(c) % 16 for c in t])
            mask[i, : len(t)] = 1
        return {"input_ids": ids}, mask, [list(t) + [""] * (n - len(t)) for t in texts]


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(16, 4)

    def forward(self, input_ids):
        return self.emb(input_ids)


def build():
    torch.manual_seed(0)
    return Model(), Tok()
"""


def _text_model(tmp_path):
    (tmp_path / "text_model.py").write_text(TEXT_MODEL)
    return f"{tmp_path / 'text_model.py'}:build"


def test_labels_in_a_jsonl_of_records_are_stored(tmp_path, run_cli):
    """`--inputs t.jsonl` of `{"text", "label"}` records stored the texts and dropped the
    labels without a word (they were stored only with `--labels t.jsonl` too)."""
    from saeatlas.store import ActivationStore

    cli, _ = run_cli
    inputs = tmp_path / "t.jsonl"
    inputs.write_text('{"text": "ab c", "label": 3}\n\n{"text": "de", "label": 5}\n')
    r = cli("capture", "--model", _text_model(tmp_path), "--inputs", inputs, "--layers", "emb",
            "--out", tmp_path / "s", "--max-length", "8", "-q")  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = ActivationStore.open(tmp_path / "s").rows(["sample", "label"]).to_pydict()
    assert rows["label"] == [3] * 4 + [5] * 2 and rows["sample"] == [0] * 4 + [1] * 2


@pytest.mark.parametrize("other", ['{"text": "de"}', '"de"'])
def test_a_jsonl_record_without_its_label_is_refused(tmp_path, run_cli, other):
    """Some records holding a label and others not: the labels were dropped without a
    word; now the record without one is named (a bare text, which the labels' reader
    took for a label of its own, too)."""
    cli, one_line = run_cli
    inputs = tmp_path / "t.jsonl"
    inputs.write_text('{"text": "ab", "label": "pos"}\n' + other + "\n")
    r = cli("capture", "--model", _text_model(tmp_path), "--inputs", inputs, "--layers", "emb",
            "--out", tmp_path / "s", "-q")  # fmt: skip
    one_line(r, "t.jsonl' line 2", '"label"')
    assert not (tmp_path / "s").exists()


def _identity_capture(out, x, **config):
    from saeatlas.capture import CaptureConfig, capture_activations

    net = torch.nn.Sequential(torch.nn.Identity())
    cfg = CaptureConfig(8, store_dtype="float16", **config)
    return capture_activations(net, x, ["0"], out, cfg, progress=False)


def test_values_that_round_to_float16s_largest_are_kept(tmp_path):
    """65510 rounds to float16's 65504 as any value rounds, but was refused as a value
    float16 cannot hold (with `on_nonfinite="skip"`, its row was dropped and counted as
    NaN/Inf); 65520 and beyond round to Inf and are still left out."""
    from saeatlas.errors import NonFiniteError

    x = torch.tensor([[65510.0, 1.0], [2.0, 3.0], [-65519.0, 4.0], [65520.0, 1.0]])
    store = _identity_capture(tmp_path / "s", x, on_nonfinite="skip")
    assert store.n_rows == 3 and store.summary().n_nonfinite_rows_skipped == 1
    assert store.read().tolist() == [[65504, 1], [2, 3], [-65504, 4]]
    stored = _identity_capture(tmp_path / "t", x[:3])
    assert stored.n_rows == 3
    with pytest.raises(NonFiniteError, match="1 finite but beyond"):
        _identity_capture(tmp_path / "u", x[2:])


def test_the_store_writer_refuses_integers_float32_would_round(tmp_path):
    """Integer rows given to `StoreWriter.add` were stored as float32 without a word:
    16777217 read back as 16777216 (a capture refuses such a layer)."""
    from saeatlas.errors import StoreError
    from saeatlas.store import LayerSpec, StoreWriter

    writer = StoreWriter(tmp_path / "s", job={"model": "m", "layers": ["a"]})
    writer.start([LayerSpec("a", 0, 2, (2,))])
    writer.add(np.array([[2**24, 3], [5, 2]]), {"sample": np.array([0, 1])}, n_samples=2)
    with pytest.raises(StoreError, match="float32 cannot hold exactly"):
        writer.add(np.array([[2**24 + 1, 3]]), {"sample": np.array([2])}, n_samples=1)
    writer.abort()


class _Keywords(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x=None, other=None):
        return self.lin(x)


class _Pairs(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return {"x": torch.full((4,), float(i))}, i % 3


def test_dict_and_label_pairs_from_a_data_loader(tmp_path):
    """A DataLoader over `({"x": ...}, y)` pairs passed the dict as the model's first
    argument: "The model's forward pass failed ... must be Tensor, not dict"."""
    from torch.utils.data import DataLoader

    from saeatlas.capture import CaptureConfig, capture_activations

    torch.manual_seed(0)
    loader = DataLoader(_Pairs(), batch_size=4)
    store = capture_activations(_Keywords(), loader, ["lin"], tmp_path / "s", CaptureConfig(4),
                                progress=False)  # fmt: skip
    assert store.rows(["label"]).column("label").to_pylist() == [i % 3 for i in range(10)]


@pytest.mark.parametrize(
    "label",
    [torch.tensor([1.0, 2.0], dtype=torch.bfloat16), torch.tensor([1.0, 2.0], requires_grad=True)],
)
def test_the_store_writer_takes_metadata_tensors(tmp_path, label):
    """A `label` column given as a bfloat16 tensor (or one needing grad) was taken by
    `add` and ended `close` in torch's TypeError, "Got unsupported ScalarType BFloat16"."""
    from saeatlas.store import ActivationStore, LayerSpec, StoreWriter

    writer = StoreWriter(tmp_path / "s", job={"model": "m", "layers": ["a"]})
    writer.start([LayerSpec("a", 0, 2, (None, 2))])
    writer.add(torch.ones(2, 2), {"sample": np.array([0, 1]), "label": label}, n_samples=2)
    writer.close()
    assert ActivationStore.open(tmp_path / "s").rows(["label"])["label"].to_pylist() == [1, 2]


def test_the_store_writer_refuses_metadata_of_dicts(tmp_path):
    """A metadata column of dicts was stored as a struct column, which no label reader
    takes."""
    from saeatlas.errors import StoreError
    from saeatlas.store import LayerSpec, StoreWriter

    writer = StoreWriter(tmp_path / "s", job={"model": "m", "layers": ["a"]})
    writer.start([LayerSpec("a", 0, 2, (None, 2))])
    label = np.array([{"a": 1}, {"b": 2}], dtype=object)
    with pytest.raises(StoreError, match="'label' holds dict values"):
        writer.add(torch.ones(2, 2), {"sample": np.array([0, 1]), "label": label}, n_samples=2)
    writer.abort()


@pytest.mark.parametrize("kind", ["jsonl", "json"])
def test_labels_files_mixing_fractions_with_large_integers_are_refused(tmp_path, run_cli, kind):
    """`9007199254740993` beside `2.5` in a labels file was stored as 9007199254740992
    (the array of both is float64), without a word."""
    cli, one_line = run_cli
    labels = tmp_path / f"labels.{kind}"
    values = [2**53 + 1, 2.5, 3, 4]
    labels.write_text("\n".join(map(str, values)) if kind == "jsonl" else str(values))
    np.save(tmp_path / "x.npy", np.zeros((4, 3), np.float32))
    model = tmp_path / "m.py"
    model.write_text(
        "import torch\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(3, 2))\n"
    )
    r = cli("capture", "--model", f"{model}:build", "--inputs", tmp_path / "x.npy", "--labels",
            labels, "--layers", "0", "--out", tmp_path / "s", "-q")  # fmt: skip
    one_line(r, "the integer 9007199254740993, beyond 2**53", "all integers")
    assert not (tmp_path / "s").exists()


def test_label_lists_mixing_fractions_with_large_integers_are_refused(tmp_path):
    """The same labels given from Python as a list; 2**60, which float64 holds, is kept."""
    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.errors import InputsError

    net, x = torch.nn.Sequential(torch.nn.Linear(3, 2)), torch.zeros(4, 3)
    with pytest.raises(InputsError, match="9007199254740993"):
        capture_activations(net, x, ["0"], tmp_path / "s", CaptureConfig(4), progress=False,
                            labels=[2**53 + 1, 0.5, 1, 2])  # fmt: skip
    store = capture_activations(net, x, ["0"], tmp_path / "t", CaptureConfig(4), progress=False,
                                labels=[2**60, 0.5, 1, 2])  # fmt: skip
    assert store.rows(["label"])["label"].to_pylist() == [2.0**60, 0.5, 1, 2]


def test_the_store_writer_refuses_rows_to_skip_that_no_capture_committed(tmp_path):
    """`add(..., skip_rows=3)` on a writer that resumed nothing left the batch's first
    three rows out of the store without a word (they are for rows an interrupted capture
    committed)."""
    from saeatlas.errors import ConfigError
    from saeatlas.store import LayerSpec, StoreWriter

    writer = StoreWriter(tmp_path / "s", job={"model": "m", "layers": ["a"]})
    writer.start([LayerSpec("a", 0, 2, (None, 2))])
    with pytest.raises(ConfigError, match="`skip_rows` 3 does not match the 0 rows"):
        writer.add(torch.ones(4, 2), {"sample": np.arange(4)}, n_samples=4, skip_rows=3)
    writer.abort()


def test_a_dict_batchs_label_the_model_refuses_is_named_with_its_fix(tmp_path):
    """Dict batches of a data set's columns (`{"x", "label"}`) passed `label` to a model
    whose forward takes none: "got an unexpected keyword argument 'label'", with no word
    of how to give the labels."""
    from torch.utils.data import DataLoader

    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.errors import ModelError

    data = [{"x": torch.zeros(4), "label": i % 2} for i in range(6)]
    with pytest.raises(ModelError, match=r"give the labels apart, as `\(dict, y\)` batches"):
        capture_activations(_Keywords(), DataLoader(data, batch_size=3), ["lin"], tmp_path / "s",
                            CaptureConfig(3), progress=False)  # fmt: skip
    pairs = [({"x": d["x"]}, d["label"]) for d in data]
    store = capture_activations(_Keywords(), DataLoader(pairs, batch_size=3), ["lin"],
                                tmp_path / "t", CaptureConfig(3), progress=False)  # fmt: skip
    assert store.rows(["label"])["label"].to_pylist() == [0, 1] * 3


def test_info_on_the_working_folder_of_a_running_capture(tmp_path, run_cli):
    """`info .a.partial` while a capture of `a` ran said "is an interrupted capture ...
    Finish it with `saeatlas capture ... --resume`" (which the lock then refused)."""
    import threading

    from saeatlas.store.lock import acquire, release

    cli, one_line = run_cli
    work = tmp_path / ".a.partial"
    work.mkdir()
    (work / "progress.safetensors").write_bytes(b"")
    one_line(cli("info", work), "is an interrupted capture", "--resume")
    held, done = threading.Event(), threading.Event()

    def writer():
        acquire(tmp_path / "a")
        held.set()
        done.wait(10)
        release(tmp_path / "a")

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        held.wait(10)
        one_line(cli("info", work), "a capture of", "another thread of this process is running")
    finally:
        done.set()
        thread.join()


@pytest.mark.parametrize(
    "data, size", [(["ab", "cd", "ef"], 2), (["ab", "cd", "ef"], 3), ([("ab", 1), ("cd", 0)], 2)]
)
def test_a_data_loader_over_texts_is_refused_with_its_fix(tmp_path, data, size):
    """A DataLoader over texts (or `(text, label)` pairs) ended in "Cannot tell the batch
    size of a str batch" or "A batch of type list is not supported", by its batch size,
    neither saying how to give texts."""
    from torch.utils.data import DataLoader

    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.errors import InputsError

    with pytest.raises(InputsError, match="pass the texts as one list with a tokenizer"):
        capture_activations(_Keywords(), DataLoader(data, batch_size=size), ["lin"],
                            tmp_path / "s", CaptureConfig(4), progress=False)  # fmt: skip
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("shard_rows", [2, 8])
def test_batches_joining_large_integer_labels_with_fractions_are_refused(tmp_path, shard_rows):
    """`(x, y)` batches of integer labels beyond 2**53, then of float ones, ended the
    capture after its work in pyarrow's ArrowInvalid ("Integer value 9007199254740993 not
    in range") where they fell in two shards, and stored them rounded in one."""
    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.errors import InputsError

    net, x = torch.nn.Sequential(torch.nn.Linear(3, 2)), torch.zeros(2, 3)
    batches = [(x, torch.tensor([2**53 + 1, 2])), (x, torch.tensor([0.5, 1.5]))]
    cfg = CaptureConfig(2, shard_rows=shard_rows)
    with pytest.raises(InputsError, match="the integer 9007199254740993, beyond 2"):
        capture_activations(net, batches, ["0"], tmp_path / "s", cfg, progress=False)
    assert not (tmp_path / "s").exists()
