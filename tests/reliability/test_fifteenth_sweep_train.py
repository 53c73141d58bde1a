"""Fifteenth hostile sweep, training and CLI half: budgets beyond 64 bits, devices that do
not exist, options of several values given none, arrays given as a store, more rows held
out than the store has."""

from __future__ import annotations

import pytest


def test_integers_beyond_64_bits_are_one_line(guarded, run_cli, tmp_path, forbid):
    """`--tokens 10**30` was taken as a run of 3e28 steps that never ends (the bar showed
    its step count), `d_sae: 1.6e400` in a YAML config and `capture --shard-rows 10**400`
    ended in "OverflowError: integer division result too large for a float", and
    `tokens: 1e400` in a JSON config was quoted in 400 digits."""
    from saeatlas.train.run import _Run

    forbid(_Run, "train_step")  # refused before the first step (it never ended)
    cli, one_line_error = run_cli
    train = ["train", "--acts", guarded.store, "--out", guarded.root / "new-sae", "-q"]
    bits = "must be an integer of at most 64 bits"
    one_line_error(cli(*train, "--tokens", str(10**30)), f"--tokens {bits}")
    for text, name in (('{"tokens": 1e400}', "tokens"), ("d_sae: 1.6e400\nk: 2\n", "d_sae")):
        config = tmp_path / ("c.json" if text.startswith("{") else "c.yaml")
        config.write_text(text)
        line = one_line_error(cli(*train, "--config", config), f"`{name}` {bits}")
        assert len(line) < 200, line
    capture = ["capture", "--model", guarded.model, "--inputs", guarded.inputs, "--layers", "1"]
    out = guarded.root / "s"
    one_line_error(
        cli(*capture, "--out", out, "--shard-rows", str(10**400)), f"`shard_rows` {bits}"
    )
    assert not (guarded.root / "new-sae").exists() and not out.exists()


def test_a_device_this_machine_lacks_is_named_with_those_it_has(guarded, run_cli):
    """`--device cpu:1` was accepted (torch runs it on the one CPU), and the refusals of
    other devices did not say which ones there are."""
    cli, one_line_error = run_cli
    train = ["train", "--acts", guarded.store, "--out", guarded.root / "new-sae", "-q"]
    for device in ("cpu:1", "cpu:7", "meta", "xla"):
        one_line_error(cli(*train, "--device", device), f"'{device}'", "'cpu'")
    capture = ["capture", "--model", guarded.model, "--inputs", guarded.inputs, "--layers", "1"]
    one_line_error(cli(*capture, "--out", guarded.root / "s", "--device", "cpu:1"), "'cpu:1'")
    assert not (guarded.root / "new-sae").exists() and not (guarded.root / "s").exists()


def test_an_option_of_several_values_given_none_is_refused(guarded, run_cli):
    """`--layers` followed by another flag (or last), `--values` and `--resolutions` with no
    value were left out without a word, so the command ran on their defaults (every layer,
    the default sweep); a command without such an option names it as unknown."""
    cli, one_line_error = run_cli
    out = guarded.root / "new"
    train = ["train", "--acts", guarded.store, "-q"]
    one_line_error(cli(*train, "--layers", "--out", out), "--layers is given no values")
    one_line_error(cli(*train, "--out", out, "--layers"), "--layers is given no values")
    sweep = ["sweep", "--acts", guarded.store, "--out", out, "--over", "k", "--values"]
    one_line_error(cli(*sweep), "--values is given no values")
    analyze = ["analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", out]
    one_line_error(cli(*analyze, "--resolutions", "-q"), "--resolutions is given no values")
    one_line_error(cli("info", guarded.store, "--layers"), "No such option: --layers")
    assert not out.exists()


