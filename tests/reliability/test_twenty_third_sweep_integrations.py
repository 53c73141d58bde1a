"""The twenty-third hostile sweep's cases in the integrations, `torchrun` and the CLI and
config layer (run configs, global options, run stamps, the model adapters): each was
read wrongly, ended in a traceback or a misleading message, or redid or reused work
it should not have before its fix."""

from __future__ import annotations

import pytest


def _run_config(tmp_path, outputs, line):
    """A run config of the protected model and inputs, layer '1', and ``line``."""
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {outputs.model}\ninputs: {outputs.inputs}\nlayers: ['1']\n{line}\n")
    return config


@pytest.mark.parametrize(
    "line, needles",
    [
        # was k 90 (YAML 1.1's base 60), "`train.k` (90) cannot exceed `train.d_sae`"
        ("train: {d_sae: 128, k: 1:30}", ["`train.k` must be an integer, got '1:30'", "90"]),
        ("train: {lr: 1:30.5}", ["`train.lr` must be a number or null, got '1:30.5'", "90.5"]),
    ],
)
def test_a_run_config_reads_no_base_60_numbers(outputs, tmp_path, run_cli, line, needles):
    cli, one_line = run_cli
    one_line(cli("run", _run_config(tmp_path, outputs, line), "--check"), *needles)


def test_a_config_reads_a_leading_zero_as_a_decimal_number(outputs, tmp_path):
    """`k: 010` was k 8 (YAML 1.1's octal) without a word; YAML 1.2 and JSON read 10."""
    from saeatlas.pipeline import load_run_config

    cfg = load_run_config(
        _run_config(tmp_path, outputs, "sweep: {enabled: false}\ntrain: {d_sae: 32, k: 010}")
    )
    assert cfg.train.k == 10


@pytest.mark.parametrize("value", ["nan", "-5", "1e7"])
def test_run_check_refuses_the_timeout_the_run_refuses(outputs, tmp_path, run_cli, value):
    """`run --check --timeout nan` called the config valid; the run then refused it."""
    cli, one_line = run_cli
    config = _run_config(tmp_path, outputs, "")
    one_line(cli("run", config, "--check", "--timeout", value), "--timeout must be a positive")


def test_run_check_waits_the_timeout_it_is_given(outputs, tmp_path, run_cli, monkeypatch):
    """Under torchrun the check's ranks waited the config's `capture.timeout_s`, not
    `--timeout`."""
    from saeatlas.pipeline import check

    waits = []
    monkeypatch.setattr(check, "run_ranks", lambda job, dev, s, fn: waits.append(s) or "ok")
    cli, _ = run_cli
    r = cli("run", _run_config(tmp_path, outputs, ""), "--check", "--timeout", "60")
    assert r.exit_code == 0, r.output
    assert waits == [60.0]


@pytest.mark.parametrize(
    "command",
    [
        ["capture", "--layers", "1", "--timeout", "1e400"],  # "`timeout_s` ... got inf"
        ["capture", "--layers", "1", "--timeout=1e400"],
        ["train", "--lr", "1e400"],  # "--lr must be a finite number, got inf"
        ["train", "--l1-coefficient", "-1e999"],
        ["sweep", "--over", "l1_coefficient", "--values", "1", "1e400"],
    ],
)
def test_a_number_beyond_a_float_is_shown_as_typed(outputs, tmp_path, run_cli, command):
    cli, one_line = run_cli
    sources = ["--model", outputs.model, "--inputs", outputs.inputs]
    if command[0] != "capture":
        sources = ["--acts", outputs.store]
    value = command[-1].split("=")[-1]
    line = one_line(cli(*command, *sources, "--out", tmp_path / "o"), f" {value} is beyond")
    assert "inf" not in line
    assert not (tmp_path / "o").exists()
