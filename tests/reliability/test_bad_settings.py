"""Bad settings, outputs, devices and resumes: one line, exit 1, before the work."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from saeatlas.errors import TrainingDiverged


@pytest.mark.parametrize(
    "flag,value,needle",
    [
        ("--lr", "nan", "--lr must be a finite number"),
        ("--lr", "inf", "--lr must be a finite number"),
        ("--lr", "-1", "--lr must be positive"),
        ("--k", "eight", "Invalid value for '--k'"),
        ("--k", "0", "--k must be positive"),
        ("--batch-size", "0", "--batch-size must be positive"),
        ("--grad-clip", "-1", "--grad-clip must be >= 0"),
        ("--lr-decay-start", "1.5", "--lr-decay-start must be in [0, 1]"),
        ("--auxk-coefficient", "nan", "finite"),
        ("--device", "banana", "Unknown --device 'banana'"),
        ("--architecture", "topK", "Unknown --architecture"),
        ("--d-sae", "4", "cannot exceed --d-sae"),
        # a float32 overflow in the optimiser, a torch seed overflow, an infinite FVU
        ("--lr", "1e300", "--lr must be in (0, 3.4e+38]"),
        ("--seed", str(2**64), "--seed must be an integer of at most 64 bits"),
        ("--batch-size", "1", "at least 2"),
    ],
)
def test_bad_training_flags(guarded, run_cli, flag, value, needle):
    cli, one_line = run_cli
    one_line(
        cli("train", "--acts", guarded.store, "--out", guarded.sae, "--overwrite", flag, value),
        needle,
    )


def test_a_layer_named_twice_is_refused(guarded, run_cli):
    """It trained a joint SAE that read the layer's units twice."""
    cli, one_line = run_cli
    args = ["--acts", guarded.store, "--out", guarded.sae, "--overwrite", "--layers", "1", "1"]
    one_line(cli("train", *args), "more than once")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["train", "evaluate", "capture"])
def test_cuda_without_cuda(guarded, run_cli, command):
    cli, one_line = run_cli
    o = guarded
    args = {
        "train": ["train", "--acts", o.store, "--out", o.sae, "--overwrite", "--device", "cuda"],
        "evaluate": ["evaluate", "--sae", o.sae, "--acts", o.store, "--device", "cuda"],
        "capture": [
            "capture",
            "--model",
            o.model,
            "--inputs",
            o.inputs,
            "--layers",
            "1",
            "--out",
            o.store,
            "--overwrite",
            "--device",
            "cuda:0",
        ],
    }[command]
    one_line(cli(*args), "no CUDA device")


@pytest.mark.parametrize(
    "text,needle",
    [
        ("k: [8\n", "not valid YAML at line"),
        ("k: 8\n  lr: 2\n", "not valid YAML at line 2"),
        ("lr: .nan\n", "finite"),
        ("lr: .inf\n", "finite"),
        ("colour: red\n", "unknown key `colour`"),
        ("k: eight\n", "`k` must be an integer"),
        ("- 1\n- 2\n", "must hold a mapping"),
        ("\x00\x01", "Config file"),
    ],
)
def test_bad_config_files(tmp_path, guarded, run_cli, text, needle):
    cli, one_line = run_cli
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    one_line(
        cli("train", "--acts", guarded.store, "--out", guarded.sae, "--overwrite", "--config", cfg),
        needle,
    )


def test_outputs_that_cannot_be_written_fail_before_the_work(tmp_path, guarded, run_cli):
    cli, one_line = run_cli
    afile = tmp_path / "file"
    afile.write_text("x")
    one_line(cli("train", "--acts", guarded.store, "--out", afile), "not a directory")
    one_line(cli("train", "--acts", guarded.store, "--out", afile / "sae"), "is a file")
    one_line(
        cli("analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", afile),
        "not a directory",
    )
    one_line(
        cli(
            "capture",
            "--model",
            guarded.model,
            "--inputs",
            guarded.inputs,
            "--layers",
            "1",
            "--out",
            afile / "s",
        ),
        "is a file",
    )
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    one_line(cli("train", "--acts", guarded.store, "--out", mine, "--overwrite"), "not an SAE's")
    one_line(
        cli("sweep", "--acts", guarded.store, "--out", mine, "--overwrite", "--values", "2", "4"),
        "not a sweep's",
    )
    assert (mine / "notes.txt").read_text() == "keep"
    one_line(cli("train", "--acts", guarded.store, "--out", guarded.sae), "already holds an SAE")
    one_line(
        cli("analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", guarded.atlas),
        "already holds an atlas",
    )
    one_line(
        cli("sweep", "--acts", guarded.store, "--out", guarded.sweep, "--values", "2", "4"),
        "already holds a sweep",
    )