def test_an_array_given_as_the_store_is_refused_naming_what_to_pass(guarded, tmp_path):
    """`train_sae(array, ...)` and `sweep(array, ...)` ended in pathlib's "expected str,
    bytes or os.PathLike object, not ndarray", and `evaluate_sae` given an array or a path
    as the SAE in an AttributeError."""
    import numpy as np
    import torch

    from saeatlas.errors import ConfigError
    from saeatlas.evaluate import evaluate_sae
    from saeatlas.sae import SparseAutoencoder
    from saeatlas.sweep import sweep
    from saeatlas.train import TrainConfig, train_sae

    x = np.load(guarded.npy)
    cfg = TrainConfig(d_sae=16, k=2)
    sae = SparseAutoencoder.load(guarded.sae)
    calls = {
        "train": lambda: train_sae(x, cfg, tmp_path / "sae"),
        "train a tensor": lambda: train_sae(torch.from_numpy(x), cfg),
        "sweep": lambda: sweep(x, cfg, "k", [1, 2], tmp_path / "sweep"),
        "evaluate": lambda: evaluate_sae(sae, x),
    }
    for name, call in calls.items():
        with pytest.raises(ConfigError, match=r"`store` must be .* got (ndarray|Tensor): save"):
            call()
            pytest.fail(name)
    with pytest.raises(ConfigError, match="`sae` must be a SparseAutoencoder, got str"):
        evaluate_sae(str(guarded.sae), guarded.store)
    assert evaluate_sae(sae, str(guarded.store)).n_rows == 300  # a path, as train_sae takes
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_more_rows_held_out_than_the_store_has_names_both_counts(guarded, run_cli):
    """`--heldout-rows 500` on a store of 300 rows said "-200 to train on"."""
    cli, one_line_error = run_cli
    train = ["train", "--acts", guarded.store, "--out", guarded.root / "new-sae", "-q"]
    one_line_error(
        cli(*train, "--heldout-rows", "500"),
        "`heldout_rows` (--heldout-rows) is 500, more than the 300 rows",
        "at most 284 rows",
    )


def test_an_error_of_flags_and_defaults_does_not_blame_the_config_file(guarded, run_cli, tmp_path):
    """`--d-sae 16` beside a --config file that sets only `lr` was refused as
    "c.yaml: `k` (32) cannot exceed --d-sae (16)": the default k and the flag, blamed on a
    file that has neither; a file that sets one of them is still named."""
    cli, one_line_error = run_cli
    train = ["train", "--acts", guarded.store, "--out", guarded.root / "new-sae", "-q"]
    config = tmp_path / "c.yaml"
    config.write_text("lr: 0.001\n")
    line = one_line_error(cli(*train, "--config", config, "--d-sae", "16"), "`k` (32) cannot")
    assert "c.yaml" not in line, line
    config.write_text("k: 64\n")
    one_line_error(cli(*train, "--config", config, "--d-sae", "16"), "c.yaml: `k` (64) cannot")


def test_an_empty_run_directory_is_refused_not_taken_for_the_current_folder(
    guarded, run_cli, tmp_path, monkeypatch
):
    """`saeatlas run CONFIG --out "$DIR"` with DIR unset (and `out: ""` in the config, read
    as the config's folder; `demo --out ""`) wrote the whole run, its store, SAEs and
    atlas, among the files of the current folder."""
    cli, one_line_error = run_cli
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "r.yaml"
    lines = [f"model: {guarded.model}", f"inputs: {guarded.inputs}", "layers: ['1', '3']"]
    config.write_text("\n".join(lines) + "\n")
    one_line_error(cli("run", config, "--out", "", "-q"), "--out '' names no folder")
    one_line_error(cli("demo", "--out", " ", "-q"), "--out ' ' names no folder")
    config.write_text("\n".join([*lines, "out: ''"]) + "\n")
    one_line_error(cli("run", config, "-q"), "r.yaml: `out` is '', which names no folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


def test_usage_errors_before_the_command_are_one_line(run_cli):
    """`saeatlas --bogus` was click's box with exit code 2, and `saeatlas --layers` alone
    (the option dropped for want of a value, so no arguments) printed the help."""
    cli, one_line_error = run_cli
    one_line_error(cli("--bogus"), "No such option: --bogus", "saeatlas --help")
    one_line_error(cli("--layers"), "No such option: --layers")
    one_line_error(cli("--verbose"), "Missing command")
    alone = cli()  # `saeatlas` alone still shows its help
    assert "Usage" in alone.output and "Error" not in alone.output
