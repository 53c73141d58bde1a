"""Seventeenth hostile sweep, capture and store half: the ActivationStore's read methods
given arguments of the wrong kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def test_the_store_read_methods_refuse_arguments_of_the_wrong_kind(tmp_path, make_store):
    """`read(dtype="float16")` ended in torch's "Invalid device string" (a NumPy dtype in
    a TypeError), `read(1.5, 4)` and `iter_batches(2.5)` in TypeErrors, `read(True, 4)`
    read from row 1, `iter_batches(4, seed=1.5)` drew seed 1's order, `start_batch=-3` was
    read as 0, `read(layers=["0", "0"])` gave the layer's columns twice, `rows([1])` ended
    in pyarrow's "expected bytes, int found", `dtype=torch.int64` cut every activation to
    a whole number and `open(verify="no")` was read by its truth."""
    from saeatlas.errors import ConfigError
    from saeatlas.store import ActivationStore

    store = ActivationStore.open(make_store(tmp_path / "store"))
    full = store.read()
    for dtype in ("float16", "torch.float16", np.float16, torch.float16):
        got = store.read(0, 5, dtype=dtype)  # a text or NumPy dtype now works
        assert got.dtype == torch.float16 and torch.equal(got, full[:5].half())
    assert next(store.iter_batches(4, shuffle=False, dtype="bfloat16")).dtype == torch.bfloat16
    assert torch.equal(store.read(np.int64(1), torch.tensor(4)), full[1:4])

    def refused(call, needle):
        with pytest.raises(ConfigError, match=needle):
            call()

    refused(
        lambda: store.read(dtype=torch.int64), r"`dtype` must be a floating dtype .*torch.int64"
    )
    refused(lambda: store.read(dtype="cuda"), r"`dtype` must be a floating dtype .* 'cuda'")
    refused(lambda: store.read(1.5, 4), r"`start` must be a whole number, got 1.5")
    refused(lambda: store.read(True, 4), r"`start` must be a whole number, got True")
    refused(lambda: store.read(0, "4"), r"`stop` must be a whole number, got '4'")
    refused(lambda: store.read(layers=["0", "0"]), r"`layers` names '0' more than once")
    refused(lambda: store.read(layers={"0": 1}), r"`layers` must be a list of layer names")
    refused(lambda: store.rows([1]), r"`columns` must be a list of column names \(text\)")
    refused(lambda: ActivationStore.open(store.path, verify="no"), r"`verify` must be True")
    for kwargs, needle in (
        ({"batch_size": 2.5}, r"`batch_size` must be a whole number, got 2.5"),
        ({"batch_size": True}, r"`batch_size` must be a whole number, got True"),
        ({"seed": 1.5}, r"`seed` must be a whole number, got 1.5"),
        ({"epoch": "1"}, r"`epoch` must be a whole number, got '1'"),
        ({"start_batch": -3}, r"`start_batch` must be >= 0, got -3"),
        ({"stop_row": 3.5}, r"`stop_row` must be a whole number, got 3.5"),
        ({"part": (0,)}, r"Bad `part` \(0,\)"),
        ({"part": (0.5, 2)}, r"`part` must be a whole number, got 0.5"),
        ({"dtype": "float8"}, r"`dtype` must be a floating dtype"),
    ):
        refused(lambda kw=kwargs: next(store.iter_batches(**{"batch_size": 4, **kw})), needle)


ODD_OUTPUTS = """
import torch
from torch import nn

