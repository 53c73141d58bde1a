"""Twentieth hostile sweep, capture and the activation store: resumes of a capture
whose job changed in ways its fingerprints did not see, two writers, and bad inputs
to capture and to the store's readers.

A kill is an exception raised from the write of ``rows.parquet`` (every shard is
committed by then, as after a ``kill -9`` late in a capture)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import saeatlas.store.merge as merge_module
from saeatlas.capture import CaptureConfig, capture_activations
from saeatlas.errors import ConfigError
from saeatlas.store.atomic import partial_dir


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def stopped_capture(monkeypatch, model, inputs, layers, out, config, **kwargs):
    """A capture of ``inputs`` into ``out`` stopped once every shard is committed,
    before ``rows.parquet`` is written: what ``--resume`` continues."""

    def killed(*args, **kw):
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(merge_module, "atomic_write", killed)
        with pytest.raises(Killed):
            capture_activations(model, inputs, layers, out, config, progress=False, **kwargs)
    assert (partial_dir(out) / "progress.safetensors").is_file()


def _gpt2(**config):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=1, n_embd=16, n_head=2, vocab_size=40, n_positions=16, **config
    )
    return transformers.GPT2LMHeadModel(cfg).eval()


TEXTS = ["ab", "ba", "abab", "a", "xyz xy", "zyx", "xx yy zz", "yxz"]


def test_a_resume_with_another_tokenizer_is_refused(tmp_path, monkeypatch, make_char_tokenizer):
    """tokenizer.json edited between a kill and `capture --resume` (two tokens' ids
    swapped, used only by later texts): the resumed rows were of another tokenization,
    in one store with the first ones, without a word (the texts and the first batch,
    all the job knew of them, were the same)."""
    first = make_char_tokenizer(tmp_path / "tok")
    spec = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["x"], vocab["y"] = vocab["y"], vocab["x"]
    (tmp_path / "tok" / "tokenizer.json").write_text(json.dumps(spec))
    transformers = pytest.importorskip("transformers")

    second = transformers.AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert first("x")["input_ids"] != second("x")["input_ids"]
    out, cfg = tmp_path / "store", CaptureConfig(batch_size=4, shard_rows=8)
    stopped_capture(monkeypatch, _gpt2(), TEXTS, ["transformer.h.0"], out, cfg, tokenizer=first)
    with pytest.raises(ConfigError, match=r"this run's tokenizer differ"):
        capture_activations(
            _gpt2(),
            TEXTS,
            ["transformer.h.0"],
            out,
            cfg,
            tokenizer=second,
            resume=True,
            progress=False,
        )
    store = capture_activations(  # the same tokenizer, loaded again, resumes
        _gpt2(),
        TEXTS,
        ["transformer.h.0"],
        out,
        cfg,
        tokenizer=first,
        resume=True,
        progress=False,
    )
    assert store.n_rows > 0


def test_a_resume_with_a_model_setting_edited_in_its_config_is_refused(tmp_path, monkeypatch):
    """GPT-2's `scale_attn_weights` set to false in config.json between a kill and
    `--resume`: no module, forward code or weight changes, so the model's fingerprint was
    the same and the resumed rows were another model's."""
    ids = np.random.default_rng(0).integers(0, 40, size=(12, 6))
    out, cfg = tmp_path / "store", CaptureConfig(batch_size=4, shard_rows=8)
    stopped_capture(monkeypatch, _gpt2(), ids, ["transformer.h.0"], out, cfg)
    other = _gpt2(scale_attn_weights=False)
    x = torch.as_tensor(ids[:2])
    assert not torch.allclose(_gpt2()(x).logits, other(x).logits)
    with pytest.raises(ConfigError, match=r"this run's model_details differ"):
        capture_activations(other, ids, ["transformer.h.0"], out, cfg, resume=True, progress=False)
    store = capture_activations(
        _gpt2(), ids, ["transformer.h.0"], out, cfg, resume=True, progress=False
    )
    assert store.n_rows == 72


