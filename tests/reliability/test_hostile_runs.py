"""The seventh hostile sweep's cases in capture, store, train, sweep and run: each
failed (a wrong result or a traceback) before its fix."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from saeatlas.sweep.sweep import sweep_members


def test_a_sweep_read_from_another_directory_gives_its_own_members(tmp_path, monkeypatch):
    """sweep.json records each member as the sweep saw its --out ('sw/k-2/seed-0',
    relative to where it ran); read from a directory holding another sweep of that name,
    the other sweep's members were taken, without a word (analyze --sweep)."""
    for where in ("a", "b"):
        for v in (2, 4):
            (tmp_path / where / "sw" / f"k-{v}" / "seed-0").mkdir(parents=True)
    points = [{"value": v, "path": f"sw/k-{v}/seed-0"} for v in (2, 4)]
    (tmp_path / "a" / "sw" / "sweep.json").write_text(json.dumps({"over": "k", "points": points}))
    monkeypatch.chdir(tmp_path / "b")
    over, members = sweep_members(tmp_path / "a" / "sw")
    assert over == "k"
    assert [p.resolve() for _, p in members] == [
        (tmp_path / "a" / "sw" / f"k-{v}" / "seed-0").resolve() for v in (2, 4)
    ]
    # the report finds the atlas's SAE among the same sweep's members, not the other's
    from saeatlas.report.data import _member
    from saeatlas.sweep.sweep import SweepPoint

    pts = [SweepPoint(v, f"sw/k-{v}/seed-0", 0.1, float(v), 0.0, None, True) for v in (2, 4)]
    assert _member(pts, str(tmp_path / "a" / "sw" / "k-4" / "seed-0"), tmp_path / "a" / "sw") == 1
    assert (
        _member(pts, str(tmp_path / "b" / "sw" / "k-4" / "seed-0"), tmp_path / "a" / "sw") is None
    )


@contextmanager
def _file_size_limit(n_bytes: int):
    """Writes past ``n_bytes`` fail in this process (EFBIG, as a full disk fails them):
    at the C level too, where torch's checkpoint writer works."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel ends the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


def test_a_full_disk_while_a_checkpoint_is_written_is_one_line_naming_it(
    tmp_path, outputs, run_cli
):
    """torch's writer turns a failed write into RuntimeError('unexpected pos ...'): a
    traceback; and a failed write names no file, so the line did not say which."""
    cli, one_line = run_cli
    out = tmp_path / "sae"
    args = ["train", "--acts", outputs.store, "--out", out, "--seeds", "1", "--d-sae", "24",
            "--k", "4", "--tokens", "1024", "--batch-size", "64", "--checkpoint-every", "2",
            "-q"]  # fmt: skip
    with _file_size_limit(4096):  # the checkpoint is larger; the lock file is not
        result = cli(*args)
    one_line(result, "checkpoint.pt", "File too large", "--resume")
    # no temporary file, and no empty --out folder: the first checkpoint made it
    assert not out.exists() and sorted(os.listdir(tmp_path)) == []
    assert cli(*args).exit_code == 0


def test_a_full_disk_while_the_manifest_is_written_names_it_and_resumes(
    tmp_path, outputs, run_cli, monkeypatch
):
    """fsync() reports a full disk (as on NFS) while manifest.json is written: the line
    named no file; the shards stay, and --resume completes the store."""
    cli, one_line = run_cli
    real = os.fsync

    def full(fd):
        if "manifest.json" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    args = ["capture", "--model", outputs.model, "--inputs", outputs.inputs, "--layers", "1",
            "3", "--out", tmp_path / "s", "--shard-rows", "128", "-q"]  # fmt: skip
    monkeypatch.setattr(os, "fsync", full)
    one_line(cli(*args), "No space left on device", "manifest.json")
    monkeypatch.setattr(os, "fsync", real)
    assert cli(*args, "--resume").exit_code == 0
    from saeatlas.store import ActivationStore

    resumed, whole = ActivationStore.open(tmp_path / "s"), ActivationStore.open(outputs.store)
    assert torch.equal(resumed.read(), whole.read())
    np.testing.assert_array_equal(resumed.mean, whole.mean)


@pytest.mark.parametrize("dtype", ["float8_e4m3fn", "float8_e5m2"])
def test_float8_safetensors_inputs_are_read_as_their_values(tmp_path, dtype):
    """NumPy has no float8: the tensor's .numpy() ended in a TypeError traceback."""
    from saeatlas.capture import load_inputs

    x = torch.randn(4, 6).to(getattr(torch, dtype))
    save_file({"inputs": x}, str(tmp_path / "x.safetensors"))
    np.testing.assert_array_equal(load_inputs(tmp_path / "x.safetensors"), x.float().numpy())


