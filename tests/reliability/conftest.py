"""Shared parts of the reliability suite: small complete outputs to protect, the CLI
run in-process, and the checks every bad input must pass (issue 15):

- exit code 1, one line on stderr that starts with ``Error:``, no traceback;
- no file of an existing output changed (bytes and modes), and no stray files.
"""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from saeatlas.cli import app

runner = CliRunner()

MODEL_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn

    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU())
    """
)


#: The layers of the protected store (the model's ``1`` and ``3``), for .npy copies.
LAYERS = [{"name": "1", "start": 0, "stop": 10}, {"name": "3", "start": 10, "stop": 18}]


def cli(*args: object) -> object:
    """Run ``saeatlas ARGS`` in-process; the result has ``exit_code`` and ``output``."""
    return runner.invoke(app, [str(a) for a in args])


#: Bad inputs checked in this session (the README's counts come from this line).
COUNTS = {"bad inputs": 0, "one-line errors": 0}


def assert_one_line_error(result: object, *needles: str) -> str:
    """Exit code 1, exactly one non-empty output line starting with ``Error:``, no
    traceback, and each of ``needles`` in it. Returns the line."""
    COUNTS["bad inputs"] += 1
    out = result.output
    lines = [line for line in out.splitlines() if line.strip()]
    assert result.exit_code == 1, f"exit {result.exit_code}: {out!r} {result.exception!r}"
    assert "Traceback" not in out, out
    assert len(lines) == 1 and lines[0].startswith("Error: "), out
    for n in needles:
        assert n in lines[0], (n, lines[0])
    COUNTS["one-line errors"] += 1
    return lines[0]


def pytest_sessionfinish(session):
    # The summary line is written by tests/conftest.py, which the main process loads
    # (under pytest-xdist the tests, and these counts, live in the workers).
    tally = session.config.__dict__.setdefault("reliability_counts", {})
    for k, v in COUNTS.items():
        tally[k] = tally.get(k, 0) + v
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["reliability_counts"] = dict(COUNTS)


def take_snapshot(root: Path, *, fast: bool = False) -> dict[str, tuple]:
    """Every file and folder under ``root``: relative path -> (sha256 of the bytes, or
    'dir'; mode), or with ``fast`` (size, mtime, inode, mode), which any write or
    rename changes too."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.stat()
            if fast:
                out[rel] = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode)
            else:
                digest = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
                out[rel] = (digest, st.st_mode)
    return out


@dataclass(frozen=True)
class Outputs:
    """Complete outputs of every kind, made once, that bad inputs must not touch."""

    root: Path
    model: str
    inputs: Path
    store: Path
    npy: Path
    sae: Path
    atlas: Path
    sweep: Path


def _tiny_atlas(path: Path) -> None:
    from saeatlas.structure.atlas import Atlas

    Atlas(
        units=pd.DataFrame(
            {"unit": [0, 1], "layer": ["a", "a"], "index": [0, 1], "module": [-1, -1]}
        ),
        features=pd.DataFrame({"feature": [0], "module": [-1], "density": [0.1]}),
        modules=pd.DataFrame({"module": pd.Series([], dtype=int)}),
        summary={"n_modules": 0, "message": "none"},
    ).save(path)


@pytest.fixture(scope="session")
def outputs(tmp_path_factory) -> Outputs:
    """A store (captured by the CLI), the same rows as a .npy, an SAE trained on them, a
    small atlas and a sweep directory, under one folder."""
    from saeatlas.store import ActivationStore

    root = tmp_path_factory.mktemp("outputs")
    (root / "model.py").write_text(MODEL_FILE)
    model = f"{root / 'model.py'}:build"
    x = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
    np.save(root / "inputs.npy", x)
    r = cli(
        "capture",
        "--model",
        model,
        "--inputs",
        root / "inputs.npy",
        "--layers",
        "1",
        "3",
        "--out",
        root / "store",
        "--shard-rows",
        "128",
        "-q",
    )
    assert r.exit_code == 0, r.output
    store = ActivationStore.open(root / "store")
    np.save(root / "acts.npy", store.read().numpy())
    (root / "acts.layers.json").write_text(json.dumps(LAYERS))
    r = cli(
        "train",
        "--acts",
        root / "store",
        "--out",
        root / "sae",
        "--d-sae",
        "24",
        "--k",
        "4",
        "--tokens",
        "2048",
        "--batch-size",
        "64",
        "-q",
    )
    assert r.exit_code == 0, r.output
    _tiny_atlas(root / "atlas")
    (root / "sweep").mkdir()
    (root / "sweep" / "sweep.json").write_text('{"points": []}\n')
    return Outputs(
        root,
        model,
        root / "inputs.npy",
        root / "store",
        root / "acts.npy",
        root / "sae",
        root / "atlas",
        root / "sweep",
    )