def test_an_empty_model_spec_is_refused_not_read_as_the_current_folder(
    tmp_path, monkeypatch, run_cli, tiny_gpt2
):
    """`capture --model "$MODEL"` with MODEL unset, run in a folder that holds a Hugging
    Face model, captured that model without a word (`Path('')` is the current folder);
    `layers ""` listed its layers."""
    cli, one_line = run_cli
    tiny_gpt2.save_pretrained(tmp_path / "hf")
    np.save(tmp_path / "ids.npy", np.zeros((4, 5), np.int64))
    monkeypatch.chdir(tmp_path / "hf")
    for spec in ("", " "):
        args = ["--inputs", tmp_path / "ids.npy", "--layers", "transformer.h.0"]
        r = cli("capture", "--model", spec, *args, "--out", tmp_path / "store", "-q")
        one_line(r, f"The model spec {spec!r} is empty", "'.' for the current folder")
        one_line(cli("layers", spec), "is empty (an unset variable")
    assert not (tmp_path / "store").exists()


def test_a_file_named_npy_that_is_no_npy_file_is_named_so(tmp_path, run_cli):
    """A CSV (or a pickle) named `.npy`, as --inputs, --labels or --acts, was told it
    "contains pickled (object) data" and advised to load it unsafely with
    `allow_pickle=` or `pickle.load()`: NumPy takes every file without its header for a
    pickle. It is now named as no .npy file, with its first bytes."""
    cli, one_line = run_cli
    csv, pickle = tmp_path / "table.npy", tmp_path / "obj.npy"
    csv.write_text("1,2,3\n4,5,6\n")
    pickle.write_bytes(b"\x80\x04K\x01.")
    np.save(tmp_path / "x.npy", np.zeros((4, 3), np.float32))
    model = tmp_path / "m.py"
    model.write_text(
        "import torch\ndef f():\n    return torch.nn.Sequential(torch.nn.Linear(3, 2))\n"
    )
    capture = ["capture", "--model", f"{model}:f", "--layers", "0", "--out", tmp_path / "s"]
    for args in (
        [*capture, "--inputs", csv],
        [*capture, "--inputs", tmp_path / "x.npy", "--labels", csv],
        ["train", "--acts", csv, "--out", tmp_path / "sae"],
    ):
        line = one_line(cli(*args), "it is not a .npy file", r"this one with b'1,2,3\n4,'")
        assert "allow_pickle" not in line and "pickle.load" not in line
    line = one_line(
        cli(*capture, "--inputs", pickle),
        "it is not a .npy file",
        "a pickle",
    )
    assert "allow_pickle" not in line


def test_a_layer_map_with_a_layer_of_no_columns_names_that_fault(tmp_path, run_cli):
    """A `layers.json` whose first layer is 0:0 was refused as "covers columns 0:0,
    expected to start at 0": it does start at 0, and the line named no fault."""
    cli, one_line = run_cli
    np.save(tmp_path / "a.npy", np.zeros((20, 10), np.float32))
    layers = [{"name": "a", "start": 0, "stop": 0}, {"name": "b", "start": 0, "stop": 10}]
    (tmp_path / "a.layers.json").write_text(json.dumps(layers))
    line = one_line(cli("info", tmp_path / "a.npy"), "Layer 'a' covers columns 0:0, which is no")
    assert "expected to start at 0" not in line
    layers[0]["stop"] = -2
    (tmp_path / "a.layers.json").write_text(json.dumps(layers))
    one_line(cli("info", tmp_path / "a.npy"), "covers columns 0:-2, which is no column")


