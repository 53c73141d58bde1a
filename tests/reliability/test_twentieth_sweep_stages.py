"""The twentieth hostile sweep's cases in training, analysis and the later stages: each
failed (a traceback, a wrong result or no word) before its fix."""

from __future__ import annotations

import math

import pytest
import torch


def _nan_weight(s):
    s["sae"]["W_enc"][0, 0] = float("nan")
    return s


def _nan_moment(s):
    for moments in s["opt"]["state"].values():
        for v in moments.values():
            if torch.is_tensor(v) and v.is_floating_point():
                v.fill_(float("nan"))
    return s


def _group(s, **change):
    return {**s["opt"]["param_groups"][0], **change}


EDITED_CHECKPOINTS = {
    # trained on: the SAE came out of the NaN weight without a word
    "a NaN weight": (_nan_weight, "`sae.W_enc` holds NaN or Inf"),
    # every resume diverged at its first step and advised the same checkpoint again
    "NaN optimiser moments": (_nan_moment, "`opt.state.0.z` holds NaN or Inf"),
    # "Trained ... on 1,000,160 rows", and the dead-latent window counted from it
    "rows_done of another run": (lambda s: {**s, "rows_done": 10**6}, "`rows_done` is 1000000"),
    "negative rows_done": (lambda s: {**s, "rows_done": -5}, "not 5 steps of 32 rows"),
    "rows_done of a float": (lambda s: {**s, "rows_done": 160.5}, "`rows_done` is 160.5"),
    "negative dead counters": (
        lambda s: {**s, "rows_since_fired": s["rows_since_fired"] - 10**6},
        "`rows_since_fired` counts fall outside 0..160 rows",
    ),
    "dead counters of floats": (
        lambda s: {**s, "rows_since_fired": s["rows_since_fired"].double() + 0.5},
        "`rows_since_fired` is not a tensor of whole numbers",
    ),
    # the learning rate of 1.0 (the run's is 0.13) trained on without a word: FVU 0.999
    "base_lrs edited": (
        lambda s: {**s, "sched": {**s["sched"], "base_lrs": [1.0]}},
        "`sched` is at 5 from [1.0], not at step 5",
    ),
    "schedule at another step": (
        lambda s: {**s, "sched": {**s["sched"], "last_epoch": 2}},
        "`sched` is at 2",
    ),
    "momentum edited": (
        lambda s: {**s, "opt": {**s["opt"], "param_groups": [_group(s, momentum=0.5)]}},
        "`opt` momentum is 0.5, not 0.95",
    ),
    "learning rate edited": (
        lambda s: {**s, "opt": {**s["opt"], "param_groups": [_group(s, lr=5.0)]}},
        "`opt` lr is 5.0, not",
    ),
    "NaN running sum": (
        lambda s: {**s, "opt": {**s["opt"], "param_groups": [_group(s, weight_sum=math.nan)]}},
        "`opt` weight_sum is nan",
    ),
    # written into metrics.jsonl as they stood
    "metrics of text": (lambda s: {**s, "metrics": ["hello"]}, "`metrics` is not a list"),
    "metrics of a dict": (lambda s: {**s, "metrics": {"a": 1}}, "`metrics` is not a list"),
}


@pytest.mark.parametrize("edit", sorted(EDITED_CHECKPOINTS))
def test_a_checkpoint_edited_by_hand_is_refused_on_resume(run_cli, resume_edited, edit):
    """A checkpoint.pt whose settings match but whose state cannot be a point of that run
    was continued from: a NaN weight or moment, a count of rows done that is not its
    steps' rows, dead-latent counters out of range, metrics that are not records, an
    optimiser or schedule of other settings or at another step."""
    _, one_line = run_cli
    change, needle = EDITED_CHECKPOINTS[edit]
    one_line(resume_edited(change), "not a state it can continue from", needle, "--overwrite")


def test_a_report_killed_while_it_tries_its_folder_leaves_no_file_in_the_atlas(
    analysed, tmp_path, monkeypatch
):
    """`report` made a `.probe-XXXX` file in the page's folder (the atlas) and removed it
    (`check_writable(for_file=True)`); a kill between the two (kill -9) left it there,
    and the atlas's next `analyze --overwrite` refused the folder for holding a file that
    is not an atlas's. The probe is now a file without a name."""
    import os
    import shutil

    from saeatlas.store.lock import check_writable, output_lock

    atlas = tmp_path / "atlas"
    shutil.copytree(analysed, atlas, ignore=shutil.ignore_patterns("report.html", "figures"))
    real = os.unlink

    def killed(path, *a, **kw):
        if os.path.basename(path).startswith(".probe-"):
            raise SystemExit(137)  # the kill, before the probe was removed
        return real(path, *a, **kw)

    monkeypatch.setattr(os, "unlink", killed)
    with output_lock(atlas):  # what `report ATLAS` does before its figures
        check_writable(atlas, for_file=True)
    monkeypatch.setattr(os, "unlink", real)
    assert not [p.name for p in atlas.iterdir() if p.name.startswith(".")]


