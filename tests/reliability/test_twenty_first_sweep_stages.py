"""The twenty-first hostile sweep's cases in the later stages and the run orchestration
(evaluate, analyze's ablation, validate, run, sweep, and their ranks under torchrun):
each failed (a traceback, a wrong result, a hang or a misleading word) before its fix."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

RUN = {"sweep": {"enabled": False}, "stability": {"n_seed_saes": 0}}
RUN |= {"train": {"d_sae": 16, "k": 2, "tokens": 256, "batch_size": 64}}
RUN |= {"analyze": {"n_null": 0, "nulls": ["permutation"], "n_examples": 1}}
RUN |= {"ablation": {"enabled": False}, "report": {"enabled": False}}


def _config(tmp_path, outputs, **sections):
    """A small run config of the protected model and inputs (300 rows of 18 units)."""
    run = {"model": outputs.model, "inputs": str(outputs.inputs), "layers": ["1", "3"]}
    for name, section in {**RUN, **sections}.items():
        run[name] = {**RUN.get(name, {}), **section}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    return path


# -- OUT/run.json edited by hand ---------------------------------------------------------------

DAMAGED_RECORDS = {
    # refused as settings that changed, naming none: "run/store (capture: )"
    "a null fingerprint": ({"fingerprint": None}, "`stages.capture.fingerprint` is null"),
    "no fingerprint": ({}, "the record of stage 'capture' has no `fingerprint`"),
    # an AttributeError traceback
    "null files": ({"fingerprint": "0", "files": None}, "`stages.capture.files` is null"),
    # read as a finished stage
    "complete as text": (
        {"fingerprint": "0", "complete": "no"},
        '`stages.capture.complete` is "no"',
    ),
}


@pytest.mark.parametrize("check", [False, True], ids=["run", "run --check"])
@pytest.mark.parametrize("case", sorted(DAMAGED_RECORDS))
def test_a_damaged_run_record_names_its_field(tmp_path, outputs, run_cli, snapshot, case, check):
    """(`run --check` called the run directory valid.)"""
    cli, one_line = run_cli
    record, needle = DAMAGED_RECORDS[case]
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"format_version": 1, "stages": {"capture": record}}))
    before = snapshot(run)
    flags = ["--check"] if check else ["-q"]
    r = cli("run", _config(tmp_path, outputs), "--out", run, *flags)
    one_line(r, "is not a run record saeatlas can read", needle, "delete it")
    assert snapshot(run) == before


@pytest.mark.parametrize(
    ("version", "needle"),
    [(99, "has format_version 99; this saeatlas reads run records up to 1"), ("1", "not 1 or")],
)
def test_a_run_record_of_another_format_is_not_read_as_this_ones(
    tmp_path, outputs, run_cli, snapshot, version, needle
):
    """(the lead's) A `run.json` of a newer format was read as this version's."""
    cli, one_line = run_cli
    run = tmp_path / "run"
    run.mkdir()
    record = {"capture": {"fingerprint": "0", "complete": True}}
    (run / "run.json").write_text(json.dumps({"format_version": version, "stages": record}))
    before = snapshot(run)
    one_line(cli("run", _config(tmp_path, outputs), "--out", run, "--check"), needle)
    assert snapshot(run) == before


def test_a_sweep_that_is_off_decides_nothing_and_changes_read_as_yaml(tmp_path, outputs):
    """With `sweep.enabled: false`, `sweep.values` edited refused the run's complete SAE as
    made with other settings (and `--overwrite` trained it again); a changed setting was
    shown as Python shows it (`analyze.max_rows` was None), not as the config writes it."""
    import shutil
    from dataclasses import replace

    from saeatlas.errors import ConfigError
    from saeatlas.pipeline import load_run_config
    from saeatlas.pipeline.outputs import RunPaths
    from saeatlas.pipeline.record import RunState, fingerprints, stage_settings
    from saeatlas.pipeline.run import _refuse_changed

    old = load_run_config(_config(tmp_path, outputs))
    paths = RunPaths(tmp_path / "run")
    shutil.copytree(outputs.sae, paths.sae)
    shutil.copytree(outputs.atlas, paths.atlas)
    prints, settings = fingerprints(old), stage_settings(old)
    stages = {
        name: {"fingerprint": prints[name], "settings": settings[name], "complete": True}
        for name in ("train", "analyze")
    }
    paths.state.write_text(json.dumps({"format_version": 1, "stages": stages}))

    def refuse(cfg):
        state = RunState(paths.state)
        _refuse_changed(cfg, paths, state, fingerprints(cfg), stage_settings(cfg))

    new = replace(old, sweep=replace(old.sweep, values=(4.0, 8.0)))
    refuse(new)  # kept: the sweep is off
    with pytest.raises(ConfigError) as e:
        refuse(replace(new, analyze=replace(new.analyze, max_rows=150)))
    assert "(analyze: `analyze.max_rows` was null, now 150)" in str(e.value), e.value
    assert "(train:" not in str(e.value), e.value


OCCUPIED = {
    # refused when the analysis started, after the capture and the training had run
    "atlas": ("atlas/notes.txt", "'{run}/atlas' holds files that are not an atlas's"),
    "SAE": ("sae/notes.txt", "'{run}/sae' holds files that are not an SAE's"),
    "seed SAE": ("sae-seeds/seed-1/notes.txt", "'{run}/sae-seeds/seed-1' holds files"),
    # "Cannot write or read '.tmp-config.yaml-...': Is a directory. Check free space"
    "config.yaml": ("config.yaml/notes.txt", "'{run}/config.yaml' is not a file"),
}


@pytest.mark.parametrize("case", sorted(OCCUPIED))
def test_a_run_refuses_an_occupied_output_before_its_first_stage(tmp_path, outputs, run_cli, case):
    cli, one_line = run_cli
    file, needle = OCCUPIED[case]
    run = tmp_path / "run"
    (run / file).parent.mkdir(parents=True)
    (run / file).write_text("mine")
    config = _config(tmp_path, outputs, stability={"n_seed_saes": 1})
    one_line(cli("run", config, "--out", run, "-q"), needle.format(run=run))
    assert not (run / "store").exists() and (run / file).read_text() == "mine"


def test_a_run_keeps_a_config_yaml_of_the_users(tmp_path, outputs, run_cli):
    """`saeatlas run a.yaml --out .` in a folder of the user's replaced its config.yaml (of
    another tool, or another run config) with the run's, without a word."""
    cli, one_line = run_cli
    run = tmp_path / "mine"
    run.mkdir()
    (run / "config.yaml").write_text("# my notes\nfoo: 1\n")
    r = cli("run", _config(tmp_path, outputs), "--out", run, "-q")
    one_line(r, f"'{run / 'config.yaml'}' is a file that no run wrote", "choose another --out")
    assert (run / "config.yaml").read_text() == "# my notes\nfoo: 1\n"
    assert not (run / "store").exists()