def test_ranks_whose_first_batches_have_other_sequence_lengths_merge(tmp_path):
    """`torchrun --nproc_per_node 2 -m saeatlas capture` of texts of other lengths ended,
    after every rank had captured its share, in "Rank 1 recorded other layers or row
    columns than rank 0 (('position', 'sample', 'text', 'token') vs (the same))": each
    rank's layers recorded the shape of its own first batch, [None, seq, d], whose
    sequence length is its longest text's. The store records rank 0's, as one process
    does; a rank of another layout or columns is still refused, naming them."""
    from saeatlas.errors import StoreError
    from saeatlas.store import StoreWriter
    from saeatlas.store.manifest import LayerSpec

    def write(out, layouts=("token", "token")):
        w0 = StoreWriter(out, rank=0, world=2, shard_rows=4)
        w1 = StoreWriter(out, rank=1, world=2, shard_rows=4)
        for w, seq, layout in ((w0, 3, layouts[0]), (w1, 5, layouts[1])):
            # a `sample` layer's shape holds its units: [None, 2] (writers refuse another)
            shape = (None, seq, 2) if layout == "token" else (None, 2)
            w.start([LayerSpec("h", 0, 2, shape, layout)])
            x = torch.arange(seq * 4, dtype=torch.float32).reshape(-1, 2)
            meta = {"sample": np.repeat([0, 1], seq), "position": np.tile(np.arange(seq), 2)}
            w.add(x, meta, n_samples=2)
        parts = [w0.finish(), w1.finish()]
        return w0, parts

    writer, parts = write(tmp_path / "store")
    manifest = writer.complete(parts)
    assert manifest.n_rows == 16 and manifest.layers[0].shape == (None, 3, 2)
    writer, parts = write(tmp_path / "other", ("token", "sample"))
    with pytest.raises(StoreError, match=r"Rank 1 recorded other .*'sample'.* vs .*'token'"):
        writer.complete(parts)


def test_arrays_for_a_model_of_token_ids_must_be_integer_ids_of_n_by_seq(
    tmp_path, run_cli, tiny_gpt2
):
    """Given a Hugging Face model, one sequence of ids `[seq]` (or `[n, seq, 1]`) was
    refused as "Layer 'transformer.h.0' gives shape [1, 6, 32], but the batch has 6
    samples ... Choose a layer or `output_index`", blaming the layer; ids of no position
    `[n, 0]` and float or bool ids ended in torch's error from inside the forward pass."""
    cli, one_line = run_cli
    tiny_gpt2.save_pretrained(tmp_path / "hf")
    ids = np.random.default_rng(0).integers(0, 30, size=(8, 6))
    cases = {
        "one_sequence": (ids[0], "int64 [6]."),
        "extra_axis": (ids[:, :, None], "int64 [8, 6, 1]."),
        "no_position": (ids[:, :0], "int64 [8, 0], no token per sample"),
        "floats": (ids.astype(np.float32), "float32 [8, 6]."),
        "flags": (ids > 10, "bool [8, 6]."),
    }
    for name, (array, needle) in cases.items():
        np.save(tmp_path / f"{name}.npy", array)
        args = ["--inputs", tmp_path / f"{name}.npy", "--layers", "transformer.h.0"]
        r = cli("capture", "--model", tmp_path / "hf", *args, "--out", tmp_path / "s", "-q")
        line = one_line(r, "The model reads token ids", f"these are {needle}")
        assert "output_index" not in line
    assert not (tmp_path / "s").exists()


def test_the_store_rows_columns_are_checked_for_npy_stores_too(tmp_path, make_store):
    """`rows(["label"])` of a `.npy` store gave back its `row`, `sample` and `position`
    columns without a word (every list was ignored: a later `column("label")` ended in a
    KeyError), `rows([])` gave every column of any store, and `rows(["row", "row"])` the
    column twice (as `read(layers=[...])` no longer does)."""
    from saeatlas.store import ActivationStore

    np.save(tmp_path / "a.npy", np.zeros((6, 3), np.float32))
    for store in (
        ActivationStore.open(tmp_path / "a.npy"),
        ActivationStore.open(make_store(tmp_path / "store")),
    ):
        assert store.rows(["sample"]).column_names == ["sample"]
        assert store.rows(("position", "row")).column_names == ["position", "row"]
        for columns, needle in (
            (["label"], r"The store's rows have no column 'label'; its columns are row, "),
            ([], r"`columns` is empty; name at least one column or pass None for all"),
            (["row", "row"], r"`columns` names 'row' more than once"),
        ):
            with pytest.raises(ConfigError, match=needle):
                store.rows(columns)