def test_safetensors_inputs_of_a_packed_dtype_are_one_line(tmp_path, outputs, run_cli):
    cli, one_line = run_cli
    if not hasattr(torch, "float4_e2m1fn_x2"):
        pytest.skip("this torch has no float4")
    x = torch.zeros(8, 3, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    save_file({"inputs": x}, str(tmp_path / "x.safetensors"))
    args = ["capture", "--model", outputs.model, "--inputs", tmp_path / "x.safetensors",
            "--layers", "1", "--out", tmp_path / "s", "-q"]  # fmt: skip
    one_line(cli(*args), "float4_e2m1fn_x2", "save it as float32")
    assert not (tmp_path / "s").exists()


def test_a_labels_npy_named_in_capitals_is_read_as_an_array(tmp_path):
    """--inputs X.NPY was read as an array, --labels L.NPY as text: 'not UTF-8 text'."""
    from saeatlas.capture import load_labels

    np.save(tmp_path / "labels.npy", np.arange(5) % 2)
    (tmp_path / "labels.npy").rename(tmp_path / "LABELS.NPY")
    np.testing.assert_array_equal(load_labels(tmp_path / "LABELS.NPY"), np.arange(5) % 2)


def test_inputs_refused_once_the_model_is_loaded_leave_no_files(tmp_path, outputs, run_cli):
    """A 0-d array was refused after the writer had taken the lock and made its partial
    directory: '.s.lock' and '.s.partial' stayed beside --out (and, from Python, the
    lock stayed held by the process)."""
    cli, one_line = run_cli
    np.save(tmp_path / "x.npy", np.float32(3))
    args = ["capture", "--model", outputs.model, "--inputs", tmp_path / "x.npy",
            "--layers", "1", "--out", tmp_path / "s", "-q"]  # fmt: skip
    one_line(cli(*args), "batch dimension")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_an_output_refused_before_its_work_leaves_no_empty_folder(tmp_path, run_cli):
    """The lock file's folder was made for an output whose work was then refused (too
    few rows to train): 'new/' stayed, empty. A capture removed its own; now every
    output's lock removes the folders it made, while they are empty."""
    cli, one_line = run_cli
    np.save(tmp_path / "few.npy", np.random.default_rng(0).normal(size=(10, 4)).astype("f4"))
    one_line(cli("train", "--acts", tmp_path / "few.npy", "--out", tmp_path / "new" / "sae"), "16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few.npy"]


def test_a_training_resumes_with_its_store_named_from_another_folder(
    tmp_path, outputs, run_cli, monkeypatch
):
    """The checkpoint recorded --acts as typed ('store'): the same store given as an
    absolute path, or from another folder, was refused as 'other settings (['store'])'."""
    from saeatlas.train.run import _Run

    cli, _ = run_cli
    flags = ["--out", tmp_path / "sae", "--seeds", "1", "--d-sae", "24", "--k", "4",
             "--tokens", "1024", "--batch-size", "64", "--checkpoint-every", "5", "-q"]  # fmt: skip
    real = _Run.train_step

    def dying(self, batch):
        if self.step == 7:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.chdir(outputs.root)
    monkeypatch.setattr(_Run, "train_step", dying)
    assert cli("train", "--acts", "store", *flags).exit_code != 0
    monkeypatch.setattr(_Run, "train_step", real)
    monkeypatch.chdir(tmp_path)
    r = cli("train", "--acts", outputs.store, *flags, "--resume")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("how", ["moved", "linked"])
def test_a_training_resumes_on_its_store_moved_or_named_through_a_link(
    tmp_path, outputs, run_cli, interrupt, how
):
    """The checkpoint knows the store's rows by their digest, but a store moved to
    another folder (or named through a link to it) was refused as 'other settings
    (['store'])', settings the user had not changed."""
    import shutil

    cli, _ = run_cli
    flags = ["--seeds", "1", "--d-sae", "24", "--k", "4", "--tokens", "1024",
             "--batch-size", "64", "--checkpoint-every", "5", "-q"]  # fmt: skip
    shutil.copytree(outputs.store, tmp_path / "store")
    interrupt(tmp_path / "store", tmp_path / "sae", *flags)
    (tmp_path / "store").rename(tmp_path / "moved")
    if how == "linked":
        (tmp_path / "link").symlink_to(tmp_path / "moved")
    acts = tmp_path / ("moved" if how == "moved" else "link")
    r = cli("train", "--acts", acts, "--out", tmp_path / "sae", *flags, "--resume")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("command", ["capture", "train"])
def test_an_output_whose_path_is_not_utf8_is_refused_before_the_work(
    tmp_path, outputs, run_cli, command
):
    """A Latin-1 byte in --out: capture ended in pyarrow's UnicodeEncodeError traceback
    at its first rows.parquet part; train saved an SAE that safetensors then refused to
    read ('Path ... is not valid UTF-8')."""
    cli, one_line = run_cli
    out = tmp_path / os.fsdecode(b"out\xff")
    if command == "capture":
        args = ["capture", "--model", outputs.model, "--inputs", outputs.inputs,
                "--layers", "1", "--out", out, "-q"]  # fmt: skip
    else:
        args = ["train", "--acts", outputs.store, "--out", out, "--seeds", "1", "-q"]
    one_line(cli(*args), "is not UTF-8", "Choose an output")
    assert list(tmp_path.iterdir()) == []


def test_a_lone_surrogate_in_a_jsonl_file_is_named_by_its_line(tmp_path):
    """JSON lets "\\ud800" stand alone: the text reached the tokenizer and the rows'
    Parquet writer and ended in a UnicodeEncodeError traceback."""
    from saeatlas.capture import load_inputs, load_labels
    from saeatlas.errors import InputsError

    (tmp_path / "t.jsonl").write_text('{"text": "ok"}\n{"text": "\\ud800abc"}\n')
    with pytest.raises(InputsError, match="line 2 holds '.ud800', half of a surrogate pair"):
        load_inputs(tmp_path / "t.jsonl")
    (tmp_path / "l.jsonl").write_text('"a"\n"\\udfff"\n')
    with pytest.raises(InputsError, match="line 2"):
        load_labels(tmp_path / "l.jsonl")


def test_a_yaml_alias_bomb_is_refused_in_one_short_line(tmp_path, run_cli):
    """Aliases nest 9**6 numbers in a few lines: the error quoted the whole value, a
    line of megabytes (minutes for 9**8)."""
    cli, one_line = run_cli
    nest = ["&a [1,1,1,1,1,1,1,1,1]"] + [
        f"&{b} [{','.join(['*' + a] * 9)}]" for a, b in zip("abcde", "bcdef")
    ]
    (tmp_path / "run.yaml").write_text(
        f"model: m.py:f\ninputs: x.npy\nlayers: [a]\nsweep: {{values: [{', '.join(nest)}]}}\n"
    )
    line = one_line(cli("run", tmp_path / "run.yaml", "--check"), "`sweep.values` must be")
    assert len(line) < 1000, len(line)