# -- rows held out ------------------------------------------------------------------------------

HELD_OUT = {
    "train.heldout_rows above the store's rows": (
        {"train": {"heldout_rows": 400}},
        "`train.heldout_rows` is 400, more than the 300 rows of the run's store",
    ),
    "train.heldout_rows leaving fewer rows than a batch": (
        {"train": {"heldout_rows": 250}},
        "Of the 300 rows of the run's store, 250 are held out: 50 to train on, fewer than "
        "`train.batch_size` 64",
    ),
    "sweep.heldout_fraction of too few rows": (
        {"sweep": {"enabled": True, "over": "k", "values": [2, 4], "heldout_fraction": 0.01}},
        "`heldout_fraction` 0.01 of 300 rows holds out fewer than 4 rows",
    ),
}


@pytest.mark.parametrize("case", sorted(HELD_OUT))
def test_run_check_sees_held_out_rows_the_training_would_refuse(tmp_path, outputs, run_cli, case):
    """`run --check` called these configs valid: the run then stopped at its training."""
    cli, one_line = run_cli
    sections, needle = HELD_OUT[case]
    one_line(cli("run", _config(tmp_path, outputs, **sections), "--check"), needle)


def test_a_run_refuses_held_out_rows_before_its_sweep(tmp_path, outputs, run_cli):
    """A `train.heldout_rows` that leaves too few rows stopped the run at its training,
    after the whole sweep had run."""
    cli, _ = run_cli
    sweep = {"enabled": True, "over": "k", "values": [2, 4], "seeds": 1}
    config = _config(tmp_path, outputs, sweep=sweep, train={"heldout_rows": 290})
    r = cli("run", config, "--out", tmp_path / "run", "-q")
    last = r.output.strip().splitlines()[-1]  # after the capture's line
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert last.startswith("Error: Of the 300 rows of the run's store, 290 are held out"), last
    assert (tmp_path / "run" / "store").is_dir() and not (tmp_path / "run" / "sweep").exists()