@pytest.mark.parametrize(
    "key,value",
    [("max_length", "abc"), ("max_length", 0), ("max_length", 1.5), ("n_texts_cut", -5)],
)
def test_a_manifest_whose_text_facts_were_edited_is_refused(
    tmp_path, make_store, run_cli, key, value
):
    """The provenance's `max_length` (tokens per text the capture kept), edited by hand,
    was taken by `evaluate --model` and the ablation, which cut texts the same way: 'abc'
    or 1.5 ended them in the tokenizer's TypeError traceback, 0 in torch's "cannot
    reshape tensor of 0 elements"; `info` showed `n_texts_cut` -5 as "-5 texts were cut"."""
    from saeatlas.errors import StoreError
    from saeatlas.store import ActivationStore

    cli, one_line = run_cli
    store = make_store(tmp_path / "store")
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["provenance"][key] = value
    (store / "manifest.json").write_text(json.dumps(manifest))
    needle = f"records `{key}` {value!r} in its provenance, which is no whole number"
    one_line(cli("info", store), needle, "restore it, or recapture the store")
    with pytest.raises(StoreError, match="which is no whole number"):
        ActivationStore.open(store)


@pytest.mark.parametrize(
    "edit,needle",
    [
        (lambda job: job.update(settings=[1]), "`job.settings` [1]"),
        (lambda job: job.update(model=5), "`job.model` 5"),
        (lambda job: job.update(layers="0"), "`job.layers` '0'"),
    ],
)
def test_a_manifest_whose_capture_job_was_edited_is_refused(
    tmp_path, make_store, run_cli, edit, needle
):
    """`job.settings` of a manifest edited to a list ended `evaluate --model`, the
    ablation and `export-neuronpedia --model` in "AttributeError: 'list' object has no
    attribute 'get'" (their check that the model is the captured one reads it)."""
    from saeatlas.errors import StoreError
    from saeatlas.store import ActivationStore
    from saeatlas.structure.causal.ablation_inputs import check_captured_model

    cli, one_line = run_cli
    store = make_store(tmp_path / "store")
    manifest = json.loads((store / "manifest.json").read_text())
    edit(manifest["provenance"]["job"])
    (store / "manifest.json").write_text(json.dumps(manifest))
    one_line(cli("info", store), needle, "not what its capture wrote", "recapture the store")
    with pytest.raises(StoreError, match="not what its capture wrote"):
        check_captured_model(torch.nn.Linear(4, 6), ActivationStore.open(store))