@pytest.fixture(scope="session")
def analysed(outputs, tmp_path_factory) -> Path:
    """A real atlas of the protected SAE and store (the protected one is too bare for a
    report), made once."""
    from saeatlas.structure import AtlasConfig, map_structure

    path = tmp_path_factory.mktemp("analysed") / "atlas"
    cfg = AtlasConfig(n_null=2, nulls=("permutation",), n_examples=2)
    return map_structure(outputs.sae, outputs.store, cfg).save(path)


@pytest.fixture
def guarded(outputs):
    """Fails the test if anything under the outputs' folder changed."""
    before = take_snapshot(outputs.root)
    yield outputs
    after = take_snapshot(outputs.root)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"bad input changed existing outputs: {changed[:10]}"


def small_store(path: Path, rows: int = 90, shard_rows: int = 32, seed: int = 0) -> Path:
    """A store of ``rows`` x 10 captured through the writer, in shards of ``shard_rows``."""
    from saeatlas.capture import CaptureConfig, capture_activations

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))
    x = torch.randn(rows, 4, generator=torch.Generator().manual_seed(seed))
    capture_activations(
        model,
        x,
        ["0", "2"],
        path,
        CaptureConfig(batch_size=7, shard_rows=shard_rows),
        progress=False,
    )
    return path


def two_modules(path: Path) -> Path:
    """An atlas of two modules over six units of one layer (tables alone: no store)."""
    from saeatlas.structure.atlas import Atlas

    units = pd.DataFrame(
        {"unit": range(6), "layer": "a", "index": range(6), "module": [0, 0, 1, 1, -1, -1]}
    )
    features = pd.DataFrame({"feature": range(4), "module": [0, 1, 1, -1]})
    modules = pd.DataFrame({"module": [0, 1], "n_units": [2, 2], "n_features": [1, 2]})
    summary = {"n_modules": 2, "layers": ["a"]}
    return Atlas(units=units, features=features, modules=modules, summary=summary).save(path)


@pytest.fixture
def two_modules_atlas():
    """:func:`two_modules`, for tests."""
    return two_modules


@pytest.fixture
def make_store():
    """:func:`small_store`, for tests (test modules here do not import each other)."""
    return small_store


@pytest.fixture
def save_acts(tmp_path):
    """Save an array as ``tmp_path/acts.npy``, with the store's layer map when it has 18
    columns (so the protected SAE reads it)."""

    def save(x: np.ndarray) -> Path:
        p = tmp_path / "acts.npy"
        np.save(p, x)
        layers = tmp_path / "acts.layers.json"
        if x.ndim == 2 and x.shape[1] == 18:
            layers.write_text(json.dumps(LAYERS))
        else:
            layers.unlink(missing_ok=True)
        return p

    return save


@pytest.fixture
def run_cli():
    """:func:`cli` and :func:`assert_one_line_error`."""
    return cli, assert_one_line_error


@pytest.fixture
def interrupt(monkeypatch):
    """``interrupt(acts, out, *flags)``: ``train --acts acts --out out *flags`` stopped by
    a KeyboardInterrupt at step 7 (``flags`` checkpoint before it); returns the
    checkpoint file."""
    from saeatlas.train.run import _Run

    def run(acts, out, *flags):
        real = _Run.train_step

        def dying(self, batch):
            if self.step == 7:
                raise KeyboardInterrupt
            return real(self, batch)

        monkeypatch.setattr(_Run, "train_step", dying)
        r = cli("train", "--acts", acts, "--out", out, *flags)
        monkeypatch.setattr(_Run, "train_step", real)
        file = Path(out) / "checkpoint.pt"
        assert r.exit_code != 0 and file.is_file(), r.output
        return file

    return run


#: A short training that checkpoints at step 5 (:func:`interrupt` stops it at step 7).
CHECKPOINT_FLAGS = ("--seeds", "1", "--d-sae", "8", "--k", "2", "--batch-size", "32", "-q")
CHECKPOINT_FLAGS += ("--tokens", "640", "--checkpoint-every", "5")


@pytest.fixture
def checkpoint_flags() -> list[str]:
    """:data:`CHECKPOINT_FLAGS`, for tests."""
    return list(CHECKPOINT_FLAGS)


@pytest.fixture
def checkpointed(tmp_path, outputs, interrupt):
    """The checkpoint of a run of :data:`CHECKPOINT_FLAGS` on the protected store,
    interrupted at step 7 (written at step 5), and its state."""
    file = interrupt(outputs.store, tmp_path / "sae", *CHECKPOINT_FLAGS)
    return file, torch.load(file, weights_only=True)


@pytest.fixture
def resume_edited(checkpointed, outputs, checkpoint_flags):
    """``resume_edited(edit)``: the checkpoint of :func:`checkpointed` with its state
    changed by ``edit``, then `train --resume` on it; returns the result, once it has
    checked that the checkpoint was left as it was."""

    def run(edit):
        file, state = checkpointed
        torch.save(edit(state), file)
        before = file.read_bytes()
        r = cli(
            "train", "--acts", outputs.store, "--out", file.parent, *checkpoint_flags, "--resume"
        )
        assert file.read_bytes() == before
        return r

    return run