# -- capture --resume ---------------------------------------------------------------------------


class Killed(BaseException):
    """Stands for SIGKILL (BaseException, like KeyboardInterrupt)."""


def _killed_capture(monkeypatch, out, cfg, labels=None):
    """A capture of 90 rows killed as it writes its second shard."""
    import saeatlas.store.commit as commit_module
    from saeatlas.capture import capture_activations

    real, calls = commit_module.write_shard, []

    def dying(*args):
        calls.append(1)
        if len(calls) == 2:
            raise Killed
        return real(*args)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))
    x = torch.randn(90, 4, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(commit_module, "write_shard", dying)
    with pytest.raises(Killed):
        capture_activations(model, x, ["0", "2"], out, cfg, labels=labels, progress=False)
    monkeypatch.setattr(commit_module, "write_shard", real)
    return model, x


def test_a_resume_given_the_default_shard_rows_as_a_number_continues(tmp_path, monkeypatch):
    """--shard-rows left out, then given as the number of rows the default chose, was
    refused as another job ("`shard_rows` was None, now 32")."""
    import saeatlas.store.writer as writer_module
    from saeatlas.capture import CaptureConfig, capture_activations

    monkeypatch.setattr(writer_module, "DEFAULT_SHARD_BYTES", 32 * 10 * 4)  # 32 rows of 10
    model, x = _killed_capture(monkeypatch, tmp_path / "s", CaptureConfig(batch_size=7))
    cfg = CaptureConfig(batch_size=7, shard_rows=32)
    store = capture_activations(
        model, x, ["0", "2"], tmp_path / "s", cfg, resume=True, progress=False
    )
    assert store.n_rows == 90 and [s.rows for s in store.manifest.shards] == [32, 32, 26]


def test_a_resume_given_the_same_labels_of_a_wider_type_continues(tmp_path, monkeypatch):
    """Labels saved as int32 (a .npy) at first and given as int64 (a JSON list) on resume
    were refused as other labels; labels of other values still are."""
    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.errors import ConfigError

    cfg = CaptureConfig(batch_size=7, shard_rows=32)
    labels = np.arange(90, dtype=np.int32) % 3
    model, x = _killed_capture(monkeypatch, tmp_path / "s", cfg, labels)
    with pytest.raises(ConfigError, match="labels differ"):
        capture_activations(
            model, x, ["0", "2"], tmp_path / "s", cfg, labels=(labels + 1).tolist(), resume=True
        )
    store = capture_activations(
        model, x, ["0", "2"], tmp_path / "s", cfg, labels=labels.tolist(), resume=True
    )
    assert store.rows(["label"]).column("label").to_pylist() == labels.tolist()


# -- validate -----------------------------------------------------------------------------------


def test_validate_refuses_a_training_of_years_up_front(run_cli, forbid):
    """`validate --tokens 10**16` ran on, a training of 5 * 10**11 passes over the rows."""
    import saeatlas.structure.synthetic.validate as validate_module

    cli, one_line = run_cli
    forbid(validate_module, "make_planted")
    r = cli("validate", "--tokens", 10**16, "--cases", "easy")
    one_line(r, "--tokens (10,000,000,000,000,000) is more than 1,000 passes", "20,000,000")


DEMO_FLAGS = {
    # "`seed` must be an integer of at most 64 bits (below 2**63)", naming no flag
    "--seed 10**20": (["--seed", 10**20], "--seed must be in [0, 4294967295]"),
    # "`n_texts` must be positive, got 0"
    "--n-texts 0": (["--model", "minilm", "--n-texts", 0], "--n-texts must be 1 or more"),
    # "`max_length` must be positive, got -5"
    "--max-length -5": (["--model", "minilm", "--max-length", -5], "--max-length must be 1 or"),
}


@pytest.mark.parametrize("case", sorted(DEMO_FLAGS))
def test_a_demo_value_out_of_range_names_its_flag(tmp_path, run_cli, case):
    cli, one_line = run_cli
    args, needle = DEMO_FLAGS[case]
    one_line(cli("demo", *args, "--out", tmp_path / "demo", "-q"), needle)
    assert not (tmp_path / "demo").exists()


def test_a_sweep_of_a_setting_the_architecture_does_not_read_says_so(outputs, run_cli, tmp_path):
    """`sweep --over l1_coefficient --d-sae 8` of a topk SAE was refused as its default k
    (32) above --d-sae, "Lower `k` (--k)", a flag not given and a setting not swept."""
    cli, one_line = run_cli
    flags = ["--over", "l1_coefficient", "--values", "1", "2", "--d-sae", "8", "-q"]
    r = cli("sweep", "--acts", outputs.store, "--out", tmp_path / "sw", *flags)
    one_line(r, "A topk SAE's sparsity is set by `k`, not `l1_coefficient`")


# -- report -------------------------------------------------------------------------------------


def test_a_report_is_not_written_over_a_named_pipe_or_a_device(analysed, run_cli, tmp_path):
    """`report --out /dev/null` replaced the system's /dev/null with the page (as root:
    the rename that puts a written file in place replaces a device, a named pipe or a
    socket); now refused before the figures are drawn, by every file writer."""
    import os
    import stat

    from saeatlas.errors import ConfigError
    from saeatlas.store.atomic import atomic_write_bytes

    cli, one_line = run_cli
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    one_line(cli("report", analysed, "--out", pipe), f"'{pipe}' is a named pipe, not a file")
    with pytest.raises(ConfigError, match="is a named pipe, not a file"):
        atomic_write_bytes(pipe, b"x")
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)


