"""Tenth hostile sweep, training half: resumes that change the number of ranks, a
sweep killed between its members and continued with --resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TRAIN_FLAGS = ["--seeds", "1", "--d-sae", "8", "--k", "2", "--batch-size", "32", "-q"]
TRAIN_FLAGS += ["--tokens", "640", "--checkpoint-every", "5"]


def _set_ranks(file, ranks):
    state = torch.load(file, weights_only=True)
    if ranks is None:
        del state["settings"]["world_size"]
    else:
        state["settings"]["world_size"] = ranks
    torch.save(state, file)


def test_a_two_rank_checkpoint_is_not_resumed_by_one_process(tmp_path, outputs, run_cli, interrupt):
    """The checkpoint did not record how many ranks wrote it: a one-process --resume of a
    `torchrun --nproc_per_node 2` training went on with another share of each batch."""
    cli, one_line = run_cli
    file = interrupt(outputs.store, tmp_path / "sae", *TRAIN_FLAGS)
    assert torch.load(file, weights_only=True)["settings"]["world_size"] == 1
    _set_ranks(file, 2)
    before = file.read_bytes()
    r = cli("train", "--acts", outputs.store, "--out", file.parent, *TRAIN_FLAGS, "--resume")
    one_line(r, "on 2 processes", "runs on 1 process", "--nproc_per_node 2", "--overwrite")
    assert file.read_bytes() == before


def test_a_checkpoint_from_before_the_world_size_still_resumes(
    tmp_path, outputs, run_cli, interrupt
):
    cli, _ = run_cli
    file = interrupt(outputs.store, tmp_path / "sae", *TRAIN_FLAGS)
    _set_ranks(file, None)
    r = cli("train", "--acts", outputs.store, "--out", file.parent, *TRAIN_FLAGS, "--resume")
    assert r.exit_code == 0, r.output
    assert not file.exists() and (file.parent / "cfg.json").is_file()


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no cleanup either."""


SWEEP_FLAGS = ["--over", "k", "--values", "2", "4", "8", "--seeds", "2", "--extend", "0"]
SWEEP_FLAGS += ["--d-sae", "8", "--batch-size", "32", "--tokens", "320", "-q"]


def test_a_sweep_killed_in_its_third_member_resumes_without_training_again(
    tmp_path, outputs, run_cli, monkeypatch
):
    """`sweep` had no --resume: a sweep killed in its third member (of six) lost the
    members it had finished and trained all six again."""
    import importlib
    import json

    import saeatlas.store.atomic as atomic

    sweep_module = importlib.import_module("saeatlas.sweep.members")
    from saeatlas.sae import SparseAutoencoder
    from saeatlas.store.atomic import partial_dir

    cli, _ = run_cli
    r = cli("sweep", "--acts", outputs.store, "--out", tmp_path / "full", *SWEEP_FLAGS)
    assert r.exit_code == 0, r.output

    real_save, saves = SparseAutoencoder.save, []

    def dying(self, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 3:
            monkeypatch.setattr(atomic, "_remove", lambda p: None)  # a kill cleans nothing
            raise Killed
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(SparseAutoencoder, "save", dying)
    out = tmp_path / "sw"
    with pytest.raises(Killed):
        cli("sweep", "--acts", outputs.store, "--out", out, *SWEEP_FLAGS)
    monkeypatch.undo()
    new = partial_dir(out)
    assert not out.exists() and (new / "k-2" / "seed-1" / "cfg.json").is_file()
    # a finished member that is damaged afterwards is trained again, not trusted
    weights = new / "k-2" / "seed-1" / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])

    real_family, trained = sweep_module.train_family, []

    def counting(store, configs, outs, **kw):
        trained.extend(str(Path(o).relative_to(new)) for o in outs)
        return real_family(store, configs, outs, **kw)

    monkeypatch.setattr(sweep_module, "train_family", counting)
    r = cli("sweep", "--acts", outputs.store, "--out", out, *SWEEP_FLAGS, "--resume")
    assert r.exit_code == 0, r.output
    assert "k-2/seed-0" not in trained and len(trained) == 5, trained
    assert not new.exists()
    full, mine = (json.loads((d / "sweep.json").read_text()) for d in (tmp_path / "full", out))
    for a, b in zip(full["points"], mine["points"]):
        assert {k: v for k, v in a.items() if k != "path"} == {
            k: v for k, v in b.items() if k != "path"
        }
    for member in ("k-2/seed-0", "k-2/seed-1", "k-8/seed-1"):
        one = SparseAutoencoder.load(tmp_path / "full" / member).state_dict()
        for name, value in SparseAutoencoder.load(out / member).state_dict().items():
            assert torch.equal(one[name], value), (member, name)


