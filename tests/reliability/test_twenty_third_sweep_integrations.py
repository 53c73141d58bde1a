"""The twenty-third hostile sweep's cases in the integrations, `torchrun` and the CLI and
config layer (run configs, global options, run stamps, the model adapters): each was
read wrongly, ended in a traceback or a misleading message, or redid or reused work
it should not have before its fix."""

from __future__ import annotations

import pytest


def _run_config(tmp_path, outputs, line):
    """A run config of the protected model and inputs, layer '1', and ``line``."""
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {outputs.model}\ninputs: {outputs.inputs}\nlayers: ['1']\n{line}\n"
    )
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

    cfg = load_run_config(_run_config(tmp_path, outputs, "sweep: {enabled: false}\ntrain: {d_sae: 32, k: 010}"))
    assert cfg.train.k == 10