@pytest.mark.parametrize("out", [".", "", "..", "sub/.."])
def test_the_current_folder_is_no_output(tmp_path, outputs, run_cli, monkeypatch, out):
    """`--out .` was refused for holding its own lock file '..lock', which stayed (an
    empty `--out`, an unset variable, is refused as empty: twenty-third sweep)."""
    cli, one_line = run_cli
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    why = "--out is empty" if out == "" else "current folder"
    one_line(cli("train", "--acts", outputs.store, "--out", out), why)
    assert [p.name for p in tmp_path.iterdir()] == ["sub"]
    # a capture once ran the model over every input, then failed to rename the folder
    capture = ["capture", "--model", outputs.model, "--inputs", outputs.inputs, "--layers", "1"]
    one_line(cli(*capture, "--out", out), why)
    assert [p.name for p in tmp_path.iterdir()] == ["sub"]


def test_outputs_inside_a_store_are_refused(guarded, run_cli):
    cli, one_line = run_cli
    inner = guarded.store / "inner"
    one_line(
        cli("capture", "--model", guarded.model, "--inputs", guarded.inputs, "--layers", "1",
            "--out", inner / "s"),
        "inside the activation store",
    )  # fmt: skip
    one_line(cli("train", "--acts", guarded.store, "--out", inner), "inside the activation store")


def test_an_output_without_a_name_is_locked_under_its_real_name(tmp_path, monkeypatch):
    from saeatlas.store.atomic import partial_dir
    from saeatlas.store.lock import lock_path

    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path / "out")
    assert lock_path(".") == lock_path("../out") == tmp_path / ".out.lock"
    assert partial_dir(".") == tmp_path / ".out.partial"


def test_the_lock_of_the_current_folder_lies_beside_it_and_goes(tmp_path, monkeypatch):
    """What `saeatlas report .` and `run --out .` lock: once './..lock', left behind
    (release looked for another name) and then refused as a foreign file."""
    from saeatlas.store.lock import output_lock

    (tmp_path / "atlas").mkdir()
    monkeypatch.chdir(tmp_path / "atlas")
    with output_lock("."):
        assert (tmp_path / ".atlas.lock").is_file()
    assert list(tmp_path.rglob("*lock*")) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_outputs_fail_before_the_work(tmp_path, guarded, run_cli):
    cli, one_line = run_cli
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        one_line(cli("train", "--acts", guarded.store, "--out", ro / "sae"), "not writable")
    finally:
        ro.chmod(0o755)