class Odd(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind, self.lin = kind, nn.Linear(4, 5)

    def forward(self, x):
        y = self.lin(x)
        if self.kind == "sparse":
            return y.to_sparse()
        if self.kind == "meta":
            return torch.empty(y.shape, device="meta")
        return y

def build(kind="dense"):
    torch.manual_seed(0)
    return nn.Sequential(Odd(kind))

def sparse():
    return build("sparse")

def meta():
    return build("meta")
"""


def test_a_layer_giving_a_sparse_or_meta_tensor(tmp_path, run_cli):
    """A layer whose output is a sparse tensor ended the capture in "The model's forward
    pass failed ... unsupported memory format option Contiguous" (the forward pass had
    run; the copy of its output failed): it is now stored as the dense values it stands
    for. One on the meta device ended in torch's "Tensor.item() cannot be called on meta
    tensors" traceback."""
    from saeatlas.store import ActivationStore

    cli, one_line = run_cli
    (tmp_path / "odd.py").write_text(ODD_OUTPUTS)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(20, 4)).astype("f4"))
    args = ["--inputs", tmp_path / "x.npy", "--layers", "0", "--batch-size", "8", "-q"]
    for spec in ("build", "sparse"):
        r = cli(
            "capture", "--model", f"{tmp_path / 'odd.py'}:{spec}", *args, "--out", tmp_path / spec
        )
        assert r.exit_code == 0, r.output
    assert torch.equal(
        ActivationStore.open(tmp_path / "sparse").read(),
        ActivationStore.open(tmp_path / "build").read(),
    )
    r = cli("capture", "--model", f"{tmp_path / 'odd.py'}:meta", *args, "--out", tmp_path / "meta")
    one_line(r, "Layer '0' gives a tensor on the meta device")
    assert not (tmp_path / "meta").exists()


def test_a_manifest_edited_by_hand_is_refused_naming_the_edit(tmp_path, make_store, run_cli):
    """Two shards of as many rows swapped in `manifest.json` passed every check, `info
    --verify` too (the moments do not depend on the order): their activations were read
    under other rows' labels in rows.parquet. A negative `std` was refused as "must hold
    10 finite values (one per unit), it has 10"."""
    import json

    cli, one_line = run_cli
    store = make_store(tmp_path / "store", rows=64, shard_rows=32)
    manifest = json.loads((store / "manifest.json").read_text())
    edited = dict(manifest, shards=manifest["shards"][::-1])
    (store / "manifest.json").write_text(json.dumps(edited))
    one_line(
        cli("info", store, "--verify"),
        "lists shard 'shard-00000.safetensors' after 'shard-00001.safetensors'",
        "out of the order of rows.parquet",
    )
    edited = dict(manifest, std=[-1.0] + manifest["std"][1:])
    (store / "manifest.json").write_text(json.dumps(edited))
    one_line(cli("info", store), "`std` must hold 10 finite values", "a negative one (unit 0)")


def test_python_capture_and_sweep_arguments_of_the_wrong_kind(tmp_path, make_store):
    """`capture_activations(hookpoints=5)` ended in "'int' object is not iterable",
    `hookpoints=b"0"` was refused as "Layer names must be strings, not int" and a dict was
    read as its keys; a tokenizer's output (one dict of tensors) given as the inputs was
    iterated for its keys ("A batch of type str is not supported"); `sweep(seeds=2.0)`
    ended in a TypeError after the checks, and `seeds="2"` was refused as "got 2"."""
    from functools import partial

    from saeatlas.capture import capture_activations
    from saeatlas.errors import AtlasError
    from saeatlas.sweep import sweep
    from saeatlas.train import TrainConfig

    out = tmp_path / "out"
    capture = partial(
        capture_activations, torch.nn.Sequential(torch.nn.Linear(4, 6)), out=out, progress=False
    )
    x = torch.randn(20, 4)
    for layers, needle in ((5, "got int 5"), (b"0", "got bytes b'0'"), ({"0": 1}, "got dict")):
        with pytest.raises(AtlasError, match=f"Layers must be a name or a list of names, {needle}"):
            capture(inputs=x, hookpoints=layers)
    with pytest.raises(AtlasError, match=r"Inputs are one mapping \(dict of input_ids"):
        capture(inputs={"input_ids": x}, hookpoints=["0"])
    store = make_store(tmp_path / "store")
    cfg = TrainConfig(d_sae=8, k=2, tokens=200)
    for seeds in (2.0, "2"):
        with pytest.raises(AtlasError, match=rf"--seeds \(`seeds`\) must be 1 or 2, got {seeds!r}"):
            sweep(store, cfg, "k", [2, 4], out, seeds=seeds)
    assert not out.exists()