@pytest.fixture
def unchanged(outputs):
    """``unchanged(before)``: assert the outputs' folder still matches ``before``, a
    ``snapshot`` taken by ``unchanged.take()`` (for hypothesis, whose examples share
    one fixture)."""

    class Check:
        @staticmethod
        def take() -> dict[str, tuple]:
            return take_snapshot(outputs.root, fast=True)

        def __call__(self, before: dict[str, tuple]) -> None:
            after = take_snapshot(outputs.root, fast=True)
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            assert not changed, f"bad input changed existing outputs: {changed[:10]}"

    return Check()


@pytest.fixture(scope="session")
def reference_store(tmp_path_factory) -> Path:
    """:func:`small_store` captured once without interruption: what every resume must equal."""
    return small_store(tmp_path_factory.mktemp("reference") / "store")


@pytest.fixture
def snapshot():
    """:func:`take_snapshot`, for tests (a test module cannot import this conftest by
    name: other folders' conftests are called ``conftest`` too)."""
    return take_snapshot


@pytest.fixture
def another_writer():
    """``with another_writer(path):`` another thread holds the lock of the output
    ``path`` for the block (a second writer in this process is refused like one in
    another process)."""
    from saeatlas.store.lock import output_lock

    @contextmanager
    def hold(path: Path):
        held, done = threading.Event(), threading.Event()

        def writer() -> None:
            with output_lock(path):
                held.set()
                done.wait(10)

        other = threading.Thread(target=writer)
        other.start()
        held.wait(10)
        try:
            yield
        finally:
            done.set()
            other.join()

    return hold


@pytest.fixture
def forbid(monkeypatch):
    """``forbid(module, "name")``: calling ``module.name`` fails the test (the work that an
    input refused up front must never reach)."""

    def set_never(module: object, name: str) -> None:
        def never(*args: object, **kwargs: object) -> None:
            raise AssertionError(f"{name} ran")

        monkeypatch.setattr(module, name, never)

    return set_never


@pytest.fixture
def edited_table_refused():
    """``edited_table_refused(atlas, name, change, needle)``: ``name``.parquet of the atlas
    directory rewritten as ``change(table)``, then ``report`` must end in one line holding
    ``needle`` and write no page."""

    def check(atlas: Path, name: str, change, needle: str) -> None:
        table = atlas / f"{name}.parquet"
        change(pd.read_parquet(table)).to_parquet(table, index=False)
        assert_one_line_error(cli("report", atlas), needle, "rerun `saeatlas analyze`")
        assert not (atlas / "report.html").exists()

    return check


@pytest.fixture(scope="session")
def one_layer_atlas(tmp_path_factory):
    """``one_layer_atlas(name)``: a folder holding ``acts.npy`` (100 rows of one layer
    called ``name``, 6 units), an SAE of it (``sae``) and its atlas (``atlas``)."""
    from saeatlas.structure import AtlasConfig, map_structure
    from saeatlas.train import TrainConfig, train_sae

    def make(name: str) -> Path:
        root = tmp_path_factory.mktemp("one-layer")
        x = np.random.default_rng(1).exponential(size=(100, 6)).astype(np.float32)
        np.save(root / "acts.npy", x)
        (root / "acts.layers.json").write_text(json.dumps([{"name": name, "start": 0, "stop": 6}]))
        cfg = TrainConfig(d_sae=10, k=3, tokens=400, batch_size=32)
        train_sae(root / "acts.npy", cfg, root / "sae", progress=False)
        atlas = AtlasConfig(n_null=2, nulls=("permutation",), n_examples=2)
        map_structure(root / "sae", root / "acts.npy", atlas).save(root / "atlas")
        return root

    return make


@pytest.fixture
def recorded_capture(tmp_path, outputs):
    """``recorded_capture(model=None)``: a run of ``model`` (default: the protected one) on
    a copy of the protected inputs (``tmp_path/x.npy``), layers '1' and '3', its store
    copied in and its capture stage recorded finished. Returns ``(cfg, state, decide)``;
    ``decide()`` is that stage's ``(outcome, resume, why)`` (outcome None: it runs)."""
    import shutil

    from saeatlas.pipeline import load_run_config
    from saeatlas.pipeline.outputs import RunPaths
    from saeatlas.pipeline.record import RunState, fingerprints, stage_settings
    from saeatlas.pipeline.run import _decide
    from saeatlas.pipeline.stamps import source_files

    def record(model: object = None) -> tuple:
        shutil.copy(outputs.inputs, tmp_path / "x.npy")
        p = tmp_path / "run.yaml"
        p.write_text(f"model: {model or outputs.model}\ninputs: x.npy\nlayers: ['1', '3']\n")
        cfg, paths = load_run_config(p), RunPaths(tmp_path / "run")
        shutil.copytree(outputs.store, paths.store)
        state, prints, settings = RunState(paths.state), fingerprints(cfg), stage_settings(cfg)
        state.start("capture", prints["capture"], settings["capture"], source_files(cfg))
        state.finish("capture", 0.0, "", None)
        return cfg, state, lambda: _decide("capture", cfg, paths, state, prints, settings, None)

    return record