def test_a_full_disk_is_one_line_naming_the_path_and_keeps_the_old_sae(
    guarded, run_cli, monkeypatch
):
    import errno

    import saeatlas.sae.io as io

    cli, one_line = run_cli
    real = io.atomic_write_bytes

    def full(path, data):
        if str(path).endswith(".safetensors"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(io, "atomic_write_bytes", full)
    line = one_line(
        cli(
            "train",
            "--acts",
            guarded.store,
            "--out",
            guarded.sae,
            "--overwrite",
            "--d-sae",
            "24",
            "--k",
            "4",
            "--tokens",
            "512",
            "--batch-size",
            "64",
            "-q",
        ),
        "No space left on device",
        "sae_weights.safetensors",
    )
    assert ".partial" in line  # it names the file it was writing; the SAE itself is untouched


def test_a_full_disk_during_capture_keeps_the_shards_for_resume(
    tmp_path, outputs, run_cli, monkeypatch
):
    import errno

    import saeatlas.store.commit as commit_module

    cli, one_line = run_cli
    real, n = commit_module.write_shard, {"calls": 0}

    def full(path, x):
        n["calls"] += 1
        if n["calls"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, x)

    monkeypatch.setattr(commit_module, "write_shard", full)
    args = ["capture", "--model", outputs.model, "--inputs", outputs.inputs, "--layers", "1",
            "--out", tmp_path / "s", "--shard-rows", "128", "-q"]  # fmt: skip
    one_line(cli(*args), "No space left on device", "shard-00001", "--resume")
    monkeypatch.setattr(commit_module, "write_shard", real)
    assert cli(*args, "--resume").exit_code == 0
    from saeatlas.store import ActivationStore

    full_store = ActivationStore.open(outputs.store)
    resumed = ActivationStore.open(tmp_path / "s")
    assert torch.equal(resumed.read(), full_store.read(layers=["1"]))


def test_training_that_diverges_stops_and_keeps_the_last_good_checkpoint(
    tmp_path, outputs, monkeypatch
):
    from saeatlas.train import TrainConfig, train_sae
    from saeatlas.train.checkpoint import CHECKPOINT
    from saeatlas.train.run import _Run

    real = _Run.train_step

    def poisoned(self, batch):
        out = real(self, batch)
        if self.step >= 7:
            with torch.no_grad():
                self.sae.W_enc.fill_(float("nan"))
        return out

    monkeypatch.setattr(_Run, "train_step", poisoned)
    cfg = TrainConfig(d_sae=24, k=4, batch_size=32, tokens=32 * 12, checkpoint_every=3, log_every=1)
    with pytest.raises(TrainingDiverged, match=r"step 7 of 12.*`W_enc` has NaN.*checkpoint"):
        train_sae(outputs.store, cfg, tmp_path / "sae", progress=False)
    state = torch.load(tmp_path / "sae" / CHECKPOINT, weights_only=True)
    assert state["step"] == 6
    assert all(torch.isfinite(v).all() for v in state["sae"].values())
    assert not (tmp_path / "sae" / "cfg.json").exists()
    monkeypatch.setattr(_Run, "train_step", real)
    resumed = train_sae(outputs.store, cfg, tmp_path / "sae", resume=True, progress=False)
    assert torch.isfinite(resumed.sae.W_enc).all()


def test_a_huge_learning_rate_never_saves_nan_weights(tmp_path, guarded, run_cli):
    cli, one_line = run_cli
    one_line(
        cli(
            "train",
            "--acts",
            guarded.store,
            "--out",
            tmp_path / "sae",
            "--lr",
            "1e30",
            "--d-sae",
            "24",
            "--k",
            "4",
            "--tokens",
            "1024",
            "--batch-size",
            "64",
            "--optimizer",
            "adam",
            "-q",
        ),
        "Training diverged",
    )
    assert not (tmp_path / "sae" / "cfg.json").exists()


# -- run --check --------------------------------------------------------------------------------


def _run_config(tmp_path, outputs, extra):
    text = textwrap.dedent(
        f"""
        model: {outputs.model}
        inputs: {outputs.inputs}
        layers: ["1", "3"]
        """
    ) + textwrap.dedent(extra)
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "extra,needle",
    [
        ("sweep: {values: [4, 400]}\n", "exceed the SAE's 144 latents"),
        ("sweep: {values: [4, 8]}\ntrain: {d_sae: 6, k: 4}\n", "exceed `train.d_sae` 6"),
        ("sweep: {enabled: false}\ntrain: {k: 200, expansion_factor: 2}\n", "`train.k` [200]"),
        ("train: {checkpoint_every: 10}\n", "checkpoint_every"),
        ("train: {lr: .nan}\n", "finite"),
        ("train: {layers: ['5']}\n", "`train.layers` names ['5']"),
        ("sweep: {values: [4, .inf]}\n", "finite"),
    ],
)
def test_run_check_catches_what_would_fail_later(tmp_path, outputs, run_cli, extra, needle):
    cli, one_line = run_cli
    one_line(cli("run", _run_config(tmp_path, outputs, extra), "--check"), needle)


def test_run_check_finds_unknown_layers_with_a_dry_run(tmp_path, outputs, run_cli):
    cli, one_line = run_cli
    p = _run_config(tmp_path, outputs, "")
    p.write_text(p.read_text().replace('["1", "3"]', '["1", "mlp"]'))
    one_line(cli("run", p, "--check"), "'mlp'")
    p.write_text(p.read_text().replace('["1", "mlp"]', '["1", "3"]'))
    r = cli("run", p, "--check")
    assert r.exit_code == 0 and "valid (dry run: layers ['1', '3'] give 18 units" in r.output, (
        r.output
    )