# -- ranks given other settings -------------------------------------------------------------------


def _ablation(rank: int, timeout_s: float = 20, **change):
    from saeatlas.store import LayerSpec
    from saeatlas.structure.causal.ablation import ablate_modules

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
    kw = dict(labels=np.arange(40) % 3, mode="zero", n_random=4, timeout_s=timeout_s)
    kw |= change if rank == 1 else {}
    modules = np.array([0, 0, 1, 1, 2, -1])
    return ablate_modules(model, x, [LayerSpec("1", 0, 6, (6,))], modules, **kw)


def _other_settings_on_rank_1(rank, world, port, root, store, sae, model, inputs):
    """Each call on rank 1 is given one setting other than rank 0's; then rank 1 leaves
    before an ablation that rank 0 starts."""
    from spawned_ranks import join_gloo

    join_gloo(rank, world, port)
    from saeatlas.evaluate import evaluate_sae
    from saeatlas.pipeline import RunConfig, run_pipeline
    from saeatlas.sae import SparseAutoencoder
    from saeatlas.structure import AtlasConfig
    from saeatlas.sweep import sweep
    from saeatlas.train import TrainConfig

    run = RunConfig(model=model, inputs=inputs, layers=("1", "3"))

    def analyze_cli() -> None:  # `analyze --model` with another --ablation-mode on rank 1
        from typer.testing import CliRunner

        from saeatlas.cli import app

        flags = ["--model", model, "--inputs", inputs, "--labels", f"{root}/labels.npy"]
        flags += ["--ablation-mode", ("zero", "mean")[rank], "--n-null", "0", "-q"]
        args = ["analyze", "--sae", sae, "--acts", store, "--out", f"{root}/atlas", *flags]
        r = CliRunner().invoke(app, [str(a) for a in args])
        raise RuntimeError(r.output.strip().splitlines()[-1])

    calls = {
        # summed in over rank 0's rows: 105 rows of 300 evaluated, without a word
        "evaluate": lambda: evaluate_sae(
            SparseAutoencoder.load(sae), store, batch_size=(64, 7)[rank], timeout_s=20
        ),
        # an IndexError traceback on rank 1, "lost contact" on rank 0
        "sweep": lambda: sweep(
            store,
            TrainConfig(d_sae=8, k=2),
            "k",
            [2, 4],
            f"{root}/sweep",
            seeds=1 + rank,
            progress=False,
        ),
        # rank 1's modules ablated to their means, rank 0's to zero, in one result
        "ablation mode": lambda: _ablation(rank, mode="mean", unit_mean=np.zeros(6)),
        # NumPy's "inhomogeneous shape" ValueError
        "ablation n_random": lambda: _ablation(rank, n_random=6),
        "ablation labels": lambda: _ablation(rank, labels=(np.arange(40) + 1) % 3),
        # compared by the ablation, after the whole analysis
        "analyze": analyze_cli,
        # every stage ran until its own check stopped it (capture and training written)
        "run": lambda: run_pipeline(
            RunConfig(**{**run.__dict__, "analyze": AtlasConfig(n_examples=1 + rank)}),
            f"{root}/run",
            progress=False,
            timeout_s=20,
        ),
    }
    results = {}
    for name, call in calls.items():
        try:
            call()
            results[name] = "no error"
        except Exception as e:
            results[name] = f"{type(e).__name__}: {e}"
    if rank == 0:  # torch's DistStoreError ("wait timeout ... keys: /default_pg/...")
        try:
            _ablation(rank, timeout_s=1)
        except Exception as e:
            results["gone"] = f"{type(e).__name__}: {e}"
    (root / f"r{rank}.json").write_text(json.dumps(results))
    torch.distributed.destroy_process_group()


