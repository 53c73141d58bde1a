"""``saeatlas run``: complete stages are skipped, incomplete or changed ones run again
with every stage after them."""

import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from saeatlas.cli import app
from saeatlas.pipeline import load_run_config, run_pipeline
from saeatlas.structure import Atlas

runner = CliRunner()


def _copy(quick_demo, tmp_path):
    result, _ = quick_demo
    out = tmp_path / "run"
    shutil.copytree(result.out, out)  # copy2 keeps modification times
    return out


def _mtimes(path):
    return {p: p.stat().st_mtime_ns for p in sorted(path.rglob("*")) if p.is_file()}


def test_second_run_skips_every_complete_stage(quick_demo, tmp_path):
    out = _copy(quick_demo, tmp_path)
    before = _mtimes(out)
    result = runner.invoke(app, ["run", str(out / "config.yaml"), "-q"])
    assert result.exit_code == 0, result.output
    for stage in ("capture", "sweep", "train", "analyze", "ablation", "report"):
        assert f"{stage} skipped" in result.output, result.output
    assert "Skipped (already complete): capture, sweep, train" in result.output
    assert "modules" in result.output and "report.html" in result.output
    assert _mtimes(out) == before  # nothing retrained or rewritten


def test_a_capture_killed_before_its_first_shard_is_captured_again(quick_demo, tmp_path):
    """It left the older store in place and nothing to resume: the resumed stage stopped
    at 'already holds a complete store', run after run."""
    from saeatlas.pipeline.outputs import RunPaths
    from saeatlas.pipeline.stages import StageContext, run_capture

    out = _copy(quick_demo, tmp_path)
    (out / ".store.partial").mkdir()  # what a kill before the first shard leaves
    ctx = StageContext(load_run_config(out / "config.yaml"), RunPaths(out), False, resume=True)
    assert "rows x" in run_capture(ctx)
    assert not (out / ".store.partial").exists()


def test_a_capture_killed_after_its_manifest_is_kept_not_captured_again(quick_demo, tmp_path):
    """A kill between the capture's manifest and its swap (or the run's record of it):
    the rerun put the complete store in place, then captured every row again."""
    import json

    from saeatlas.pipeline.outputs import RunPaths
    from saeatlas.pipeline.record import RunState, fingerprints, stage_settings
    from saeatlas.pipeline.run import _decide
    from saeatlas.pipeline.stages import StageContext, run_capture

    out = _copy(quick_demo, tmp_path)
    paths, cfg = RunPaths(out), load_run_config(out / "config.yaml")
    (out / "store").rename(out / ".store.partial")  # the manifest written, not swapped in
    state = RunState(paths.state)
    state.stages["capture"]["complete"] = False
    before = _mtimes(out / ".store.partial")
    outcome, resume, why = _decide(
        "capture", cfg, paths, state, fingerprints(cfg), stage_settings(cfg), None
    )
    assert outcome is None and resume and why == "it was interrupted"
    assert "rows x" in run_capture(StageContext(cfg, paths, False, resume=True))
    after = _mtimes(out / "store")
    assert {p.name: t for p, t in after.items()} == {p.name: t for p, t in before.items()}
    manifest = json.loads((out / "store" / "manifest.json").read_text())
    assert manifest["provenance"]["run_fingerprint"] == fingerprints(cfg)["capture"]


def test_saes_a_killed_run_finished_are_kept_not_trained_again(quick_demo, tmp_path):
    """A kill after the SAEs were saved, before the run recorded the train stage: the
    rerun trained every SAE again."""
    from saeatlas.pipeline.outputs import RunPaths
    from saeatlas.pipeline.record import RunState, fingerprints, stage_settings
    from saeatlas.pipeline.run import _decide
    from saeatlas.pipeline.stages import StageContext, run_train

    out = _copy(quick_demo, tmp_path)
    paths, cfg = RunPaths(out), load_run_config(out / "config.yaml")
    state = RunState(paths.state)
    state.stages["train"]["complete"] = False
    before = {**_mtimes(out / "sae"), **_mtimes(out / "sae-seeds")}
    outcome, resume, _ = _decide(
        "train", cfg, paths, state, fingerprints(cfg), stage_settings(cfg), None
    )
    assert outcome is None and resume
    note = run_train(StageContext(cfg, paths, False, resume=True))
    assert f"kept {1 + cfg.n_trained_seeds} complete SAE(s)" in note and "trained" not in note
    assert {**_mtimes(out / "sae"), **_mtimes(out / "sae-seeds")} == before