# -- capture --resume of another job -------------------------------------------------------------


@pytest.fixture
def interrupted(tmp_path, outputs, monkeypatch):
    """An interrupted capture of the outputs' model and inputs at tmp_path/store."""
    import saeatlas.store.commit as commit_module
    from saeatlas.capture import CaptureConfig, capture_activations, load_inputs, load_model

    real = commit_module.write_shard
    n = {"calls": 0}

    def dying(*args):
        n["calls"] += 1
        if n["calls"] == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(commit_module, "write_shard", dying)
    model = load_model(outputs.model).model
    x = load_inputs(outputs.inputs)  # as the CLI reads them
    with pytest.raises(KeyboardInterrupt):
        capture_activations(
            model, x, ["1", "3"], tmp_path / "store", CaptureConfig(shard_rows=64), progress=False
        )
    monkeypatch.setattr(commit_module, "write_shard", real)
    return tmp_path / "store"


def _flip_last_byte(f):
    f.write_bytes(f.read_bytes()[:-1] + bytes([f.read_bytes()[-1] ^ 0x40]))


def _other_samples(f):
    import pyarrow.parquet as pq

    table = pq.read_table(f)
    i = table.column_names.index("sample")
    pq.write_table(table.set_column(i, "sample", table.column("sample")[::-1]), f)


COMMITTED_DAMAGE = {
    "shard bit flip": ("shard-00000.safetensors", _flip_last_byte, "sha256 differs"),
    "shard truncated": (
        "shard-00000.safetensors",
        lambda f: f.write_bytes(f.read_bytes()[:-40]),
        "sha256",
    ),
    "shard missing": ("shard-00000.safetensors", lambda f: f.unlink(), "missing"),
    "rows missing": (".parts/rows-00000.parquet", lambda f: f.unlink(), "row metadata"),
    "rows garbage": (".parts/rows-00000.parquet", lambda f: f.write_text("x"), "row metadata"),
    # as many rows, of other samples: only the count was checked, and the store took them
    "rows of other samples": (".parts/rows-00000.parquet", _other_samples, "row metadata"),
}


@pytest.mark.parametrize("damage", sorted(COMMITTED_DAMAGE))
def test_resume_refuses_a_damaged_committed_shard(outputs, interrupted, run_cli, damage):
    """The resume would otherwise swap in a store declared complete around the bad file."""
    from saeatlas.store.atomic import partial_dir

    cli, one_line = run_cli
    name, damage_file, needle = COMMITTED_DAMAGE[damage]
    damage_file(partial_dir(interrupted) / name)
    one_line(
        cli(*_capture(outputs, interrupted)), "Cannot resume", "shard-00000", needle, "--overwrite"
    )
    assert not interrupted.exists() and partial_dir(interrupted).is_dir()  # kept as it was