class _Float64(torch.nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale, self.lin = scale, torch.nn.Linear(3, 4)

    def forward(self, x):
        return self.lin(x).double() * self.scale


def test_float64_outputs_that_float32_cannot_keep_are_named(tmp_path):
    """A layer giving float64 values of about 1e-300 was stored as float32 zeros, every
    unit constant, without a word (the warning about units rounded to one value was a
    float16 and bfloat16 store's only); values of 1e300 were told to "store a wider
    --store-dtype", and float32 is the widest."""
    from saeatlas.errors import NonFiniteError

    x = torch.randn(12, 3, generator=torch.Generator().manual_seed(0))
    cfg = CaptureConfig(batch_size=5)
    model = torch.nn.Sequential(_Float64(1e-300))
    with pytest.warns(UserWarning, match=r"4 units vary .* constant in the float32 store"):
        store = capture_activations(model, x, ["0"], tmp_path / "tiny", cfg, progress=False)
    assert (store.std == 0).all()
    model = torch.nn.Sequential(_Float64(1e300))
    with pytest.raises(NonFiniteError, match=r"float32 cannot hold .*; scale them down") as e:
        capture_activations(model, x, ["0"], tmp_path / "huge", cfg, progress=False)
    assert "wider" not in str(e.value)


def test_a_lock_file_that_is_a_named_pipe_is_named(tmp_path, run_cli):
    """A `.STORE.lock` that is a named pipe (a FIFO left where the lock goes) ended the
    capture in "Cannot write or read: Invalid argument. Check free space and
    permissions ... continue with `saeatlas capture --resume`", naming no file."""
    import os

    cli, one_line = run_cli
    np.save(tmp_path / "x.npy", np.zeros((4, 3), np.float32))
    model = tmp_path / "m.py"
    model.write_text(
        "import torch\ndef f():\n    return torch.nn.Sequential(torch.nn.Linear(3, 2))\n"
    )
    os.mkfifo(tmp_path / ".store.lock")
    args = ["--model", f"{model}:f", "--inputs", tmp_path / "x.npy", "--layers", "0"]
    line = one_line(
        cli("capture", *args, "--out", tmp_path / "store", "-q"),
        f"The lock file '{tmp_path / '.store.lock'}' for ",
        "is not a regular file (a named pipe or a device); remove it.",
    )
    assert "--resume" not in line and not (tmp_path / "store").exists()


HELPER_MODEL = """
import torch
from torch import nn

def act(x):
    return torch.{fn}(x)

class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

    def mix(self, x):
        return x * {scale}

    def forward(self, x):
        return self.b(self.mix(act(self.a(x))))
"""


def test_a_resume_with_a_helper_of_the_forward_edited_is_refused(tmp_path, monkeypatch):
    """A model file whose `forward` calls a function of the file (`act`) or a method
    (`self.mix`): `torch.relu` edited to `torch.tanh` in the helper (or a constant in
    the method) between a kill and `--resume` changed no `forward`, so the resumed rows
    were another model's, in one store with the first ones."""
    import importlib.util

    def model(fn="relu", scale=2.0, name="helper"):
        path = tmp_path / f"{name}.py"
        path.write_text(HELPER_MODEL.format(fn=fn, scale=scale))
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        torch.manual_seed(0)
        return mod.M()

    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    out, cfg = tmp_path / "store", CaptureConfig(batch_size=4, shard_rows=8)
    stopped_capture(monkeypatch, model(), x, ["b"], out, cfg)
    for edited in (model(fn="tanh", name="h2"), model(scale=3.0, name="h3")):
        with pytest.raises(ConfigError, match=r"this run's model_details differ"):
            capture_activations(edited, x, ["b"], out, cfg, resume=True, progress=False)
    store = capture_activations(model(name="h4"), x, ["b"], out, cfg, resume=True, progress=False)
    assert store.n_rows == 20


class _Scaled(torch.nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.lin, self.scale = torch.nn.Linear(3, 4), torch.tensor(scale)  # no buffer

    def forward(self, x):
        return self.lin(x) * self.scale


def test_a_resume_with_a_tensor_attribute_changed_is_refused(tmp_path, monkeypatch):
    """A tensor kept as a plain attribute (`self.scale = torch.tensor(2.0)`, neither a
    parameter nor a buffer) changed between a kill and `--resume`: the model's
    fingerprint, of its parameters and buffers only, was the same."""

    def model(scale):
        torch.manual_seed(0)
        return torch.nn.Sequential(_Scaled(scale))

    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    out, cfg = tmp_path / "store", CaptureConfig(batch_size=4, shard_rows=8)
    stopped_capture(monkeypatch, model(2.0), x, ["0"], out, cfg)
    with pytest.raises(ConfigError, match=r"this run's model_details differ"):
        capture_activations(model(3.0), x, ["0"], out, cfg, resume=True, progress=False)
    assert capture_activations(model(2.0), x, ["0"], out, cfg, resume=True).n_rows == 20