def test_a_rerun_removes_the_records_a_killed_run_left_half_written(quick_demo, tmp_path):
    out = _copy(quick_demo, tmp_path)
    for name in (".tmp-run.json-x1", ".tmp-config.yaml-x2"):  # a kill -9 in their writes
        (out / name).write_text("{")
    result = runner.invoke(app, ["run", str(out / "config.yaml"), "-q"])
    assert result.exit_code == 0, result.output
    assert not list(out.glob(".tmp-*"))


def test_incomplete_stage_runs_again_with_the_stages_after_it(quick_demo, tmp_path):
    out = _copy(quick_demo, tmp_path)
    keep = {**_mtimes(out / "store"), **_mtimes(out / "sweep")}
    (out / "sae" / "metrics.jsonl").unlink()  # as if training died before its last file
    # the installed entry point, in a fresh process (as a user reruns it)
    proc = subprocess.run(
        [sys.executable, "-m", "saeatlas", "run", str(out / "config.yaml"), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = {l.split()[0]: l for l in proc.stdout.splitlines() if l.split()}
    assert "skipped" in lines["capture"] and "skipped" in lines["sweep"]
    assert "ran" in lines["train"] and "incomplete" in lines["train"]
    assert "ran" in lines["analyze"] and "train stage ran again" in lines["analyze"]
    assert "ran" in lines["ablation"]
    assert (out / "sae" / "metrics.jsonl").is_file()
    assert {p: p.stat().st_mtime_ns for p in keep} == keep  # store and sweep untouched
    assert "ablation_p" in Atlas.load(out / "atlas").modules.columns


def test_a_config_written_by_hand_in_the_run_directory_is_kept(quick_demo, tmp_path):
    """`saeatlas run DIR/config.yaml --out DIR` rewrote the user's file in normal form,
    losing its comments, although it said what the run would write."""
    out = _copy(quick_demo, tmp_path)
    text = "# my run, by hand\n" + (out / "config.yaml").read_text() + "# the end\n"
    (out / "config.yaml").write_text(text)
    result = runner.invoke(app, ["run", str(out / "config.yaml"), "--out", str(out), "-q"])
    assert result.exit_code == 0 and "analyze skipped" in result.output, result.output
    assert (out / "config.yaml").read_text() == text


def test_changed_settings_are_refused_without_overwrite(quick_demo, tmp_path):
    """A config with other settings, given a run directory, replaced its outputs (the
    atlas, or a store captured for hours) without a word."""
    from saeatlas.errors import ConfigError

    out = _copy(quick_demo, tmp_path)
    before = _mtimes(out)
    cfg = load_run_config(out / "config.yaml")
    changed = replace(cfg, analyze=replace(cfg.analyze, n_null=cfg.analyze.n_null + 1))
    with pytest.raises(ConfigError, match=r"`analyze\.n_null` was \d+, now \d+.*--overwrite"):
        run_pipeline(changed, out, progress=False)
    assert _mtimes(out) == before  # config.yaml and run.json too
    result = runner.invoke(app, ["run", str(out / "config.yaml"), "-q"])  # the same: skips
    assert result.exit_code == 0 and "analyze skipped" in result.output, result.output


def test_changed_settings_rerun_that_stage_only(quick_demo, tmp_path):
    out = _copy(quick_demo, tmp_path)
    cfg = load_run_config(out / "config.yaml")
    cfg = replace(cfg, ablation=replace(cfg.ablation, n_random=5))
    sae = _mtimes(out / "sae")
    result = run_pipeline(cfg, out, progress=False, overwrite=True)
    status = {s.name: s.status for s in result.stages}
    assert [status[s] for s in ("capture", "sweep", "train", "analyze")] == ["skipped"] * 4
    assert status["ablation"] == "ran" and "settings changed" in result.stages[4].reason
    assert result.atlas.summary["ablation"]["n_random"] == 5
    assert _mtimes(out / "sae") == sae


def test_an_output_replaced_since_the_run_wrote_it_is_made_again(quick_demo, tmp_path):
    """`saeatlas analyze --overwrite` (or `capture --overwrite`) into a run's directory
    once left `saeatlas run` skipping the stage, its record being complete: the run
    ended on an atlas of other settings, or on an SAE and atlas of the old store. With
    --overwrite the stage is made again; without it the run stops (a store captured by
    hand would be lost)."""
    import json

    from saeatlas.pipeline.outputs import RunPaths
    from saeatlas.pipeline.record import RunState, fingerprints, stage_settings
    from saeatlas.pipeline.run import _decide

    out = _copy(quick_demo, tmp_path)
    paths, cfg = RunPaths(out), load_run_config(out / "config.yaml")
    state = RunState(paths.state)

    def decide(name):
        return _decide(name, cfg, paths, state, fingerprints(cfg), stage_settings(cfg), None)

    # a kill after the ablation's rewrite of the atlas, before its record: the analysis
    # is still this run's
    state.stages["ablation"]["complete"] = False
    assert decide("analyze")[0].status == "skipped"
    atlas = Atlas.load(paths.atlas)
    atlas.summary["config"]["n_null"] = 0  # as an analysis by hand with --n-null 0
    atlas.save(paths.atlas, overwrite=True)
    outcome, resume, why = decide("analyze")
    assert outcome is None and not resume and why.endswith("was replaced since this run wrote it")
    assert decide("capture")[0].status == "skipped"
    manifest = json.loads((paths.store / "manifest.json").read_text())
    manifest["provenance"]["inputs"] = "other.npy"  # a store captured again
    (paths.store / "manifest.json").write_text(json.dumps(manifest))
    outcome, resume, why = decide("capture")
    assert outcome is None and not resume and "replaced" in why  # captured anew, not resumed
    # without --overwrite `saeatlas run` stops before capturing over a store captured
    # by hand (the user's, not the run's)
    out = _copy(quick_demo, tmp_path / "b")
    (out / "store" / "manifest.json").write_text(json.dumps(manifest))
    before = _mtimes(out)
    result = runner.invoke(app, ["run", str(out / "config.yaml"), "-q"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "store (capture: replaced since this run wrote it)" in result.output
    assert "--overwrite" in result.output
    assert _mtimes(out) == before


MODEL_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn

    def build(width=7):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(5, width), nn.ReLU(), nn.Linear(width, 6), nn.ReLU(),
                             nn.Linear(6, 2))
    """
)


def test_run_from_files_beside_the_config(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(300, 5)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.integers(0, 2, 300))
    (tmp_path / "mymodel.py").write_text(MODEL_FILE)
    config = {
        "model": "mymodel.py:build",
        "model_args": {"width": 9},
        "inputs": "x.npy",
        "labels": "y.npy",
        "layers": ["1", "3"],
        "out": "run",
        "sweep": {"enabled": False},
        "train": {"d_sae": 32, "k": 4, "batch_size": 64, "tokens": 2000},
        "analyze": {"n_null": 2, "n_examples": 2},
        "ablation": {"enabled": True, "n_random": 4},
        "report": {"enabled": False},
    }
    (tmp_path / "conf.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["run", str(tmp_path / "conf.yaml"), "-q"])
    assert result.exit_code == 0, result.output
    assert "sweep off" in result.output and "report off" in result.output
    run = tmp_path / "run"
    assert (run / "store" / "manifest.json").is_file() and (run / "atlas" / "atlas.json").is_file()
    assert not (run / "sweep").exists()
    store_cols = yaml.safe_load((run / "config.yaml").read_text())
    assert store_cols["model_args"] == {"width": 9} and store_cols["out"] == "."
    assert "ablation" in Atlas.load(run / "atlas").summary


def test_no_other_command_writes_into_the_run_directory_while_the_run_runs(quick_demo, tmp_path):
    """`saeatlas train --out RUN/sae` started while the run's sweep ran wrote its SAE, and
    the run's train stage then replaced it without --overwrite: the run locked only the
    run directory, and each stage its output while it wrote it. Now the run holds every
    output's lock until it ends, so the other writer is refused at once."""
    import threading

    from saeatlas.store.lock import LockError, acquire, release

    out = _copy(quick_demo, tmp_path)
    names = ("store", "sweep", "sae", "sae-seeds/seed-1", "atlas")
    written = []

    def another_writer(outcome):  # another process, as the lock sees it: another thread
        def write():
            for name in names:
                try:
                    acquire(out / name)
                except LockError:
                    continue
                written.append((outcome.name, name))
                release(out / name)

        thread = threading.Thread(target=write)
        thread.start()
        thread.join()

    run_pipeline(load_run_config(out / "config.yaml"), progress=False, on_stage=another_writer)
    assert written == []