def test_resume_refuses_running_statistics_that_are_not_its_shards(outputs, interrupted, run_cli):
    """Only the shards and row parts were checked: a progress file whose moments were
    another input's (edited, or copied with its shards' list) gave the store their mean
    and std."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    from saeatlas.store.atomic import partial_dir

    cli, one_line = run_cli
    progress = partial_dir(interrupted) / "progress.safetensors"
    with safe_open(str(progress), framework="numpy") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["mean"] = tensors["mean"] + 1.0
    save_file(tensors, str(progress), metadata=meta)
    one_line(cli(*_capture(outputs, interrupted)), "Cannot resume", "running statistics", "mean")


def test_resume_drops_temporary_files_a_kill_left(outputs, interrupted, run_cli):
    """A kill inside an atomic write leaves its temporary file; the store must not keep it."""
    from saeatlas.store.atomic import partial_dir

    cli, _ = run_cli
    work = partial_dir(interrupted)
    (work / ".tmp-shard-00001.safetensors-k1ll").write_bytes(b"x" * 1000)
    (work / ".tmp-progress.safetensors-k1ll").write_bytes(b"x")
    assert cli(*_capture(outputs, interrupted)).exit_code == 0
    assert not [p.name for p in interrupted.iterdir() if p.name.startswith(".tmp-")]


def _capture(outputs, store, inputs=None, model=None, layers=("1", "3")):
    return [
        "capture",
        "--model",
        model or outputs.model,
        "--inputs",
        inputs or outputs.inputs,
        "--layers",
        *layers,
        "--out",
        store,
        "--shard-rows",
        "64",
        "--resume",
        "-q",
    ]


def test_resume_refuses_another_job(tmp_path, outputs, interrupted, run_cli):
    cli, one_line = run_cli
    from saeatlas.store.atomic import partial_dir

    work = partial_dir(interrupted)
    before = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
    other = tmp_path / "other.npy"
    x = np.load(outputs.inputs)
    x[-1, 0] += 1  # one value differs, at the end
    np.save(other, x)
    one_line(cli(*_capture(outputs, interrupted, inputs=other)), "inputs differ")
    (tmp_path / "model2.py").write_text(
        (outputs.root / "model.py").read_text().replace("manual_seed(0)", "manual_seed(1)")
    )
    one_line(
        cli(*_capture(outputs, interrupted, model=f"{tmp_path / 'model2.py'}:build")),
        "model differ",
    )
    one_line(cli(*_capture(outputs, interrupted, layers=("1",))), "layers differ")
    assert {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()} == before
    r = cli(*_capture(outputs, interrupted))
    assert r.exit_code == 0, r.output
    from saeatlas.store import ActivationStore

    assert ActivationStore.open(interrupted).n_rows == 300


# -- locking, file modes --------------------------------------------------------------------------


def test_a_second_writer_fails_at_once_naming_the_first(tmp_path, outputs):
    from saeatlas.store.lock import output_lock

    out = tmp_path / "sae"
    with output_lock(out):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "saeatlas",
                "train",
                "--acts",
                str(outputs.store),
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    assert r.returncode == 1, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"being written by process {os.getpid()}" in lines[0], r.stderr
    assert not out.exists() and not (tmp_path / ".sae.lock").exists()


def test_a_second_writer_in_another_thread_is_refused(tmp_path, make_store):
    """Re-entrant within one thread (nested writers), refused across threads: a second
    capture with --overwrite would otherwise clear the first one's partial directory."""
    import threading

    from saeatlas.store.lock import LockError, output_lock

    out, errors = tmp_path / "store", []

    def second():
        try:
            make_store(out)
        except LockError as e:
            errors.append(str(e))

    with output_lock(out), output_lock(out):  # the same thread: re-entrant
        t = threading.Thread(target=second)
        t.start()
        t.join()
    assert len(errors) == 1 and "another thread of this process" in errors[0], errors
    assert not out.exists() and not (tmp_path / ".store.lock").exists()
    make_store(out)  # free again


def test_files_get_the_umask_mode_and_no_temporary_files_stay(tmp_path, outputs, run_cli):
    cli, _ = run_cli
    old = os.umask(0o027)
    try:
        r = cli(
            "train",
            "--acts",
            outputs.store,
            "--out",
            tmp_path / "sae",
            "--d-sae",
            "24",
            "--k",
            "4",
            "--tokens",
            "512",
            "--batch-size",
            "64",
            "-q",
        )
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    members = ["sae", "sae-seed1", "sae-seed2"]  # `train --seeds 3`, the default
    for member in members:
        names = sorted(p.name for p in (tmp_path / member).iterdir())
        assert names == ["cfg.json", "metrics.jsonl", "sae_weights.safetensors"], names
        for p in (tmp_path / member).iterdir():
            assert p.stat().st_mode & 0o777 == 0o640, (p.name, oct(p.stat().st_mode))
    # no partial, old or lock left
    assert sorted(p.name for p in tmp_path.iterdir()) == members


@pytest.mark.parametrize(
    "values,needle",
    [
        (["2", "nan"], "finite positive"),
        (["2", "inf"], "finite positive"),
        (["2.5", "4"], "whole numbers"),
        (["0", "4"], "finite positive"),
        (["2", "4", "2.0"], "repeats [2.0]"),  # two members in one directory
    ],
)
def test_bad_sweep_values(guarded, run_cli, values, needle):
    cli, one_line = run_cli
    one_line(
        cli(
            "sweep",
            "--acts",
            guarded.store,
            "--out",
            guarded.sweep,
            "--overwrite",
            "--values",
            *values,
        ),
        needle,
    )


