"""Output directories are always the complete old one or the complete new one."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from saeatlas.store.atomic import partial_dir, replacing_dir
from saeatlas.structure.atlas import Atlas


def _atlas(n: int) -> Atlas:
    return Atlas(
        units=pd.DataFrame({"unit": range(n), "module": [-1] * n}),
        features=pd.DataFrame({"feature": [0], "module": [-1]}),
        modules=pd.DataFrame({"module": pd.Series([], dtype=int)}),
        summary={"n_modules": 0, "marker": n},
    )


def test_a_failed_overwrite_leaves_the_old_atlas_whole(tmp_path, monkeypatch):
    import saeatlas.structure.atlas as atlas_module

    _atlas(3).save(tmp_path / "atlas")
    (tmp_path / "atlas" / "report.html").write_text("old report")
    real = atlas_module.atomic_write_json

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # while the new atlas.json is written

    monkeypatch.setattr(atlas_module, "atomic_write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        _atlas(5).save(tmp_path / "atlas", overwrite=True)
    monkeypatch.setattr(atlas_module, "atomic_write_json", real)
    old = Atlas.load(tmp_path / "atlas")
    assert old.summary["marker"] == 3 and (tmp_path / "atlas" / "report.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas"]
    _atlas(5).save(tmp_path / "atlas", overwrite=True)
    new = Atlas.load(tmp_path / "atlas")
    assert new.summary["marker"] == 5 and len(new.units) == 5
    assert not (tmp_path / "atlas" / "report.html").exists()  # the old atlas's report went with it


def test_a_half_written_atlas_of_an_older_version_is_replaced(tmp_path):
    half = tmp_path / "atlas"
    half.mkdir()
    _atlas(2).units.to_parquet(half / "units.parquet")  # killed before atlas.json
    (half / ".tmp-features.parquet-x1").write_bytes(b"")
    _atlas(4).save(half)
    assert Atlas.load(half).summary["marker"] == 4
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(Exception, match="not an atlas"):
        _atlas(4).save(other)
    assert (other / "notes.txt").read_text() == "keep"


def test_a_stale_partial_directory_of_a_killed_writer_is_cleared(tmp_path):
    stale = partial_dir(tmp_path / "out")
    stale.mkdir()
    (stale / "junk").write_text("half")
    with replacing_dir(tmp_path / "out") as new:
        assert list(new.iterdir()) == []
        (new / "done").write_text("yes")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (tmp_path / "out" / "done").read_text() == "yes"


def test_the_old_directory_stays_until_the_new_one_is_complete(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "v").write_text("1")
    with pytest.raises(RuntimeError):
        with replacing_dir(out) as new:
            (new / "v").write_text("2")
            assert (out / "v").read_text() == "1"
            raise RuntimeError("the writer fails")
    assert (out / "v").read_text() == "1"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_a_failed_sweep_keeps_the_old_sweep(tmp_path, outputs):
    import shutil

    from saeatlas.sweep import sweep
    from saeatlas.train import TrainConfig

    shutil.copytree(outputs.sweep, tmp_path / "sweep")
    before = (tmp_path / "sweep" / "sweep.json").read_text()
    with pytest.raises(Exception, match="cannot exceed"):
        sweep(
            outputs.store,
            TrainConfig(d_sae=24, tokens=256, batch_size=64),
            "k",
            [4, 40],
            tmp_path / "sweep",
            seeds=1,
            overwrite=True,
            progress=False,
        )
    assert (tmp_path / "sweep" / "sweep.json").read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["sweep"]


def test_saving_an_sae_never_replaces_a_folder_of_other_files(tmp_path, outputs):
    from saeatlas.sae import SparseAutoencoder

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(Exception, match="not an SAE's"):
        SparseAutoencoder.load(outputs.sae).save(mine)
    assert (mine / "notes.txt").read_text() == "keep"


def test_run_finishes_a_swap_killed_between_its_renames(tmp_path, make_store):
    """`saeatlas run` sees the store complete, not missing, after such a kill."""
    from saeatlas.pipeline.outputs import store_complete

    store = make_store(tmp_path / "store")
    os.replace(store, partial_dir(store))  # the complete new store, not yet renamed in
    (tmp_path / ".store.old").mkdir()  # the old one, renamed aside
    assert store_complete(store)
    assert sorted(os.listdir(tmp_path)) == ["store"]


def test_a_lock_file_that_is_a_link_is_not_written_through(tmp_path):
    """The lock's pid was written through a link named like the lock file: a file of
    the user's, where the link pointed, lost its bytes."""
    from saeatlas.store.lock import LockError, output_lock

    (tmp_path / "mine.txt").write_text("keep me")
    (tmp_path / ".out.lock").symlink_to(tmp_path / "mine.txt")
    with pytest.raises(LockError, match="is a symbolic link.*remove the link"):
        with output_lock(tmp_path / "out"):
            pass
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_a_link_to_an_sae_directory_is_written_through_and_kept(
    tmp_path, outputs, run_cli, another_writer
):
    """The SAE was swapped in at the link's place: the link was gone, and the checkpoint
    written through it stayed in the folder it named, as an interrupted run."""
    cli, one_line = run_cli
    (tmp_path / "big-disk").mkdir()
    (tmp_path / "sae").symlink_to(tmp_path / "big-disk")
    args = ["train", "--acts", outputs.store, "--out", tmp_path / "sae", "--seeds", "1"]
    args += ["--d-sae", "8", "--k", "2", "--tokens", "256", "--batch-size", "32", "-q"]
    with another_writer(tmp_path / "big-disk"):  # a writer of the folder the link names
        one_line(cli(*args, "--checkpoint-every", "2"), "being written by")
    result = cli(*args, "--checkpoint-every", "2")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sae").is_symlink()
    assert sorted(os.listdir(tmp_path / "big-disk")) == [
        "cfg.json",
        "metrics.jsonl",
        "sae_weights.safetensors",
    ]