def test_a_report_killed_while_it_wrote_its_page_leaves_no_page_behind(
    tmp_path, run_cli, two_modules_atlas
):
    """A report killed (kill -9) while it wrote its page left `.tmp-report.html-XXXXXXXX`
    (a page of megabytes, half-written) in the atlas, and every later report kept it
    there. The next report into the atlas removes it, under the atlas's lock."""
    cli, _ = run_cli
    atlas = two_modules_atlas(tmp_path / "atlas")
    left = atlas / ".tmp-report.html-0lkbraia"
    left.write_bytes(b"<html>half")
    r = cli("report", atlas)
    assert r.exit_code == 0, r.output
    assert not left.exists() and (atlas / "report.html").is_file()


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("k", 8, "`k` 8 in its cfg.json, 4 in its training"),
        ("architecture", "relu", "`architecture`"),
    ],
)
def test_resume_refuses_a_complete_sae_whose_cfg_was_edited(
    outputs, run_cli, tmp_path, key, value, says
):
    """`train --resume` kept an SAE whose cfg.json `k` was edited from 4 to 8 as the
    complete k 4 SAE ("Kept ... L0 4.0", from its record), and every reader then encoded
    with k 8; the sweep's and the run's resume did the same."""
    import json
    import shutil

    cli, one_line = run_cli
    sae = tmp_path / "sae"
    shutil.copytree(outputs.sae, sae)
    cfg = json.loads((sae / "cfg.json").read_text())
    cfg[key] = value
    (sae / "cfg.json").write_text(json.dumps(cfg))
    flags = ["--d-sae", "24", "--k", "4", "--tokens", "2048", "--batch-size", "64", "-q"]
    r = cli("train", "--acts", outputs.store, "--out", sae, "--seeds", "1", *flags, "--resume")
    one_line(r, f"'{sae}' holds a complete SAE whose cfg.json is not the SAE", says, "--overwrite")


@pytest.mark.parametrize("verb", ["evaluate", "analyze"])
def test_an_sae_whose_training_has_not_finished_is_named_so(
    checkpointed, outputs, run_cli, tmp_path, verb
):
    """`analyze` or `evaluate` of an SAE folder while its training ran (or after it was
    stopped: only checkpoint.pt there) said "is not an SAE directory ... Train one with
    `saeatlas train`", which was doing just that."""
    cli, one_line = run_cli
    file, _ = checkpointed
    out = ["--out", tmp_path / "atlas"] if verb == "analyze" else []
    r = cli(verb, "--sae", file.parent, "--acts", outputs.store, *out)
    one_line(r, "holds the checkpoint of a training that has not finished", "train --resume")


def test_a_sweep_whose_second_seed_passes_2_63_names_its_flags(outputs, run_cli, tmp_path):
    """`sweep --seed 9223372036854775807` (2**63 - 1, a seed torch takes) with its two seeds
    per value was refused as "`seed` must be ... below 2**63, got 9223372036854775808", a
    value nobody gave, naming no flag."""
    cli, one_line = run_cli
    flags = ["--over", "k", "--values", "2", "4", "--d-sae", "24", "-q"]
    r = cli("sweep", "--acts", outputs.store, "--out", tmp_path / "sw", *flags, "--seed", 2**63 - 1)
    one_line(r, "--seeds (`seeds`) 2 with --seed (`seed`) 9223372036854775807", "--seeds 1")
    assert not (tmp_path / "sw").exists()


def test_a_run_whose_seed_saes_pass_2_63_is_refused_by_its_config(outputs, run_cli, tmp_path):
    """`train.seed: 9223372036854775807` with seed SAEs (seeds S+1, S+2) passed `run
    --check` and stopped the run after its capture, naming a seed nobody gave."""
    import json

    cli, one_line = run_cli
    config = tmp_path / "run.json"
    run = {"model": outputs.model, "inputs": str(outputs.inputs), "layers": ["1", "3"]}
    run |= {"train": {"seed": 2**63 - 1}, "stability": {"n_seed_saes": 2}}
    config.write_text(json.dumps(run))
    r = cli("run", config, "--out", tmp_path / "run", "--check")
    one_line(r, "`train.seed` 9223372036854775807 gives the seed SAEs", "lower `train.seed`")
    assert not (tmp_path / "run").exists()