@pytest.mark.parametrize("arch,over", [("topk", "l1_coefficient"), ("relu", "k")])
def test_a_sweep_over_a_setting_the_architecture_ignores_is_refused(guarded, run_cli, arch, over):
    cli, one_line = run_cli
    args = ["--acts", guarded.store, "--out", guarded.sweep, "--overwrite", "--values", "1", "2"]
    one_line(cli("sweep", *args, "--over", over, "--architecture", arch), "every member")


def test_a_sweep_of_k_runs_with_a_d_sae_below_the_default_k(tmp_path, outputs, run_cli):
    """The base config once kept k's default (32) and refused --d-sae 8 before sweeping."""
    cli, _ = run_cli
    r = cli(
        *("sweep", "--acts", outputs.store, "--out", tmp_path / "sw", "--values", "2", "4"),
        *("--d-sae", "8", "--seeds", "1", "--extend", "0", "--tokens", "256", "-q"),
    )
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "sw").iterdir() if p.is_dir()) == ["k-2", "k-4"]


def test_resume_of_an_iterable_checks_its_first_batch(tmp_path):
    """A DataLoader's content is not known up front: the first batch's hash is."""
    from saeatlas.capture import CaptureConfig, capture_activations

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU())
    x = torch.randn(60, 4, generator=torch.Generator().manual_seed(0))

    class Batches:
        def __init__(self, data, die_at=None):
            self.data, self.die_at = data, die_at

        def __iter__(self):
            for i in range(0, len(self.data), 10):
                if i // 10 == self.die_at:
                    raise KeyboardInterrupt
                yield self.data[i : i + 10]

    cfg = CaptureConfig(shard_rows=15)
    with pytest.raises(KeyboardInterrupt):
        capture_activations(model, Batches(x, die_at=4), ["1"], tmp_path / "s", cfg, progress=False)
    with pytest.raises(Exception, match="its first batch is another"):
        capture_activations(
            model, Batches(x + 1), ["1"], tmp_path / "s", cfg, resume=True, progress=False
        )
    store = capture_activations(
        model, Batches(x), ["1"], tmp_path / "s", cfg, resume=True, progress=False
    )
    assert store.n_rows == 60


def test_an_sae_too_large_for_the_machine_is_refused_before_allocating(guarded, run_cli):
    cli, one_line = run_cli
    args = ["train", "--acts", guarded.store, "--out", guarded.sae, "--overwrite", "--k", "4"]
    one_line(cli(*args, "--d-sae", str(10**11)), "needs about", "GiB")


def test_running_out_of_memory_is_one_line(guarded, run_cli, monkeypatch):
    import saeatlas.train.run as run_module

    cli, one_line = run_cli

    def no_memory(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 7200000000000 bytes."
        )

    monkeypatch.setattr(run_module, "SparseAutoencoder", no_memory)
    args = ["train", "--acts", guarded.store, "--out", guarded.sae, "--overwrite"]
    one_line(cli(*args), "Out of memory", "--batch-size")


# -- damaged training checkpoints -----------------------------------------------------------------


def test_resume_refuses_a_store_whose_rows_changed(
    tmp_path, outputs, run_cli, interrupt, checkpoint_flags
):
    """The same path and number of rows, other values: the resume once went on with them."""
    cli, one_line = run_cli
    acts = tmp_path / "acts.npy"
    np.save(acts, np.load(outputs.npy))
    file = interrupt(acts, tmp_path / "sae", *checkpoint_flags)
    np.save(acts, np.load(outputs.npy) * 1.5)
    r = cli("train", "--acts", acts, "--out", file.parent, *checkpoint_flags, "--resume")
    one_line(r, "the store's rows differ")