def test_a_full_disk_during_a_capture_is_one_line_with_no_traceback(
    tmp_path, outputs, run_cli, monkeypatch, caplog
):
    """A disk that fills while the first shard (or a progress file) is written printed
    "A shard commit failed after an earlier error." and that same error's traceback
    before the `Error:` line: the failed commit stayed queued and was reported again by
    the cleanup (and every later shard a full disk failed printed one more traceback)."""
    import errno
    import logging

    import saeatlas.store.atomic as atomic

    cli, one_line = run_cli
    real = atomic._write_into

    def full(path, write):  # the disk fills while the first shard is written
        def half(tmp):
            tmp.write_bytes(b"x" * 10)
            raise OSError(errno.ENOSPC, "No space left on device")

        return real(path, half)

    monkeypatch.setattr(atomic, "_write_into", full)
    args = ["capture", "--model", outputs.model, "--inputs", outputs.inputs, "--layers", "1",
            "--out", tmp_path / "s", "--shard-rows", "32", "-q"]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="saeatlas"):
        one_line(cli(*args), "No space left on device", "shard-00000", "--resume")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    monkeypatch.setattr(atomic, "_write_into", real)
    assert cli(*args, "--resume").exit_code == 0
    # the race made deterministic: the oldest commit failed and was raised by a full
    # queue; the cleanup that follows must not report it again
    from concurrent.futures import Future

    from saeatlas.store.commit import Committer

    committer = Committer(tmp_path / "work", 0, 1, workers=1)
    failed: Future[None] = Future()
    failed.set_exception(OSError(errno.ENOSPC, "No space left on device"))
    committer._pending.append(failed)
    with pytest.raises(OSError), caplog.at_level(logging.DEBUG, logger="saeatlas"):
        try:
            committer._reap(block=True)
        finally:
            committer.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_a_model_file_without_its_factory_is_told_to_name_it(outputs, run_cli, tmp_path):
    """`--model model.py` (the file, no `:factory`) was refused as "neither a directory
    nor 'package.module:factory'. Give ... a factory such as 'mypkg.models:build'",
    which does not say that a file spec takes its factory after a colon."""
    cli, one_line = run_cli
    model_file = outputs.model.rpartition(":")[0]
    for args in (
        ("layers", model_file),
        ("capture", "--model", model_file, "--inputs", outputs.inputs, "--layers", "1",
         "--out", tmp_path / "s", "-q"),
    ):  # fmt: skip
        one_line(cli(*args), "is a Python file without the factory", f"'{model_file}:FACTORY'")
    assert not (tmp_path / "s").exists()


def test_a_layer_without_a_name_is_refused(tmp_path):
    """A `layers.json` naming a layer "" (or blanks) was read, and the analysis and report
    ran with a layer no flag, layer map or table can name."""
    import json

    from saeatlas.errors import StoreError
    from saeatlas.store import ActivationStore

    npy = tmp_path / "acts.npy"
    np.save(npy, np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32))
    for name in ("", "  "):
        layers = [{"name": "a", "start": 0, "stop": 3}, {"name": name, "start": 3, "stop": 6}]
        (tmp_path / "acts.layers.json").write_text(json.dumps(layers))
        with pytest.raises(StoreError, match=r"columns 3:6\) has the name .*give every layer"):
            ActivationStore.open(npy)


def test_a_sweep_stopped_with_one_member_says_one_member(tmp_path, caplog):
    from saeatlas.sweep.members import kept_members

    (tmp_path / "k-8" / "seed-0").mkdir(parents=True)
    (tmp_path / "k-8" / "seed-0" / "cfg.json").write_text("{}")
    with caplog.at_level("WARNING"):
        assert kept_members(tmp_path)
    assert "stopped with 1 member finished (k-8/seed-0); it stays in" in caplog.text, caplog.text
    assert "continues from it." in caplog.text