def test_an_sae_swap_killed_between_its_renames_is_finished_before_the_checks(
    tmp_path, outputs, run_cli
):
    """The final save of a run killed between its two renames left no SAE at --out: a
    plain rerun trained another and replaced the finished one without --overwrite, and
    --resume trained it again from the start instead of keeping it."""
    import shutil

    cli, one_line = run_cli
    flags = ["--acts", outputs.store, "--d-sae", "24", "--k", "4", "--tokens", "2048"]
    flags += ["--batch-size", "64", "-q", "--seeds", "1"]  # how outputs.sae was trained
    for name in ("plain", "resumed"):
        shutil.copytree(outputs.sae, tmp_path / f".{name}.partial")  # the new SAE, complete
        (tmp_path / f".{name}.old").mkdir()  # the run's folder, renamed aside
        (tmp_path / f".{name}.old" / "checkpoint.pt").write_bytes(b"the last checkpoint")
    one_line(cli("train", *flags, "--out", tmp_path / "plain"), "already holds an SAE")
    r = cli("train", *flags, "--out", tmp_path / "resumed", "--resume")
    assert r.exit_code == 0 and "Kept the complete" in r.output, r.output
    assert sorted(os.listdir(tmp_path)) == ["plain", "resumed"]
    for name in ("plain", "resumed"):
        for file in ("cfg.json", "sae_weights.safetensors"):
            assert (tmp_path / name / file).read_bytes() == (outputs.sae / file).read_bytes()


def test_a_reader_finishes_an_sae_swap_a_kill_interrupted(tmp_path, outputs):
    """After a kill between the two renames of `train --overwrite`, `evaluate` and
    `analyze` said 'is not an SAE directory': the complete new SAE waited beside it."""
    import shutil

    from saeatlas.sae import SparseAutoencoder

    shutil.copytree(outputs.sae, tmp_path / ".sae.partial")  # the new SAE, complete
    shutil.copytree(outputs.sae, tmp_path / ".sae.old")  # the old one, renamed aside
    (tmp_path / ".sae.old" / "cfg.json").write_text("{}")
    sae = SparseAutoencoder.load(tmp_path / "sae")
    assert sae.cfg.d_sae == SparseAutoencoder.load(outputs.sae).cfg.d_sae
    assert sorted(os.listdir(tmp_path)) == ["sae"]
    assert (tmp_path / "sae" / "cfg.json").read_bytes() == (outputs.sae / "cfg.json").read_bytes()


def test_another_saeatlas_output_given_as_a_store_is_named(tmp_path, outputs, run_cli):
    """`saeatlas info RUN_DIR` (or an atlas or SAE directory as --acts) said only 'not a
    saeatlas store'; it names what the directory is and where its store is."""
    import shutil

    cli, one_line = run_cli
    run = tmp_path / "run"
    shutil.copytree(outputs.store, run / "store")
    (run / "run.json").write_text("{}")
    one_line(cli("info", run), "is a run directory", f"'{run / 'store'}'")
    one_line(cli("info", outputs.atlas), "is an atlas", "saeatlas report")
    one_line(cli("info", outputs.sae), "is an SAE directory", "--sae")
    out = " ".join(cli("info", outputs.npy, "--verify").output.split())
    # a .npy has no sha256, statistics or rows.parquet of its own: it is read and checked
    assert "checked for NaN/Inf" in out and "rows.parquet" not in out


@pytest.mark.parametrize("command", ["capture", "train", "sweep", "run", "report"])
@pytest.mark.parametrize("inside", [False, True])
def test_an_output_through_a_loop_of_links_is_one_line(tmp_path, guarded, run_cli, command, inside):
    """--out at (or under) two symbolic links that name each other ended in Python's
    RuntimeError 'Symlink loop from ...' and a traceback."""
    cli, one_line = run_cli
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    out = tmp_path / "a" / "x" if inside else tmp_path / "a"
    (tmp_path / "run.yaml").write_text(
        f"model: {guarded.model}\ninputs: {guarded.inputs}\nlayers: ['1', '3']\n"
    )
    args = {
        "capture": ["capture", "--model", guarded.model, "--inputs", guarded.inputs],
        "train": ["train", "--acts", guarded.store],
        "sweep": ["sweep", "--acts", guarded.store, "--over", "k", "--values", "2", "4"],
        "run": ["run", tmp_path / "run.yaml"],
        "report": ["report", guarded.atlas],
    }[command]
    if command == "capture":
        args += ["--layers", "1"]
    quiet = [] if command == "report" else ["-q"]
    target = out / "r.html" if command == "report" else out
    one_line(cli(*args, "--out", target, *quiet), "loop of symbolic links")