def test_a_full_disk_in_a_sweep_keeps_its_finished_members_for_resume(
    tmp_path, outputs, run_cli, monkeypatch
):
    """A sweep that failed (a full disk while its fourth member was saved) removed the
    three members it had finished: the sweep had to be trained whole again."""
    import errno
    import importlib

    import saeatlas.sae.io as io
    from saeatlas.store.atomic import partial_dir

    sweep_module = importlib.import_module("saeatlas.sweep.members")
    cli, one_line = run_cli
    real, writes = io.atomic_write_bytes, []

    def full(path, data):
        if str(path).endswith(".safetensors"):
            writes.append(path)
            if len(writes) == 4:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(io, "atomic_write_bytes", full)
    out = tmp_path / "sw"
    args = ["sweep", "--acts", outputs.store, "--out", out, *SWEEP_FLAGS]
    one_line(cli(*args), "No space left on device", "saeatlas sweep --resume")
    monkeypatch.undo()
    assert len(list(partial_dir(out).glob("*/seed-*/cfg.json"))) == 3 and not out.exists()
    real_family, trained = sweep_module.train_family, []

    def counting(store, configs, outs, **kw):
        trained.extend(outs)
        return real_family(store, configs, outs, **kw)

    monkeypatch.setattr(sweep_module, "train_family", counting)
    assert cli(*args, "--resume").exit_code == 0
    assert len(trained) == 3 and not partial_dir(out).exists()
    assert len(list(out.glob("*/seed-*/cfg.json"))) == 6


def test_yaml_words_read_as_booleans_where_text_is_expected_say_to_quote_them(
    tmp_path, outputs, run_cli
):
    """A layer named `no` (or `0`) in a YAML config read as false (or 0): the error said
    `layers` must be a list of text, got [False, True], and not why."""
    from saeatlas.errors import ConfigError
    from saeatlas.pipeline.config import load_run_config

    cli, one_line = run_cli
    run = tmp_path / "run.yaml"
    run.write_text(f"model: {outputs.model}\ninputs: {outputs.inputs}\nlayers: [no, on]\n")
    with pytest.raises(ConfigError, match=r"got \[False, True\]\. YAML reads unquoted no, yes"):
        load_run_config(run)
    cfg = tmp_path / "train.yaml"
    cfg.write_text("train: {normalize: off}\n")
    args = ["train", "--acts", outputs.store, "--out", tmp_path / "sae", "--config", cfg]
    one_line(cli(*args), "`normalize` must be text, got False", "quote a name")


def test_a_run_interrupted_in_its_sweep_keeps_the_members_it_finished(tmp_path, monkeypatch):
    """`saeatlas run` again after its sweep stage was stopped trained every member again
    (the run's sweep passed no --resume)."""
    from types import SimpleNamespace

    from saeatlas.pipeline import stages

    calls = []
    monkeypatch.setattr(stages, "sweep", lambda *a, **kw: calls.append(kw) or 1 / 0)
    section = SimpleNamespace(over="k", values=(2, 4), seeds=1, heldout_fraction=0.1, extend=0)
    for resume in (True, False):
        ctx = SimpleNamespace(
            config=SimpleNamespace(sweep=section, train=None),
            paths=SimpleNamespace(sweep=tmp_path / "sweep"),
            store=lambda: None,
            progress=False,
            resume=resume,
        )
        with pytest.raises(ZeroDivisionError):
            stages.run_sweep(ctx)
    assert [c["resume"] for c in calls] == [True, False]


def test_train_seeds_refuses_a_later_members_checkpoint_of_other_ranks_before_training(
    tmp_path, outputs, run_cli, interrupt
):
    """`train --seeds 2 --resume` checks every member's checkpoint before it trains the
    first; the number of ranks was not among what it checked."""
    cli, one_line = run_cli
    file = interrupt(outputs.store, tmp_path / "sae-seed1", *TRAIN_FLAGS, "--seed", "1")
    _set_ranks(file, 2)
    flags = list(TRAIN_FLAGS)
    flags[flags.index("--seeds") + 1] = "2"  # an option given twice is refused now
    args = ["train", "--acts", outputs.store, "--out", tmp_path / "sae", *flags]
    one_line(cli(*args, "--resume"), "sae-seed1", "on 2 processes")
    assert not (tmp_path / "sae").exists()


def test_sweep_resume_of_a_complete_sweep_says_there_is_nothing_to_continue(
    tmp_path, outputs, run_cli
):
    cli, one_line = run_cli
    out = tmp_path / "sw"
    flags = ["--values", "2", "8", "--seeds", "1", "--extend", "0", "--d-sae", "8", "-q"]
    args = ["sweep", "--acts", outputs.store, "--out", out, *flags, "--tokens", "320"]
    assert cli(*args).exit_code == 0
    one_line(cli(*args, "--resume"), "holds a complete sweep", "nothing to continue")


def test_a_resume_with_another_setting_names_that_setting(tmp_path, outputs, run_cli, interrupt):
    """`train --resume --lr 0.01` said only 'other settings (['train_config'])': not which
    of its thirty fields."""
    cli, one_line = run_cli
    file = interrupt(outputs.store, tmp_path / "sae", *TRAIN_FLAGS)
    args = ["train", "--acts", outputs.store, "--out", file.parent, *TRAIN_FLAGS]
    one_line(cli(*args, "--resume", "--lr", "0.01"), "`lr` None in the checkpoint, 0.01 now")
