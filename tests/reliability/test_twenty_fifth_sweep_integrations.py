"""The twenty-fifth hostile sweep's cases in the integrations, `torchrun` and the CLI
and config layer (run configs, `run --check`, the run's and the demo's Python API, ranks
of a run, interop): each was read wrongly, ended in a traceback or a misleading message,
or replaced work it should not have before its fix."""

from __future__ import annotations

import pytest


def _config(outputs, tmp_path, extra: str = "") -> object:
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {outputs.model}\ninputs: {outputs.inputs}\nlayers: ['1']\n"
        "sweep: {enabled: false}\ntrain: {d_sae: 16, k: 2, tokens: 512, batch_size: 64}\n"
        "stability: {n_seed_saes: 0}\n" + extra
    )
    return config


def test_run_check_refuses_more_module_features_than_the_sae_has(outputs, tmp_path, run_cli):
    """`analyze.min_module_features: 100` beside `train.d_sae: 16` was called valid by
    `run --check`; the run refused it only after the capture and the training, naming a
    flag `run` has not (--min-module-features)."""
    cli, one_line = run_cli
    config = _config(outputs, tmp_path, "analyze: {min_module_features: 100}\n")
    r = cli("run", config, "--check", "--out", tmp_path / "run")
    one_line(r, "`analyze.min_module_features` (100) is more than the SAE's 16 latents")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("section, value", [("ablation", "true"), ("sweep", "false")])
def test_a_section_given_as_true_or_false_is_told_how_to_turn_it_on_or_off(
    outputs, tmp_path, run_cli, section, value
):
    """`ablation: true` was told only "`ablation` must be a mapping of settings, got bool
    True", not that the section turns on with `enabled`."""
    cli, one_line = run_cli
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {outputs.model}\ninputs: {outputs.inputs}\nlayers: ['1']\n{section}: {value}\n"
    )
    r = cli("run", config, "--check")
    one_line(r, f"`{section}` must be a mapping", f"write `{section}: {{enabled: {value}}}`")


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_run_check_refuses_files_of_the_users_where_the_store_goes(
    outputs, tmp_path, run_cli, kind
):
    """A run directory (`out: .` in a folder of the user's) whose `store` held the user's
    files, or was a file, was called valid by `run --check`; the run then wrote its
    config.yaml and run.json there and refused the store only at the capture."""
    cli, one_line = run_cli
    config, run = _config(outputs, tmp_path), tmp_path / "run"
    run.mkdir()
    if kind == "folder":
        (run / "store").mkdir()
        (run / "store" / "notes.txt").write_text("mine")
        needle = "holds files that are not a store's (['notes.txt'])"
    else:
        (run / "store").write_text("mine")
        needle = "exists and is not a directory"
    one_line(cli("run", config, "--check", "--out", run), needle)
    one_line(cli("run", config, "-q", "--out", run), needle)
    assert sorted(p.name for p in run.iterdir()) == ["store"]


def test_run_check_refuses_labels_of_another_number_than_the_inputs(outputs, tmp_path, run_cli):
    """299 labels for 300 inputs were called valid by `run --check` (it read the first
    batch's); the run refused them at the capture, having written its records."""
    import numpy as np

    cli, one_line = run_cli
    np.save(tmp_path / "labels.npy", np.zeros(299, dtype=np.int64))
    config = _config(outputs, tmp_path, f"labels: {tmp_path / 'labels.npy'}\n")
    r = cli("run", config, "--check", "--out", tmp_path / "run")
    one_line(r, "Labels have shape [299] for 300 input samples")


@pytest.mark.parametrize(
    "train, needle",
    [
        # "... needs about 29,802.3 GiB; cpu has ... Lower `d_sae` (--d-sae, ...)"
        ("d_sae: 100000000000, k: 2", "Lower `train.d_sae` (or `train.expansion_factor`)"),
        ("d_sae: 16, k: 2, lr_warmup_steps: 100", "`train.lr_warmup_steps` 100 is more than"),
        ("d_sae: 16, k: 2, checkpoint_every: 8", "`train.checkpoint_every` 8 is not fewer"),
    ],
)
def test_run_check_refuses_a_training_the_run_refuses(outputs, tmp_path, run_cli, train, needle):
    """An SAE too large for the machine, a warm-up longer than the run (512 rows in
    batches of 64: 8 steps) and a `checkpoint_every` that writes no checkpoint were
    called valid by `run --check`; the run refused each after the capture, naming flags
    of `saeatlas train` (--d-sae, --lr-warmup-steps, --tokens) that `run` has not."""
    cli, one_line = run_cli
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {outputs.model}\ninputs: {outputs.inputs}\nlayers: ['1']\n"
        f"sweep: {{enabled: false}}\ntrain: {{{train}, tokens: 512, batch_size: 64}}\n"
        "stability: {n_seed_saes: 0}\n"
    )
    one_line(cli("run", config, "--check", "--out", tmp_path / "run"), needle)


def test_a_model_class_beside_a_factory_is_named_as_the_run_config_key(outputs, tmp_path, run_cli):
    """`model_class: causal-lm` beside a factory was refused as "--model-class
    'causal-lm' applies to a Hugging Face model directory", a flag `run` has not."""
    cli, one_line = run_cli
    config = _config(outputs, tmp_path, "model_class: causal-lm\n")
    r = cli("run", config, "--check", "--out", tmp_path / "run")
    line = one_line(r, "`model_class` 'causal-lm' applies to a Hugging Face model directory")
    assert "--model-class" not in line


def test_a_sweep_kept_while_the_store_was_captured_again_is_made_again(tmp_path):
    """A run with the sweep, then one with `sweep.enabled: false` and other inputs (the
    store captured again), then the first config again: the old store's sweep was
    skipped as complete, the final SAE trained with its knee, and the analysis refused
    its members after the training; --overwrite did not make it again either."""
    from dataclasses import replace

    from saeatlas.pipeline import RunConfig, SweepSection
    from saeatlas.pipeline.outputs import RunPaths
    from saeatlas.pipeline.record import RunState, fingerprints, setting_changes, stage_settings
    from saeatlas.pipeline.run import _decide
    from saeatlas.train import TrainConfig

    on = RunConfig(
        model="m.py:f",
        inputs="x.npy",
        layers=("1",),
        sweep=SweepSection(values=(2, 4), seeds=1),
        train=TrainConfig(d_sae=16, k=2, tokens=512, batch_size=64),
    )
    paths = RunPaths(tmp_path / "run")
    paths.out.mkdir()
    state = RunState(paths.state)
    prints, settings = fingerprints(on), stage_settings(on)
    state.start("sweep", prints["sweep"], settings["sweep"])
    state.finish("sweep", 1.0, "", None)
    off = replace(on, sweep=SweepSection(enabled=False))
    _decide("sweep", off, paths, state, fingerprints(off), stage_settings(off), "capture")
    record = RunState(paths.state).stages["sweep"]
    changes = setting_changes(record, prints["sweep"], settings["sweep"])
    assert changes == ["the capture stage ran again while it was off"]