def test_ranks_given_other_settings_stop_together_before_their_work(tmp_path, outputs, spawn_ranks):
    np.save(tmp_path / "labels.npy", np.arange(300) % 3)
    args = (tmp_path, outputs.store, outputs.sae, outputs.model, str(outputs.inputs))
    spawn_ranks(_other_settings_on_rank_1, args, 60)
    results = [json.loads((tmp_path / f"r{r}.json").read_text()) for r in range(2)]
    needles = {
        "evaluate": "The ranks of this evaluation were given different --batch-size",
        "sweep": "The ranks of this sweep were given different --seeds",
        "ablation mode": "The ranks of this ablation were given different `mode`",
        "ablation n_random": "The ranks of this ablation were given different `n_random`",
        "ablation labels": "The ranks of this ablation were given different labels",
        "run": "The ranks of this run were given different `analyze.n_examples`",
    }
    for name, needle in needles.items():
        for rank in range(2):
            assert results[rank][name].startswith(f"ConfigError: {needle}"), (rank, results)
    analysis = "RuntimeError: Error: The ranks of this analysis were given different"
    for rank in range(2):
        assert results[rank]["analyze"].startswith(f"{analysis} --ablation-mode"), results
    assert results[0]["gone"].startswith(
        "DistributedError: Rank 0 of 2 lost contact with the other ranks of the ablation"
    ), results[0]["gone"]
    for output in ("run", "sweep", "atlas"):
        assert not (tmp_path / output).exists(), output