CHECKPOINT_DAMAGE = {
    "not a dict": (lambda s: [1, 2], "holds a list"),
    "no sae state": (lambda s: {k: v for k, v in s.items() if k != "sae"}, "KeyError: 'sae'"),
    "W_enc of another shape": (
        lambda s: {**s, "sae": {**s["sae"], "W_enc": torch.zeros(3, 3)}},
        "size mismatch for W_enc",
    ),
    "step past the end": (lambda s: {**s, "step": 10**9}, "`step` is 1000000000"),
    "negative step": (lambda s: {**s, "step": -5}, "`step` is -5"),
    "rng state of another size": (
        lambda s: {**s, "torch_rng": torch.zeros(3, dtype=torch.uint8)},
        "RNG state",
    ),
    "optimiser without groups": (
        lambda s: {**s, "opt": {"state": {}, "param_groups": []}},
        "parameter groups",
    ),
}


@pytest.mark.parametrize("damage", sorted(CHECKPOINT_DAMAGE))
def test_a_damaged_checkpoint_is_one_line_and_stays(run_cli, resume_edited, damage):
    _, one_line = run_cli
    edit, needle = CHECKPOINT_DAMAGE[damage]
    one_line(resume_edited(edit), "checkpoint", needle)


def test_a_checkpoint_that_is_a_folder_is_named_when_resuming(
    checkpointed, outputs, run_cli, checkpoint_flags
):
    cli, one_line = run_cli
    file, _ = checkpointed
    file.unlink()
    file.mkdir()
    r = cli("train", "--acts", outputs.store, "--out", file.parent, *checkpoint_flags, "--resume")
    one_line(r, "is not a readable checkpoint")


def test_a_sibling_checkpoint_of_other_settings_stops_before_any_training(
    tmp_path, outputs, run_cli, interrupt, checkpoint_flags
):
    """--seeds 2 --resume trained the first SAE, then refused the second's checkpoint."""
    cli, one_line = run_cli
    interrupt(outputs.store, tmp_path / "sae-seed1", *checkpoint_flags)  # seed 0, not 1
    flags = [*checkpoint_flags[2:], "--seeds", "2", "--resume"]  # the flags start with --seeds 1
    r = cli("train", "--acts", outputs.store, "--out", tmp_path / "sae", *flags)
    one_line(r, "--seeds 2 also writes", "other settings")
    assert not (tmp_path / "sae").exists()


@pytest.mark.parametrize("what", ["other settings", "a damaged state"])
def test_resume_with_overwrite_starts_again_what_cannot_be_continued(
    tmp_path, checkpointed, outputs, run_cli, what, checkpoint_flags
):
    """--resume --overwrite was refused and told to pass --overwrite; it now continues
    what can be continued and trains the rest from the start, like a fresh run."""
    cli, _ = run_cli
    file, state = checkpointed
    flags = [*checkpoint_flags]
    if what == "other settings":
        flags[flags.index("--k") + 1] = "3"
    else:
        torch.save({**state, "step": -1}, file)
    r = cli(
        "train", "--acts", outputs.store, "--out", file.parent, *flags, "--resume", "--overwrite"
    )
    assert r.exit_code == 0, r.output
    fresh = cli("train", "--acts", outputs.store, "--out", tmp_path / "fresh", *flags)
    assert fresh.exit_code == 0, fresh.output
    assert (tmp_path / "fresh" / "sae_weights.safetensors").read_bytes() == (
        file.parent / "sae_weights.safetensors"
    ).read_bytes()
    assert not file.exists()


@pytest.mark.parametrize("value", ["nan", "-5", "inf"])
def test_a_bad_run_timeout_is_refused_before_the_run(tmp_path, outputs, run_cli, value):
    """`run --timeout nan` (or -5) was taken in one process and ignored, then failed
    with a traceback under torchrun; inf passed every check and overflowed there."""
    cli, one_line = run_cli
    out = tmp_path / "out"
    p = _run_config(tmp_path, outputs, "")
    one_line(cli("run", p, "--out", out, "--timeout", value, "-q"), "--timeout")
    assert not out.exists()


def test_a_config_that_is_a_directory_is_named_as_one(tmp_path, outputs, run_cli):
    """It was reported as a file that 'does not exist'."""
    cli, one_line = run_cli
    one_line(cli("run", tmp_path, "--out", tmp_path / "out", "-q"), "is a directory")
    one_line(
        cli("train", "--acts", outputs.store, "--out", tmp_path / "o", "--config", tmp_path),
        "is a directory",
    )
